//! A node's identity: its certificate, private key and the mesh CA certificate, as kept in
//! `<certs>/node.pem`, `node.key` and `ca.pem`.
//!
//! The fields are private and checked once at construction (the PEMs parse, the key belongs to
//! the certificate, the certificate was signed by the CA, it names exactly one valid node), so
//! the accessors cannot fail and a broken pair is reported where it was loaded, with its path.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::disk::{self, Existing};
use crate::error::{CertError, Result};
use crate::names::validate_node_name;
use crate::verify::check_issued_by;
use crate::x509::{self, CertInfo};
use crate::{CA_CERT_FILE, CA_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE};

/// This node's certificate and key, and the mesh CA certificate they chain to.
#[derive(Clone)]
pub struct NodeIdentity {
    node: String,
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
    cert_der: CertificateDer<'static>,
    ca_der: CertificateDer<'static>,
    info: CertInfo,
    fingerprint: [u8; 32],
}

/// How the three PEMs are named in error messages (file paths when they came from disk).
pub(crate) struct Labels {
    pub ca: String,
    pub cert: String,
    pub key: String,
    /// What to do when they do not belong together.
    pub fix: String,
}

impl Labels {
    fn generic() -> Self {
        Labels {
            ca: "the mesh CA certificate".into(),
            cert: "the node certificate".into(),
            key: "the node key".into(),
            fix: "issue a new certificate on the CA node".into(),
        }
    }

    fn in_dir(certs_dir: &Path) -> Self {
        Labels {
            ca: format!(
                "the mesh CA certificate {}",
                certs_dir.join(CA_CERT_FILE).display()
            ),
            cert: format!(
                "the node certificate {}",
                certs_dir.join(NODE_CERT_FILE).display()
            ),
            key: format!("the node key {}", certs_dir.join(NODE_KEY_FILE).display()),
            fix: "restore matching files from a backup, or re-join with a fresh join bundle".into(),
        }
    }
}

impl NodeIdentity {
    /// Builds an identity from PEM texts, checking that they belong together.
    pub fn from_pems(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self> {
        Self::from_pems_labeled(ca_pem, cert_pem, key_pem, &Labels::generic())
    }

    pub(crate) fn from_pems_labeled(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        labels: &Labels,
    ) -> Result<Self> {
        let (ca_der, ca_info) = x509::cert_from_pem(ca_pem, &labels.ca)?;
        let (cert_der, info) = x509::cert_from_pem(cert_pem, &labels.cert)?;
        let node = info
            .node_name()
            .map_err(|problem| CertError::bad_cert(&labels.cert, problem))?;
        validate_node_name(&node)?;
        info.alerter_priority_cap()
            .map_err(|problem| CertError::bad_cert(&labels.cert, problem))?;
        let key = x509::key_pair_from_pem(key_pem, &labels.key)?;
        // rustls must accept the key too (it reads PKCS#8 itself).
        x509::key_der_from_pem(key_pem, &labels.key)?;
        if !x509::key_matches(&key, &info, &labels.cert)? {
            return Err(CertError::bad_cert(
                &labels.key,
                format!("it does not match {}; {}", labels.cert, labels.fix),
            ));
        }
        check_chain_any_time(&ca_der, &ca_info, &cert_der, &info).map_err(|e| {
            CertError::bad_cert(
                &labels.cert,
                format!("it was not issued by {} ({e}); {}", labels.ca, labels.fix),
            )
        })?;
        let fingerprint = x509::fingerprint(cert_der.as_ref());
        Ok(NodeIdentity {
            node,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            ca_pem: ca_pem.to_string(),
            cert_der,
            ca_der,
            info,
            fingerprint,
        })
    }

    /// Loads `node.pem`, `node.key` and `ca.pem` from `certs_dir`; `None` when this node has no
    /// certificate yet (neither `node.pem` nor `node.key` exists).
    pub fn load(certs_dir: &Path) -> Result<Option<Self>> {
        let cert_path = certs_dir.join(NODE_CERT_FILE);
        let key_path = certs_dir.join(NODE_KEY_FILE);
        let cert_pem = disk::read_optional(&cert_path, "the node certificate")?;
        let key_pem = disk::read_optional(&key_path, "the node key")?;
        let (cert_pem, key_pem) = match (cert_pem, key_pem) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => {
                return Err(missing_half(&key_path, "the node key", &cert_path));
            }
            (None, Some(_)) => {
                return Err(missing_half(&cert_path, "the node certificate", &key_path));
            }
        };
        warn_if_exposed(&key_path, "the node key");
        let ca_pem = disk::read_required(
            &certs_dir.join(CA_CERT_FILE),
            "the mesh CA certificate",
            "copy ca.pem from another node of the mesh, or re-join with a join bundle",
        )?;
        Self::from_pems_labeled(&ca_pem, &cert_pem, &key_pem, &Labels::in_dir(certs_dir)).map(Some)
    }

    /// Writes `ca.pem`, `node.pem` and `node.key` (0600) into `certs_dir`, creating it (0700).
    ///
    /// Refuses when `certs_dir` holds the CA key of a different mesh: replacing `ca.pem` there
    /// would leave that CA key orphaned.
    pub fn save(&self, certs_dir: &Path) -> Result<()> {
        disk::ensure_dir(certs_dir)?;
        check_ca_compatible(certs_dir, &self.ca_der)?;
        // Key first: a crash between the two writes leaves a mismatched pair, which `load`
        // reports, rather than a certificate without its key.
        disk::write_atomic(
            &certs_dir.join(NODE_KEY_FILE),
            self.key_pem.as_bytes(),
            disk::SECRET_MODE,
            Existing::Replace,
            "the node key",
        )?;
        disk::write_atomic(
            &certs_dir.join(NODE_CERT_FILE),
            self.cert_pem.as_bytes(),
            disk::PUBLIC_MODE,
            Existing::Replace,
            "the node certificate",
        )?;
        disk::write_atomic(
            &certs_dir.join(CA_CERT_FILE),
            self.ca_pem.as_bytes(),
            disk::PUBLIC_MODE,
            Existing::Replace,
            "the mesh CA certificate",
        )
    }

    /// The node name (the certificate's DNS subject alternative name).
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM (PKCS#8). Never log it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The private key in the form rustls takes.
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>> {
        x509::key_der_from_pem(&self.key_pem, "the node key")
    }

    /// SHA-256 of the certificate's DER encoding.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    pub fn not_before(&self) -> DateTime<Utc> {
        self.info.not_before
    }

    pub fn not_after(&self) -> DateTime<Utc> {
        self.info.not_after
    }

    /// The serial number, lower-case hex without a sign byte.
    pub fn serial_hex(&self) -> String {
        self.info.serial_hex()
    }

    /// The highest `alerter_priority` the CA lets this node claim (0 unless it granted more).
    pub fn alerter_priority_cap(&self) -> i64 {
        // Checked when the identity was built.
        self.info.alerter_priority_cap().unwrap_or(0)
    }

    /// The IP addresses in the certificate's subject alternative names.
    pub fn ips(&self) -> &[IpAddr] {
        &self.info.ips
    }
}

impl fmt::Debug for NodeIdentity {
    // By hand so that the private key never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node", &self.node)
            .field("fingerprint", &self.fingerprint_hex())
            .field("serial", &self.serial_hex())
            .field("not_after", &self.info.not_after)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn missing_half(missing: &Path, what: &str, present: &Path) -> CertError {
    CertError::Io {
        action: format!("read {what}"),
        path: missing.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
        hint: format!(
            "; {} exists without it: restore the file, or remove both and re-join",
            present.display()
        ),
    }
}

/// Logs a warning when a key file is readable by group or others (we create them 0600; a copy
/// or a restore from backup may not have kept that).
pub(crate) fn warn_if_exposed(path: &Path, what: &str) {
    if let Ok(mode) = disk::mode_of(path, what)
        && mode & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:04o}"),
            "{what} is readable by group or others; run chmod 600 on it"
        );
    }
}

/// Errors when `certs_dir` holds a CA key (`ca.key`) whose `ca.pem` differs from `ca_der`.
pub(crate) fn check_ca_compatible(certs_dir: &Path, ca_der: &CertificateDer<'_>) -> Result<()> {
    let key_path = certs_dir.join(CA_KEY_FILE);
    let has_ca_key = key_path
        .try_exists()
        .map_err(|e| CertError::io("inspect the mesh CA key", &key_path, e))?;
    if !has_ca_key {
        return Ok(());
    }
    let ca_path = certs_dir.join(CA_CERT_FILE);
    let Some(existing) = disk::read_optional(&ca_path, "the mesh CA certificate")? else {
        return Ok(());
    };
    let what = format!("the mesh CA certificate {}", ca_path.display());
    let existing = x509::cert_der_from_pem(&existing, &what)?;
    if existing.as_ref() == ca_der.as_ref() {
        return Ok(());
    }
    Err(CertError::AlreadyExists {
        what: "the CA key of another mesh".to_string(),
        path: key_path,
        hint: "this data dir created its own mesh; use a different data dir to join another \
               mesh, or move certs/ away first"
            .to_string(),
    })
}

/// Checks that `cert` was signed by `ca` at a moment inside both validity periods, so that an
/// expired certificate still passes (the agent can then say it expired, the CA can revoke it)
/// while one from another CA does not.
pub(crate) fn check_chain_any_time(
    ca_der: &CertificateDer<'_>,
    ca_info: &CertInfo,
    cert_der: &CertificateDer<'_>,
    info: &CertInfo,
) -> std::result::Result<(), String> {
    // The signature alone answers "did this CA sign it", at any time.
    let ca_key = x509::p256_public_key(ca_info, "the CA certificate").map_err(|e| e.to_string())?;
    x509::check_signed_by(cert_der.as_ref(), &ca_key)?;
    // Then webpki's full check (key usages, basic constraints, ...) at a moment inside both
    // validity periods, when there is one (there is none only for hand-made test certificates).
    let at = info.not_before.max(ca_info.not_before);
    if at > info.not_after.min(ca_info.not_after) {
        return Ok(());
    }
    let at = UnixTime::since_unix_epoch(Duration::from_secs(at.timestamp().unsigned_abs()));
    check_issued_by(ca_der, cert_der, at).map_err(|e| e.to_string())
}
