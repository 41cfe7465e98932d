//! A throwaway CA and a `localhost` server certificate for tests that need a TLS server the
//! agent must trust through a `ca_file` (HTTPS checks, SMTP with STARTTLS or implicit TLS).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The CA's PEM (what an operator puts in `ca_file`) and a server config for `localhost`.
pub struct LocalhostTls {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn localhost_tls() -> LocalhostTls {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    LocalhostTls {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}
