//! Real rustls handshakes, in memory: a `ClientConnection` and a `ServerConnection` built from
//! this crate's configs exchange bytes through `Vec` buffers until both finish or one fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use certs::{
    ALPN, JoinBundle, MeshCa, NodeIdentity, RejectReason, Rejections, RevocationList,
    client_config, peer_alerter_priority_cap, peer_node_name, server_config,
};
use chrono::{Duration, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, Connection,
    DigitallySignedStruct, Error, ProtocolVersion, ServerConfig, ServerConnection, SignatureScheme,
};

/// The result of one handshake.
struct Outcome {
    client: Connection,
    server: Connection,
    client_err: Option<Error>,
    server_err: Option<Error>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.client_err.is_none()
            && self.server_err.is_none()
            && !self.client.is_handshaking()
            && !self.server.is_handshaking()
    }

    fn peer_name(conn: &Connection) -> String {
        let certs = conn.peer_certificates().expect("peer sent certificates");
        peer_node_name(&certs[0]).unwrap()
    }
}

/// Dials "by IP", with an address that is in no certificate: the name must not matter.
fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Outcome {
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)).into());
    let mut client = Connection::from(ClientConnection::new(client, name).unwrap());
    let mut server = Connection::from(ServerConnection::new(server).unwrap());
    let (mut client_err, mut server_err) = (None, None);
    for _ in 0..50 {
        let a = transfer(&mut client, &mut server, &mut server_err);
        let b = transfer(&mut server, &mut client, &mut client_err);
        if !a && !b {
            break;
        }
    }
    Outcome {
        client,
        server,
        client_err,
        server_err,
    }
}

/// Moves everything `from` wants to send into `to`; false when there was nothing to move.
fn transfer(from: &mut Connection, to: &mut Connection, to_err: &mut Option<Error>) -> bool {
    let mut buf = Vec::new();
    while from.wants_write() {
        if from.write_tls(&mut buf).unwrap() == 0 {
            break;
        }
    }
    if buf.is_empty() {
        return false;
    }
    if to_err.is_some() {
        return true; // it already failed; bytes after that are dropped, as a socket would
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        match to.read_tls(&mut rd) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Err(e) = to.process_new_packets() {
            *to_err = Some(e);
            break;
        }
    }
    true
}

struct Mesh {
    ca: MeshCa,
}

impl Mesh {
    fn new(name: &str) -> Self {
        Mesh {
            ca: MeshCa::generate(name, 30).unwrap(),
        }
    }

    fn node(&self, name: &str) -> NodeIdentity {
        self.ca
            .issue(name, &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))], 10)
            .unwrap()
    }
}

struct Side {
    revoked: RevocationList,
    rejections: Rejections,
}

impl Side {
    fn new() -> Self {
        Side {
            revoked: RevocationList::new(),
            rejections: Rejections::new(),
        }
    }

    fn server(&self, id: &NodeIdentity) -> Arc<ServerConfig> {
        server_config(id, self.revoked.clone(), self.rejections.clone()).unwrap()
    }

    fn client(&self, id: &NodeIdentity) -> Arc<ClientConfig> {
        client_config(id, self.revoked.clone(), self.rejections.clone()).unwrap()
    }

    fn count(&self, reason: RejectReason) -> u64 {
        self.rejections.get(reason)
    }
}

fn invalid_cert(err: &Option<Error>) -> Option<CertificateError> {
    match err {
        Some(Error::InvalidCertificate(e)) => Some(e.clone()),
        _ => None,
    }
}

#[test]
fn same_ca_peers_connect_and_learn_each_others_names() {
    let mesh = Mesh::new("home");
    let (alpha, beta) = (mesh.node("alpha"), mesh.node("beta"));
    let (c, s) = (Side::new(), Side::new());
    let out = handshake(c.client(&alpha), s.server(&beta));
    assert!(
        out.ok(),
        "client: {:?}, server: {:?}",
        out.client_err,
        out.server_err
    );
    assert_eq!(Outcome::peer_name(&out.server), "alpha");
    assert_eq!(Outcome::peer_name(&out.client), "beta");
    assert_eq!(
        out.client.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(out.server.alpn_protocol(), Some(ALPN));
    assert_eq!(c.rejections.total() + s.rejections.total(), 0);
}

#[test]
fn client_from_another_ca_is_refused() {
    let home = Mesh::new("home");
    let server_side = Side::new();
    let server_cfg = server_side.server(&home.node("beta"));
    // Another mesh, and another mesh that happens to share our mesh's name (the CA's subject
    // then matches, and only the signature tells them apart).
    for other in [Mesh::new("elsewhere"), Mesh::new("home")] {
        let intruder = other.node("mallory");
        // The intruder trusts our server (it has our CA) but presents its own certificate.
        let client_cfg = trust_anything_client(Some(&intruder));
        let out = handshake(client_cfg, server_cfg.clone());
        assert!(!out.ok());
        assert!(
            invalid_cert(&out.server_err).is_some(),
            "{:?}",
            out.server_err
        );
    }
    assert_eq!(server_side.count(RejectReason::UnknownCa), 2);
    assert_eq!(server_side.rejections.total(), 2);
}

#[test]
fn server_from_another_ca_is_refused() {
    let home = Mesh::new("home");
    let other = Mesh::new("elsewhere");
    let c = Side::new();
    let out = handshake(
        c.client(&home.node("alpha")),
        Side::new().server(&other.node("mallory")),
    );
    assert_eq!(
        invalid_cert(&out.client_err),
        Some(CertificateError::UnknownIssuer)
    );
    assert_eq!(c.count(RejectReason::UnknownCa), 1);
}

#[test]
fn expired_client_is_refused() {
    let mesh = Mesh::new("home");
    let now = Utc::now();
    let old = mesh
        .ca
        .issue_with_validity(
            "alpha",
            &[],
            now - Duration::days(10),
            now - Duration::days(1),
        )
        .unwrap();
    let s = Side::new();
    let out = handshake(Side::new().client(&old), s.server(&mesh.node("beta")));
    assert!(matches!(
        invalid_cert(&out.server_err),
        Some(CertificateError::ExpiredContext { .. } | CertificateError::Expired)
    ));
    assert_eq!(s.count(RejectReason::Expired), 1);
    assert_eq!(s.rejections.total(), 1);
}

#[test]
fn expired_server_is_refused() {
    let mesh = Mesh::new("home");
    let now = Utc::now();
    let old = mesh
        .ca
        .issue_with_validity(
            "beta",
            &[],
            now - Duration::days(10),
            now - Duration::days(1),
        )
        .unwrap();
    let c = Side::new();
    let out = handshake(c.client(&mesh.node("alpha")), Side::new().server(&old));
    assert!(!out.ok());
    assert_eq!(c.count(RejectReason::Expired), 1);
}

#[test]
fn not_yet_valid_client_is_refused() {
    let mesh = Mesh::new("home");
    let now = Utc::now();
    let future = mesh
        .ca
        .issue_with_validity(
            "alpha",
            &[],
            now + Duration::days(1),
            now + Duration::days(9),
        )
        .unwrap();
    let s = Side::new();
    let out = handshake(Side::new().client(&future), s.server(&mesh.node("beta")));
    assert!(!out.ok());
    assert_eq!(s.count(RejectReason::NotYetValid), 1);
}

#[test]
fn revoked_client_is_refused_once_the_record_arrives() {
    let mesh = Mesh::new("home");
    let (alpha, beta) = (mesh.node("alpha"), mesh.node("beta"));
    let s = Side::new();
    let server_cfg = s.server(&beta);
    let client_cfg = Side::new().client(&alpha);
    assert!(handshake(client_cfg.clone(), server_cfg.clone()).ok());

    // The record arrives after the config was built: the shared list makes it count at once.
    let record = mesh
        .ca
        .sign_revocation(alpha.cert_pem(), "laptop stolen", Utc::now())
        .unwrap();
    assert!(s.revoked.add(record, mesh.ca.cert_pem()).unwrap());
    let out = handshake(client_cfg, server_cfg);
    assert_eq!(
        invalid_cert(&out.server_err),
        Some(CertificateError::Revoked)
    );
    // The client learns it through the alert.
    assert!(out.client_err.is_some());
    assert_eq!(s.count(RejectReason::Revoked), 1);
    assert_eq!(s.rejections.total(), 1);
}

#[test]
fn revoked_server_is_refused_by_the_client() {
    let mesh = Mesh::new("home");
    let (alpha, beta) = (mesh.node("alpha"), mesh.node("beta"));
    let c = Side::new();
    let record = mesh
        .ca
        .sign_revocation(beta.cert_pem(), "decommissioned", Utc::now())
        .unwrap();
    c.revoked.add(record, mesh.ca.cert_pem()).unwrap();
    let out = handshake(c.client(&alpha), Side::new().server(&beta));
    assert_eq!(
        invalid_cert(&out.client_err),
        Some(CertificateError::Revoked)
    );
    assert_eq!(c.count(RejectReason::Revoked), 1);
}

#[test]
fn client_without_a_certificate_is_refused() {
    let mesh = Mesh::new("home");
    let s = Side::new();
    let out = handshake(trust_anything_client(None), s.server(&mesh.node("beta")));
    assert!(!out.ok());
    let err = out.server_err.expect("server refused");
    assert!(matches!(err, Error::NoCertificatesPresented), "{err:?}");
    // rustls refuses this before any verifier runs; the documented hook counts it.
    assert_eq!(
        s.rejections.record_handshake_error(&err),
        Some(RejectReason::NoCertificate)
    );
    assert_eq!(s.rejections.snapshot()["no_certificate"], 1);
    assert_eq!(s.rejections.total(), 1);
    // The client was told why.
    assert!(matches!(
        out.client_err,
        Some(Error::AlertReceived(AlertDescription::CertificateRequired))
    ));
}

#[test]
fn tls12_is_not_offered_or_accepted() {
    let mesh = Mesh::new("home");
    let (alpha, beta) = (mesh.node("alpha"), mesh.node("beta"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    // A TLS 1.2-only client (mesh certificate and all) gets nowhere with our server...
    let tls12_client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything))
        .with_client_auth_cert(vec![alpha.cert_der().clone()], alpha.key_der().unwrap())
        .unwrap();
    let out = handshake(Arc::new(tls12_client), Side::new().server(&beta));
    assert!(
        matches!(out.server_err, Some(Error::PeerIncompatible(_))),
        "{:?}",
        out.server_err
    );

    // ...and our client does not fall back to TLS 1.2 for a server that only speaks it.
    let tls12_server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![beta.cert_der().clone()], beta.key_der().unwrap())
        .unwrap();
    let out = handshake(Side::new().client(&alpha), Arc::new(tls12_server));
    assert!(!out.ok());
    assert!(out.server_err.is_some());
}

#[test]
fn peer_node_name_reads_the_dns_san() {
    let mesh = Mesh::new("home");
    let id = mesh.node("gpu-box.lan");
    assert_eq!(peer_node_name(id.cert_der()).unwrap(), "gpu-box.lan");
    // The CA certificate names no node.
    let ca_der = CertificateDer::from(mesh.ca.cert_der().to_vec());
    let err = peer_node_name(&ca_der).unwrap_err().to_string();
    assert!(err.contains("no DNS name"), "{err}");
    assert!(peer_node_name(&CertificateDer::from(vec![1, 2, 3])).is_err());
}

#[test]
fn the_alerter_priority_a_certificate_grants_reads_back_and_survives_a_bundle() {
    let mesh = Mesh::new("home");
    // No grant: the node may claim 0 at most, and its certificate carries no URI at all.
    let plain = mesh.node("vm1");
    assert_eq!(plain.alerter_priority_cap(), 0);
    assert_eq!(peer_alerter_priority_cap(plain.cert_der()).unwrap(), 0);
    for grant in [10, -3, i64::MAX] {
        let id = mesh.ca.issue_granting("nas1", &[], 10, grant).unwrap();
        assert_eq!(id.alerter_priority_cap(), grant);
        assert_eq!(peer_alerter_priority_cap(id.cert_der()).unwrap(), grant);
        // The DNS name is still the one name the certificate carries: a URI SAN is not one.
        assert_eq!(peer_node_name(id.cert_der()).unwrap(), "nas1");
        let json = JoinBundle::new("home", &id).to_json().unwrap();
        let back = JoinBundle::from_json(&json, std::path::Path::new("b.json"))
            .unwrap()
            .identity()
            .unwrap();
        assert_eq!(back.alerter_priority_cap(), grant);
    }
    // A granted node still completes a mutual-TLS handshake with a plain one.
    let nas = mesh.ca.issue_granting("nas1", &[], 10, 10).unwrap();
    let out = handshake(Side::new().client(&plain), Side::new().server(&nas));
    assert!(out.ok(), "{:?} {:?}", out.client_err, out.server_err);
}

/// A client config that trusts any server, presenting `identity` (or no certificate).
fn trust_anything_client(identity: Option<&NodeIdentity>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything));
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert_der().clone()], id.key_der().unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct TrustAnything;

impl ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
