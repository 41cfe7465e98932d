//! Peer certificate verification for both TLS directions, and the counters of refusals.
//!
//! Both verifiers delegate the chain, validity, key-usage and signature checks to webpki through
//! rustls (ring's algorithms only), then add what webpki cannot know: our revocation list. Every
//! refusal is counted by reason so `/metrics` can say why peers were turned away.
//!
//! The server side wraps `WebPkiClientVerifier`. The client side cannot wrap
//! `WebPkiServerVerifier` as is, because that one also matches the certificate against the name
//! we dialled, and we dial peers by IP:port and learn who they are from the certificate. So it
//! calls rustls's `verify_server_cert_signed_by_trust_anchor` (the same chain check without the
//! name step) directly, instead of turning `NotValidForName` errors into success after the fact.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, DistinguishedName};
use rustls::{Error, RootCertStore, SignatureScheme};

use crate::revocation::RevocationList;
use crate::x509::fingerprint;

/// The crypto provider of every labmesh TLS configuration: ring, named explicitly so the process
/// default (which panics when both ring and aws-lc-rs are linked) never matters.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding only the mesh CA.
pub(crate) fn mesh_roots(ca_der: &CertificateDer<'_>) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der.clone().into_owned())?;
    Ok(roots)
}

/// Checks that `cert_der` chains to `ca_der` and is valid at `now` (webpki's path building with
/// ring's algorithms). Used outside handshakes: join bundles, loaded identities, revocations.
pub(crate) fn check_issued_by(
    ca_der: &CertificateDer<'_>,
    cert_der: &CertificateDer<'_>,
    now: UnixTime,
) -> Result<(), Error> {
    let roots = mesh_roots(ca_der)?;
    let cert = ParsedCertificate::try_from(cert_der)?;
    verify_server_cert_signed_by_trust_anchor(
        &cert,
        &roots,
        &[],
        now,
        provider().signature_verification_algorithms.all,
    )
}

/// Why a peer certificate was refused. The `as_str` names are the metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// Not issued by this mesh's CA (another mesh, self-signed, or a bad CA signature).
    UnknownCa,
    Expired,
    NotYetValid,
    /// On the mesh's signed revocation list.
    Revoked,
    /// The peer sent no certificate at all.
    NoCertificate,
    /// Anything else: undecodable, wrong key usage, a bad handshake signature, ...
    BadCertificate,
}

impl RejectReason {
    /// Every reason, in the order `snapshot` lists them.
    pub const ALL: [RejectReason; 6] = [
        RejectReason::UnknownCa,
        RejectReason::Expired,
        RejectReason::NotYetValid,
        RejectReason::Revoked,
        RejectReason::NoCertificate,
        RejectReason::BadCertificate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownCa => "unknown_ca",
            RejectReason::Expired => "expired",
            RejectReason::NotYetValid => "not_yet_valid",
            RejectReason::Revoked => "revoked",
            RejectReason::NoCertificate => "no_certificate",
            RejectReason::BadCertificate => "bad_certificate",
        }
    }

    /// Classifies a rustls verification error.
    pub fn from_error(err: &Error) -> RejectReason {
        match err {
            Error::NoCertificatesPresented => RejectReason::NoCertificate,
            Error::InvalidCertificate(e) => match e {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    RejectReason::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    RejectReason::NotYetValid
                }
                // A bad signature on the certificate means "a CA with our CA's name but not our
                // CA's key" (say, a second mesh created with the same name): for an operator that
                // is the same story as an unknown issuer.
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    RejectReason::UnknownCa
                }
                CertificateError::Revoked => RejectReason::Revoked,
                _ => RejectReason::BadCertificate,
            },
            _ => RejectReason::BadCertificate,
        }
    }

    fn index(self) -> usize {
        match self {
            RejectReason::UnknownCa => 0,
            RejectReason::Expired => 1,
            RejectReason::NotYetValid => 2,
            RejectReason::Revoked => 3,
            RejectReason::NoCertificate => 4,
            RejectReason::BadCertificate => 5,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of refused peer certificates, by reason. Cheap to clone (one `Arc`); all clones share
/// the counts, so the node keeps one and hands clones to the TLS configs and `/metrics`.
#[derive(Clone, Default)]
pub struct Rejections {
    counts: Arc<[AtomicU64; 6]>,
}

impl Rejections {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one refusal.
    pub fn record(&self, reason: RejectReason) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: RejectReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        RejectReason::ALL.iter().map(|r| self.get(*r)).sum()
    }

    /// Every reason with its count (zeros included, so metrics series exist from the start).
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        RejectReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), self.get(*r)))
            .collect()
    }

    /// Counts a handshake failure that rustls decided before any verifier ran, which today is
    /// one case: the client sent no certificate (`Error::NoCertificatesPresented`). rustls
    /// refuses that itself without calling `ClientCertVerifier::verify_client_cert`, so the
    /// verifier cannot count it. Call this with the server connection's error; errors that our
    /// verifiers produced were counted already and are ignored here. Returns the reason counted.
    pub fn record_handshake_error(&self, err: &Error) -> Option<RejectReason> {
        match err {
            Error::NoCertificatesPresented => {
                self.record(RejectReason::NoCertificate);
                Some(RejectReason::NoCertificate)
            }
            _ => None,
        }
    }

    /// The same for QUIC, where the server's failed handshake surfaces as
    /// `quinn::ConnectionError::TransportError` with code `crypto(alert)`, i.e. `0x100 + alert`
    /// (checked against quinn 0.11: a revoked client gives `Code::crypto(2c)`): pass
    /// `AlertDescription::from((code - 0x100) as u8)`. Only `certificate_required` (the client
    /// sent no certificate) is counted; the other alerts follow refusals already counted.
    pub fn record_alert_sent(&self, alert: AlertDescription) -> Option<RejectReason> {
        match alert {
            AlertDescription::CertificateRequired => {
                self.record(RejectReason::NoCertificate);
                Some(RejectReason::NoCertificate)
            }
            _ => None,
        }
    }
}

impl fmt::Debug for Rejections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.snapshot()).finish()
    }
}

/// Server side: verifies client certificates against the mesh CA and the revocation list.
pub(crate) struct MeshClientCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: RevocationList,
    rejections: Rejections,
}

impl MeshClientCertVerifier {
    pub(crate) fn new(
        inner: Arc<dyn ClientCertVerifier>,
        revoked: RevocationList,
        rejections: Rejections,
    ) -> Self {
        MeshClientCertVerifier {
            inner,
            revoked,
            rejections,
        }
    }
}

impl fmt::Debug for MeshClientCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshClientCertVerifier")
            .field("revoked", &self.revoked.len())
            .field("rejections", &self.rejections)
            .finish()
    }
}

impl ClientCertVerifier for MeshClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| refuse(&self.rejections, e))?;
        check_not_revoked(&self.revoked, &self.rejections, end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner
            .verify_tls12_signature(message, cert, dss)
            .map_err(|e| refuse(&self.rejections, e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner
            .verify_tls13_signature(message, cert, dss)
            .map_err(|e| refuse(&self.rejections, e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Client side: verifies the server chains to the mesh CA and is not revoked, without matching
/// the dialled name (see the module comment).
pub(crate) struct MeshServerCertVerifier {
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
    revoked: RevocationList,
    rejections: Rejections,
}

impl MeshServerCertVerifier {
    pub(crate) fn new(
        roots: RootCertStore,
        provider: Arc<CryptoProvider>,
        revoked: RevocationList,
        rejections: Rejections,
    ) -> Self {
        MeshServerCertVerifier {
            roots,
            provider,
            revoked,
            rejections,
        }
    }
}

impl fmt::Debug for MeshServerCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshServerCertVerifier")
            .field("revoked", &self.revoked.len())
            .field("rejections", &self.rejections)
            .finish()
    }
}

impl ServerCertVerifier for MeshServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        ParsedCertificate::try_from(end_entity)
            .and_then(|cert| {
                verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    &self.roots,
                    intermediates,
                    now,
                    self.provider.signature_verification_algorithms.all,
                )
            })
            .map_err(|e| refuse(&self.rejections, e))?;
        check_not_revoked(&self.revoked, &self.rejections, end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Unreachable with our TLS 1.3-only configs; implemented properly all the same.
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
        .map_err(|e| refuse(&self.rejections, e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
        .map_err(|e| refuse(&self.rejections, e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn refuse(rejections: &Rejections, err: Error) -> Error {
    let reason = RejectReason::from_error(&err);
    rejections.record(reason);
    tracing::debug!(reason = reason.as_str(), error = %err, "refused a peer certificate");
    err
}

fn check_not_revoked(
    revoked: &RevocationList,
    rejections: &Rejections,
    end_entity: &CertificateDer<'_>,
) -> Result<(), Error> {
    if revoked.is_revoked(&fingerprint(end_entity.as_ref())) {
        return Err(refuse(rejections, CertificateError::Revoked.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_from_rustls_errors() {
        let cases: [(Error, RejectReason); 8] = [
            (CertificateError::Expired.into(), RejectReason::Expired),
            (
                CertificateError::NotValidYet.into(),
                RejectReason::NotYetValid,
            ),
            (
                CertificateError::UnknownIssuer.into(),
                RejectReason::UnknownCa,
            ),
            (
                CertificateError::BadSignature.into(),
                RejectReason::UnknownCa,
            ),
            (CertificateError::Revoked.into(), RejectReason::Revoked),
            (
                CertificateError::BadEncoding.into(),
                RejectReason::BadCertificate,
            ),
            (Error::NoCertificatesPresented, RejectReason::NoCertificate),
            (Error::DecryptError, RejectReason::BadCertificate),
        ];
        for (err, want) in cases {
            assert_eq!(RejectReason::from_error(&err), want, "{err}");
        }
    }

    #[test]
    fn snapshot_lists_every_reason() {
        let r = Rejections::new();
        let clone = r.clone();
        clone.record(RejectReason::Expired);
        assert_eq!(r.record_handshake_error(&Error::DecryptError), None);
        assert_eq!(
            r.record_alert_sent(AlertDescription::CertificateRequired),
            Some(RejectReason::NoCertificate)
        );
        let snap = r.snapshot();
        assert_eq!(snap.len(), 6);
        assert_eq!(snap["expired"], 1);
        assert_eq!(snap["no_certificate"], 1);
        assert_eq!(snap["unknown_ca"], 0);
        assert_eq!(r.total(), 2);
    }
}
