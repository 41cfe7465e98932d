//! The crate's one error type. Every message names the file or input at fault and, where there
//! is one, the fix, because these errors end up in front of a person running `labmesh certs` or
//! starting an agent.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a file failed.
    #[error("cannot {action} {}: {source}{hint}", path.display())]
    Io {
        /// What we were doing, e.g. "read the mesh CA key".
        action: String,
        path: PathBuf,
        #[source]
        source: io::Error,
        /// Starts with "; " when present, so the message reads as one sentence.
        hint: String,
    },

    /// A file we would create is already there and overwriting it would lose something.
    #[error("{what} {} already exists; {hint}", path.display())]
    AlreadyExists {
        what: String,
        path: PathBuf,
        hint: String,
    },

    /// A node name that cannot be a certificate's DNS name (and a file name under `issued/`).
    #[error(
        "invalid node name {name:?}: {problem}; a node name is a host name: lower-case letters, \
         digits and '-', in dot-separated labels of 1 to 63 characters, 253 at most"
    )]
    InvalidNodeName { name: String, problem: String },

    /// A mesh name we refuse (it goes into the CA's common name and the `mesh-name` file).
    #[error("invalid mesh name {name:?}: {problem}; use 1 to 64 letters, digits, '-', '_' or '.'")]
    InvalidMeshName { name: String, problem: String },

    /// Some other argument out of range (validity days, a reason string, ...).
    #[error("{what}: {problem}")]
    InvalidInput { what: String, problem: String },

    /// A PEM or certificate that does not parse, or has the wrong content.
    #[error("{what}: {problem}")]
    BadCertificate { what: String, problem: String },

    /// rcgen refused to build a key or a certificate.
    #[error("cannot {action}: {source}")]
    Rcgen {
        action: String,
        #[source]
        source: rcgen::Error,
    },

    /// A join bundle that is not usable; `problem` says what and what to do.
    #[error("join bundle {}: {problem}", path.display())]
    Bundle { path: PathBuf, problem: String },

    /// A revocation record that is malformed or whose signature does not verify.
    #[error("revocation record for {node:?} rejected: {problem}")]
    Revocation { node: String, problem: String },

    /// The operating system's random number generator failed.
    #[error("cannot {action}: the system random number generator failed")]
    Random { action: String },

    /// rustls refused a configuration (e.g. the key does not suit the certificate).
    #[error("cannot {action}: {source}")]
    Tls {
        action: String,
        #[source]
        source: rustls::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = CertError> = std::result::Result<T, E>;

impl CertError {
    /// An I/O error with a hint derived from its kind, so callers need not think of one each
    /// time.
    pub(crate) fn io(action: impl Into<String>, path: &Path, source: io::Error) -> Self {
        let hint = match source.kind() {
            io::ErrorKind::PermissionDenied => {
                "; run as the data dir's owner (or fix the file's ownership and mode)".to_string()
            }
            io::ErrorKind::NotFound => "; check the path".to_string(),
            io::ErrorKind::ReadOnlyFilesystem => {
                "; the file system is read-only: choose a writable data dir".to_string()
            }
            _ => String::new(),
        };
        CertError::Io {
            action: action.into(),
            path: path.to_path_buf(),
            source,
            hint,
        }
    }

    pub(crate) fn rcgen(action: impl Into<String>, source: rcgen::Error) -> Self {
        CertError::Rcgen {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn bad_cert(what: impl Into<String>, problem: impl Into<String>) -> Self {
        CertError::BadCertificate {
            what: what.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn input(what: impl Into<String>, problem: impl Into<String>) -> Self {
        CertError::InvalidInput {
            what: what.into(),
            problem: problem.into(),
        }
    }
}
