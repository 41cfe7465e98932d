//! Mesh CA and node certificates for labmesh.
//!
//! Every labmesh mesh has its own certificate authority. This crate creates that CA (with
//! `rcgen`), issues node certificates whose subject alternative name is the node name, packs
//! them into join bundles, keeps the signed revocation list that travels through the mesh, and
//! builds the `rustls` client and server configurations (ring provider only, TLS 1.3, client
//! certificates required) that the `mesh` crate's QUIC endpoint uses. A peer is accepted only
//! when its certificate chains to this mesh's CA and is not revoked; its node name comes from the
//! certificate, never from what it says about itself.
//!
//! Keys are ECDSA P-256. On disk, under the certs dir the node passes (`<data>/certs`):
//!
//! | file | what | mode |
//! |---|---|---|
//! | `ca.pem` | mesh CA certificate (every node) | 0644 |
//! | `ca.key` | mesh CA key (only the node that created the mesh) | 0600 |
//! | `node.pem`, `node.key` | this node's certificate and key | 0644, 0600 |
//! | `issued/<node>-<serial>.pem` | certificates the CA issued | 0644 |
//! | `mesh-name` | the mesh's name, one line | 0644 |
//!
//! Secrets are written atomically (temporary file, fsync, rename, fsync of the folder) with
//! their final mode from the moment they exist, and never logged (`Debug` redacts them).
//!
//! Modules: [`ca`] (the CA, issuing, `issued/`), [`identity`] (a node's certificate and key),
//! [`bundle`] (join bundles), [`revocation`] (signed records and the list), [`verify`] (the
//! rustls verifiers and the refusal counters), [`tls`] (the rustls configs), [`signing`] (event
//! signatures with the node key, and the certificates others sign with).

pub mod bundle;
pub mod ca;
mod disk;
pub mod error;
pub mod identity;
mod names;
pub mod revocation;
pub mod signing;
pub mod tls;
pub mod verify;
mod x509;

pub use bundle::{JOIN_BUNDLE_MARKER, JOIN_BUNDLE_VERSION, JoinBundle, read_mesh_name};
pub use ca::{DEFAULT_CA_VALIDITY_DAYS, DEFAULT_NODE_VALIDITY_DAYS, IssuedCert, MeshCa};
pub use error::{CertError, Result};
pub use identity::NodeIdentity;
pub use names::{validate_mesh_name, validate_node_name};
pub use revocation::{RevocationList, SignedRevocation};
pub use signing::{EventKey, SignerBook, SignerRefusal};
pub use tls::{ALPN, client_config, peer_alerter_priority_cap, peer_node_name, server_config};
pub use verify::{RejectReason, Rejections};
pub use x509::fingerprint;

/// Mesh CA certificate file in the certs dir.
pub const CA_CERT_FILE: &str = "ca.pem";
/// Mesh CA private key file (only on the CA node).
pub const CA_KEY_FILE: &str = "ca.key";
/// This node's certificate file.
pub const NODE_CERT_FILE: &str = "node.pem";
/// This node's private key file.
pub const NODE_KEY_FILE: &str = "node.key";
/// Folder of the certificates the CA issued.
pub const ISSUED_DIR: &str = "issued";
/// File holding the mesh name.
/// The URI subject alternative name in which the CA grants a node the highest
/// `alerter_priority` it may claim: `labmesh:alerter-priority:10`. A member that gossips more is
/// held to this (what the CA signed, not what the member says, ranks the election).
pub const ALERTER_PRIORITY_URI: &str = "labmesh:alerter-priority:";
/// The grant written into the CA node's own certificates: it holds the CA key, so it could issue
/// itself any grant anyway.
pub const CA_NODE_ALERTER_PRIORITY: i64 = i64::MAX;
pub const MESH_NAME_FILE: &str = "mesh-name";

/// Lower-case hex of a fingerprint, the form used in files, logs and revocation records.
pub fn fingerprint_hex(fingerprint: &[u8; 32]) -> String {
    hex::encode(fingerprint)
}
