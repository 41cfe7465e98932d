//! Join bundles: one JSON file carrying everything a new node needs to join a mesh (the mesh
//! name, the CA certificate, its own certificate and private key). The CA node writes it with
//! `labmesh certs issue`; the new node reads it with `labmesh agent --join`.
//!
//! ```json
//! {"labmesh_join_bundle": 1, "mesh": "home", "node": "nas",
//!  "ca_pem": "-----BEGIN CERTIFICATE-----...", "cert_pem": "...", "key_pem": "..."}
//! ```
//!
//! The first field marks the file as ours and versions its format. Reading checks everything
//! that would otherwise fail later and more obscurely (at the first handshake): the marker and
//! version, that each PEM parses, that the certificate chains to the bundle's CA and is valid
//! now, that it names the bundle's node, and that the key belongs to it.

use std::fmt;
use std::path::Path;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::MESH_NAME_FILE;
use crate::disk::{self, Existing};
use crate::error::{CertError, Result};
use crate::identity::{Labels, NodeIdentity, check_ca_compatible};
use crate::names::validate_mesh_name;
use crate::x509;

/// The marker field's name.
pub const JOIN_BUNDLE_MARKER: &str = "labmesh_join_bundle";
/// The format version this code writes and reads.
pub const JOIN_BUNDLE_VERSION: u64 = 1;
/// The fix for a bundle that is wrong: only the CA node can make a good one.
const NEW_BUNDLE: &str = "ask the CA node for a new bundle (`labmesh certs issue`)";
/// Bundles are a few KB; anything this large is not one.
const MAX_BUNDLE_BYTES: u64 = 1 << 20;

/// What a new node needs to join a mesh.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinBundle {
    pub mesh: String,
    pub node: String,
    pub ca_pem: String,
    pub cert_pem: String,
    /// The node's private key (PEM, PKCS#8). Never log it.
    pub key_pem: String,
}

/// The file's JSON shape (field order as written).
#[derive(Serialize, Deserialize)]
struct BundleFile {
    labmesh_join_bundle: u64,
    mesh: String,
    node: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl JoinBundle {
    /// A bundle for `identity` in mesh `mesh`.
    pub fn new(mesh: &str, identity: &NodeIdentity) -> Self {
        JoinBundle {
            mesh: mesh.to_string(),
            node: identity.node().to_string(),
            ca_pem: identity.ca_pem().to_string(),
            cert_pem: identity.cert_pem().to_string(),
            key_pem: identity.key_pem().to_string(),
        }
    }

    /// The bundle as JSON text (with the marker and version).
    pub fn to_json(&self) -> Result<String> {
        let file = BundleFile {
            labmesh_join_bundle: JOIN_BUNDLE_VERSION,
            mesh: self.mesh.clone(),
            node: self.node.clone(),
            ca_pem: self.ca_pem.clone(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        };
        serde_json::to_string_pretty(&file)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| CertError::input("join bundle", format!("cannot encode it: {e}")))
    }

    /// Writes the bundle to `path` with mode 0600, atomically. Without `overwrite`, an existing
    /// file is an error (and is left untouched). The bundle is validated first, so a broken one
    /// is never handed to another machine.
    pub fn write(&self, path: &Path, overwrite: bool) -> Result<()> {
        self.validate(path)?;
        let json = self.to_json()?;
        let existing = if overwrite {
            Existing::Replace
        } else {
            Existing::Keep
        };
        disk::write_atomic(
            path,
            json.as_bytes(),
            disk::SECRET_MODE,
            existing,
            "the join bundle",
        )
    }

    /// Reads and validates a bundle. The second value holds warnings for the user (today: the
    /// file is readable by group or others, which matters because it holds a private key).
    pub fn read(path: &Path) -> Result<(JoinBundle, Vec<String>)> {
        let meta =
            std::fs::metadata(path).map_err(|e| CertError::io("read the join bundle", path, e))?;
        if meta.len() > MAX_BUNDLE_BYTES {
            return Err(bundle_err(
                path,
                format!(
                    "the file is {} bytes, far too large for a join bundle; is it the right file?",
                    meta.len()
                ),
            ));
        }
        let mut warnings = Vec::new();
        let mode = disk::mode_of(path, "the join bundle")?;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "join bundle {} is readable by group or others (mode {mode:04o}) and contains a \
                 private key; run `chmod 600 {}`, and delete it once the node has joined",
                path.display(),
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| CertError::io("read the join bundle", path, e))?;
        let bundle = Self::from_json(&text, path)?;
        bundle.validate(path)?;
        Ok((bundle, warnings))
    }

    /// Parses bundle JSON, checking the marker and version; `path` is only used in messages.
    pub fn from_json(text: &str, path: &Path) -> Result<JoinBundle> {
        let not_ours = "a join bundle is the JSON file `labmesh certs issue` writes";
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| bundle_err(path, format!("not valid JSON ({e}); {not_ours}")))?;
        let marker = value.get(JOIN_BUNDLE_MARKER).ok_or_else(|| {
            bundle_err(
                path,
                format!(
                    "not a labmesh join bundle (no \"{JOIN_BUNDLE_MARKER}\" field); {not_ours}"
                ),
            )
        })?;
        let version = marker.as_u64().ok_or_else(|| {
            bundle_err(
                path,
                format!(
                    "\"{JOIN_BUNDLE_MARKER}\" must be a format version number, found {marker}; \
                     {not_ours}"
                ),
            )
        })?;
        if version != JOIN_BUNDLE_VERSION {
            let fix = if version > JOIN_BUNDLE_VERSION {
                "upgrade labmesh on this node, or issue the bundle with this node's version"
            } else {
                "issue a new bundle on the CA node"
            };
            return Err(bundle_err(
                path,
                format!(
                    "format version {version} is not supported (this labmesh reads version \
                     {JOIN_BUNDLE_VERSION}); {fix}"
                ),
            ));
        }
        let file: BundleFile = serde_json::from_value(value)
            .map_err(|e| bundle_err(path, format!("{e}; {not_ours}")))?;
        Ok(JoinBundle {
            mesh: file.mesh,
            node: file.node,
            ca_pem: file.ca_pem,
            cert_pem: file.cert_pem,
            key_pem: file.key_pem,
        })
    }

    /// The node identity the bundle carries, fully checked (see the module documentation).
    pub fn identity(&self) -> Result<NodeIdentity> {
        self.validate(Path::new("(in memory)"))
    }

    fn validate(&self, path: &Path) -> Result<NodeIdentity> {
        validate_mesh_name(&self.mesh).map_err(|e| bundle_err(path, e.to_string()))?;
        let labels = Labels {
            ca: "its ca_pem".to_string(),
            cert: "its cert_pem".to_string(),
            key: "its key_pem".to_string(),
            fix: NEW_BUNDLE.to_string(),
        };
        let identity =
            NodeIdentity::from_pems_labeled(&self.ca_pem, &self.cert_pem, &self.key_pem, &labels)
                .map_err(|e| {
                let msg = e.to_string();
                if msg.contains(NEW_BUNDLE) {
                    bundle_err(path, msg)
                } else {
                    bundle_err(path, format!("{msg}; {NEW_BUNDLE}"))
                }
            })?;
        if identity.node() != self.node {
            return Err(bundle_err(
                path,
                format!(
                    "it says node {:?} but its certificate is for {:?}; {NEW_BUNDLE}",
                    self.node,
                    identity.node()
                ),
            ));
        }
        let now = Utc::now();
        if now > identity.not_after() {
            return Err(bundle_err(
                path,
                format!(
                    "its certificate expired at {}; {NEW_BUNDLE}",
                    x509::rfc3339(identity.not_after())
                ),
            ));
        }
        if now < identity.not_before() {
            return Err(bundle_err(
                path,
                format!(
                    "its certificate is not valid before {}; check this machine's clock",
                    x509::rfc3339(identity.not_before())
                ),
            ));
        }
        Ok(identity)
    }

    /// Installs the bundle into `certs_dir` (created 0700): `ca.pem`, `node.pem`, `node.key`
    /// (0600) and `mesh-name`. Refuses when `certs_dir` holds another mesh's CA key. Returns the
    /// installed identity.
    pub fn install(&self, certs_dir: &Path) -> Result<NodeIdentity> {
        let identity = self.identity()?;
        disk::ensure_dir(certs_dir)?;
        check_ca_compatible(certs_dir, identity.ca_der())?;
        identity.save(certs_dir)?;
        disk::write_atomic(
            &certs_dir.join(MESH_NAME_FILE),
            format!("{}\n", self.mesh).as_bytes(),
            disk::PUBLIC_MODE,
            Existing::Replace,
            "the mesh name",
        )?;
        Ok(identity)
    }
}

impl fmt::Debug for JoinBundle {
    // By hand so that the private key never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinBundle")
            .field("mesh", &self.mesh)
            .field("node", &self.node)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn bundle_err(path: &Path, problem: String) -> CertError {
    CertError::Bundle {
        path: path.to_path_buf(),
        problem,
    }
}

/// Reads `<certs_dir>/mesh-name`; `None` when absent.
pub fn read_mesh_name(certs_dir: &Path) -> Result<Option<String>> {
    let path = certs_dir.join(MESH_NAME_FILE);
    let Some(text) = disk::read_optional(&path, "the mesh name")? else {
        return Ok(None);
    };
    let name = text.trim().to_string();
    validate_mesh_name(&name)?;
    Ok(Some(name))
}
