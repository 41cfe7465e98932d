//! rustls configurations for the mesh's QUIC endpoint: ring provider named explicitly, TLS 1.3
//! only (QUIC requires it, and it keeps a TLS 1.2 downgrade off the table), ALPN `labmesh/1`,
//! mutual authentication against the mesh CA, and the revocation list checked on every handshake.
//!
//! Session resumption is off on both sides: a resumed session skips certificate verification,
//! which would let a peer revoked since its last full handshake back in.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::CertificateDer;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, ServerConfig};

use crate::error::{CertError, Result};
use crate::identity::NodeIdentity;
use crate::names::validate_node_name;
use crate::revocation::RevocationList;
use crate::verify::provider;
use crate::verify::{MeshClientCertVerifier, MeshServerCertVerifier, Rejections, mesh_roots};
use crate::x509;

/// The ALPN protocol id of labmesh's peer protocol.
pub const ALPN: &[u8] = b"labmesh/1";

/// Server side: presents `identity`'s certificate and requires a client certificate from the
/// mesh CA that is not revoked. Refusals are counted in `rejections` (see
/// [`Rejections::record_handshake_error`] for the one case rustls decides alone).
pub fn server_config(
    identity: &NodeIdentity,
    revoked: RevocationList,
    rejections: Rejections,
) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let roots = mesh_roots(identity.ca_der()).map_err(|e| tls_err("use the mesh CA", e))?;
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| {
            CertError::bad_cert(
                "the mesh CA certificate",
                format!("rustls cannot verify client certificates with it: {e}"),
            )
        })?;
    let verifier = MeshClientCertVerifier::new(webpki, revoked, rejections);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("restrict TLS to version 1.3", e))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain(identity), identity.key_der()?)
        .map_err(|e| tls_err("use this node's certificate and key", e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Client side: presents `identity`'s certificate and accepts a server whose certificate chains
/// to the mesh CA and is not revoked. The name we dialled is not compared with the certificate:
/// peers are dialled by address, and who they are comes from [`peer_node_name`].
pub fn client_config(
    identity: &NodeIdentity,
    revoked: RevocationList,
    rejections: Rejections,
) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let roots = mesh_roots(identity.ca_der()).map_err(|e| tls_err("use the mesh CA", e))?;
    let verifier = MeshServerCertVerifier::new(roots, provider.clone(), revoked, rejections);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("restrict TLS to version 1.3", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain(identity), identity.key_der()?)
        .map_err(|e| tls_err("use this node's certificate and key", e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = Resumption::disabled();
    // The dialled name means nothing to the peer; don't send it.
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The node name in a peer's (already verified) end-entity certificate: its one DNS subject
/// alternative name.
pub fn peer_node_name(end_entity: &CertificateDer<'_>) -> Result<String> {
    let what = "the peer's certificate";
    let info = x509::parse_cert(end_entity.as_ref())
        .map_err(|e| CertError::bad_cert(what, format!("not a valid X.509 certificate: {e}")))?;
    let node = info
        .node_name()
        .map_err(|problem| CertError::bad_cert(what, problem))?;
    validate_node_name(&node)?;
    Ok(node)
}

/// The highest `alerter_priority` a peer's (already verified) certificate lets it claim (see
/// [`crate::ALERTER_PRIORITY_URI`]).
pub fn peer_alerter_priority_cap(end_entity: &CertificateDer<'_>) -> Result<i64> {
    let what = "the peer's certificate";
    let info = x509::parse_cert(end_entity.as_ref())
        .map_err(|e| CertError::bad_cert(what, format!("not a valid X.509 certificate: {e}")))?;
    info.alerter_priority_cap()
        .map_err(|problem| CertError::bad_cert(what, problem))
}

fn chain(identity: &NodeIdentity) -> Vec<CertificateDer<'static>> {
    // Peers hold the CA already; sending it would only add bytes.
    vec![identity.cert_der().clone()]
}

fn tls_err(action: &str, source: rustls::Error) -> CertError {
    CertError::Tls {
        action: action.to_string(),
        source,
    }
}
