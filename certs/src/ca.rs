//! The mesh CA: created once, on the first node, and kept there as `ca.key` (0600) + `ca.pem`.
//! It issues node certificates, records each one under `issued/` (so `labmesh certs list` and
//! `revoke` can find them later), and signs revocation records.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use serde::Serialize;

use crate::disk::{self, Existing};
use crate::error::{CertError, Result};
use crate::identity::{NodeIdentity, check_chain_any_time, warn_if_exposed};
use crate::names::{validate_mesh_name, validate_node_name};
use crate::revocation::SignedRevocation;
use crate::x509::{self, CertInfo};
use crate::{CA_CERT_FILE, CA_KEY_FILE, ISSUED_DIR, MESH_NAME_FILE};

/// Default lifetime of a mesh CA: ten years.
pub const DEFAULT_CA_VALIDITY_DAYS: u32 = 3650;
/// Default lifetime of a node certificate: about two years and a quarter (825 days, the old
/// public-CA ceiling); revocation, not expiry, is how a lost node is shut out.
pub const DEFAULT_NODE_VALIDITY_DAYS: u32 = 825;
/// Longest validity we accept, in days (a hundred years).
const MAX_VALIDITY_DAYS: u32 = 36_500;
/// Certificates start this long before "now", so a peer whose clock is a little behind does not
/// see them as not yet valid.
const BACKDATE: chrono::Duration = chrono::Duration::hours(1);

/// The mesh certificate authority: its certificate and private key.
pub struct MeshCa {
    mesh_name: String,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    info: CertInfo,
    key: KeyPair,
    /// Where issued certificates are recorded: the certs dir this CA was loaded from or last
    /// saved to. A CA only in memory (generated, never saved) records nothing.
    record_dir: Mutex<Option<PathBuf>>,
}

/// A certificate the CA issued, as recorded under `issued/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedCert {
    pub node: String,
    pub serial_hex: String,
    pub fingerprint_hex: String,
    /// RFC 3339 UTC.
    pub not_after: String,
    pub path: PathBuf,
}

impl MeshCa {
    /// Creates a new CA (ECDSA P-256, self-signed, CN "labmesh mesh CA <mesh_name>").
    pub fn generate(mesh_name: &str, validity_days: u32) -> Result<Self> {
        validate_mesh_name(mesh_name)?;
        let days = check_days(validity_days)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CertError::rcgen("generate the mesh CA key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("labmesh mesh CA {mesh_name}"));
        dn.push(DnType::OrganizationName, "labmesh");
        params.distinguished_name = dn;
        // Path length 0: the CA signs node certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        // digitalSignature because the CA key also signs revocation records.
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        let now = Utc::now();
        x509::set_validity(&mut params, now - BACKDATE, now + days)?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| CertError::rcgen("create the mesh CA certificate", e))?;
        let cert_pem = cert.pem();
        let cert_der = cert.der().clone();
        let info = x509::parse_cert(cert_der.as_ref())
            .map_err(|e| CertError::bad_cert("the new mesh CA certificate", e))?;
        Ok(MeshCa {
            mesh_name: mesh_name.to_string(),
            cert_pem,
            cert_der,
            info,
            key,
            record_dir: Mutex::new(None),
        })
    }

    /// Loads the CA from `certs_dir`; `None` when `ca.key` is absent (this node is not the CA).
    pub fn load(certs_dir: &Path) -> Result<Option<Self>> {
        let key_path = certs_dir.join(CA_KEY_FILE);
        let Some(key_pem) = disk::read_optional(&key_path, "the mesh CA key")? else {
            return Ok(None);
        };
        warn_if_exposed(&key_path, "the mesh CA key");
        let cert_path = certs_dir.join(CA_CERT_FILE);
        let cert_pem = disk::read_required(
            &cert_path,
            "the mesh CA certificate",
            "ca.key is there without its certificate: restore ca.pem from a backup or from \
             any node of the mesh",
        )?;
        let name_path = certs_dir.join(MESH_NAME_FILE);
        let mesh_name = disk::read_required(
            &name_path,
            "the mesh name",
            "write the mesh's name into it (one line)",
        )?;
        let mesh_name = mesh_name.trim().to_string();
        validate_mesh_name(&mesh_name)?;

        let key_what = format!("the mesh CA key {}", key_path.display());
        let cert_what = format!("the mesh CA certificate {}", cert_path.display());
        let key = x509::key_pair_from_pem(&key_pem, &key_what)?;
        let (cert_der, info) = x509::cert_from_pem(&cert_pem, &cert_what)?;
        if !x509::key_matches(&key, &info, &cert_what)? {
            return Err(CertError::bad_cert(
                key_what,
                format!("it does not match {cert_what}; restore both files from the same backup"),
            ));
        }
        Ok(Some(MeshCa {
            mesh_name,
            cert_pem,
            cert_der,
            info,
            key,
            record_dir: Mutex::new(Some(certs_dir.to_path_buf())),
        }))
    }

    /// Writes `ca.key` (0600), `ca.pem` and `mesh-name` into `certs_dir` (created 0700), and
    /// records future issued certificates there. Refuses to replace a different CA key: that
    /// would cut every node of the existing mesh off.
    pub fn save(&self, certs_dir: &Path) -> Result<()> {
        disk::ensure_dir(certs_dir)?;
        let key_path = certs_dir.join(CA_KEY_FILE);
        let key_what = format!("the mesh CA key {}", key_path.display());
        if let Some(existing) = disk::read_optional(&key_path, "the mesh CA key")? {
            let same = x509::key_pair_from_pem(&existing, &key_what)
                .map(|k| k.public_key_raw() == self.key.public_key_raw())
                .unwrap_or(false);
            if !same {
                return Err(CertError::AlreadyExists {
                    what: "a different mesh CA key".to_string(),
                    path: key_path,
                    hint: "this data dir already holds a mesh CA; use another data dir, or move \
                           certs/ away if you really mean to start a new mesh"
                        .to_string(),
                });
            }
        }
        disk::write_atomic(
            &key_path,
            self.key.serialize_pem().as_bytes(),
            disk::SECRET_MODE,
            Existing::Replace,
            "the mesh CA key",
        )?;
        disk::write_atomic(
            &certs_dir.join(CA_CERT_FILE),
            self.cert_pem.as_bytes(),
            disk::PUBLIC_MODE,
            Existing::Replace,
            "the mesh CA certificate",
        )?;
        disk::write_atomic(
            &certs_dir.join(MESH_NAME_FILE),
            format!("{}\n", self.mesh_name).as_bytes(),
            disk::PUBLIC_MODE,
            Existing::Replace,
            "the mesh name",
        )?;
        *self.record_dir.lock().unwrap_or_else(|e| e.into_inner()) = Some(certs_dir.to_path_buf());
        Ok(())
    }

    pub fn mesh_name(&self) -> &str {
        &self.mesh_name
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        x509::fingerprint(self.cert_der.as_ref())
    }

    pub fn not_after(&self) -> DateTime<Utc> {
        self.info.not_after
    }

    /// Issues a node certificate valid from an hour ago (clock skew) for `days` days: DNS SAN =
    /// `node`, IP SANs = `ips`, usable as TLS server and client. Recorded under `issued/` when
    /// this CA has a certs dir (see [`MeshCa::save`]).
    pub fn issue(&self, node: &str, ips: &[IpAddr], days: u32) -> Result<NodeIdentity> {
        self.issue_granting(node, ips, days, 0)
    }

    /// [`MeshCa::issue`], letting the node claim an `alerter_priority` up to
    /// `alerter_priority` (written as a [`crate::ALERTER_PRIORITY_URI`] SAN; 0 writes none).
    pub fn issue_granting(
        &self,
        node: &str,
        ips: &[IpAddr],
        days: u32,
        alerter_priority: i64,
    ) -> Result<NodeIdentity> {
        let days = check_days(days)?;
        let now = Utc::now();
        self.issue_signed(node, ips, now - BACKDATE, now + days, alerter_priority)
    }

    /// [`MeshCa::issue`] with an explicit validity period (tests issue expired or future
    /// certificates with it; `not_before` may lie in the past).
    pub fn issue_with_validity(
        &self,
        node: &str,
        ips: &[IpAddr],
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<NodeIdentity> {
        self.issue_signed(node, ips, not_before, not_after, 0)
    }

    fn issue_signed(
        &self,
        node: &str,
        ips: &[IpAddr],
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
        alerter_priority: i64,
    ) -> Result<NodeIdentity> {
        validate_node_name(node)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CertError::rcgen("generate the node key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node);
        params.distinguished_name = dn;
        let dns = node
            .try_into()
            .map_err(|e| CertError::rcgen("put the node name in the certificate", e))?;
        params.subject_alt_names = std::iter::once(SanType::DnsName(dns))
            .chain(ips.iter().map(|ip| SanType::IpAddress(*ip)))
            .collect();
        // Peers read the grant back from the signed certificate; 0 is what no grant means, so
        // it is not written (certificates stay as they were for every ordinary node).
        if alerter_priority != 0 {
            let uri = format!("{}{alerter_priority}", crate::ALERTER_PRIORITY_URI)
                .try_into()
                .map_err(|e| CertError::rcgen("put the alerter priority in the certificate", e))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every node is both: it accepts QUIC connections and dials them.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        x509::set_validity(&mut params, not_before, not_after)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)
            .map_err(|e| CertError::rcgen("read the mesh CA certificate for signing", e))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| CertError::rcgen(format!("sign the certificate of {node}"), e))?;
        let identity = NodeIdentity::from_pems(&self.cert_pem, &cert.pem(), &key.serialize_pem())?;
        self.record(&identity)?;
        Ok(identity)
    }

    fn record(&self, identity: &NodeIdentity) -> Result<()> {
        let dir = self
            .record_dir
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(dir) = dir else {
            return Ok(());
        };
        let issued = dir.join(ISSUED_DIR);
        disk::ensure_dir(&issued)?;
        // Node names are host names (checked), so the file name needs no escaping.
        let path = issued.join(format!("{}-{}.pem", identity.node(), identity.serial_hex()));
        disk::write_atomic(
            &path,
            identity.cert_pem().as_bytes(),
            disk::PUBLIC_MODE,
            Existing::Keep,
            "the issued-certificate record",
        )
    }

    /// The certificates recorded under `<certs_dir>/issued/`, by node then expiry. Files that
    /// do not parse are skipped with a warning in the log.
    pub fn list_issued(certs_dir: &Path) -> Result<Vec<IssuedCert>> {
        let dir = certs_dir.join(ISSUED_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CertError::io("list the issued certificates in", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| CertError::io("list the issued certificates in", &dir, e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let Some(pem) = disk::read_optional(&path, "the issued-certificate record")? else {
                continue;
            };
            let what = format!("issued certificate {}", path.display());
            let parsed = x509::cert_from_pem(&pem, &what).and_then(|(der, info)| {
                let node = info
                    .node_name()
                    .map_err(|problem| CertError::bad_cert(&what, problem))?;
                Ok((der, info, node))
            });
            match parsed {
                Ok((der, info, node)) => out.push(IssuedCert {
                    node,
                    serial_hex: info.serial_hex(),
                    fingerprint_hex: hex::encode(x509::fingerprint(der.as_ref())),
                    not_after: x509::rfc3339(info.not_after),
                    path,
                }),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable issued certificate"),
            }
        }
        out.sort_by(|a, b| (&a.node, &a.not_after).cmp(&(&b.node, &b.not_after)));
        Ok(out)
    }

    /// Signs a revocation of the certificate `cert_pem` (from `issued/` or a node's `node.pem`).
    /// Refuses a certificate this CA did not issue.
    pub fn sign_revocation(
        &self,
        cert_pem: &str,
        reason: &str,
        revoked_at: DateTime<Utc>,
    ) -> Result<SignedRevocation> {
        let what = "the certificate to revoke";
        let (der, info) = x509::cert_from_pem(cert_pem, what)?;
        let node = info
            .node_name()
            .map_err(|problem| CertError::bad_cert(what, problem))?;
        // Expired certificates can be revoked too (it costs nothing and reads well in the
        // list), so the signature is checked at a time when both were valid.
        check_chain_any_time(&self.cert_der, &self.info, &der, &info).map_err(|e| {
            CertError::bad_cert(
                what,
                format!("it was not issued by mesh {:?}'s CA ({e})", self.mesh_name),
            )
        })?;
        self.sign_revocation_for(
            &x509::fingerprint(der.as_ref()),
            &node,
            &info.serial_hex(),
            reason,
            revoked_at,
        )
    }

    /// Signs a revocation from the certificate's fingerprint, node and serial, for when the
    /// certificate itself is no longer at hand.
    pub fn sign_revocation_for(
        &self,
        fingerprint: &[u8; 32],
        node: &str,
        serial_hex: &str,
        reason: &str,
        revoked_at: DateTime<Utc>,
    ) -> Result<SignedRevocation> {
        SignedRevocation::sign(&self.key, fingerprint, node, serial_hex, reason, revoked_at)
    }
}

impl fmt::Debug for MeshCa {
    // By hand: the key must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshCa")
            .field("mesh_name", &self.mesh_name)
            .field("fingerprint", &hex::encode(self.fingerprint()))
            .field("not_after", &self.info.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn check_days(days: u32) -> Result<chrono::Duration> {
    if days == 0 || days > MAX_VALIDITY_DAYS {
        return Err(CertError::input(
            "certificate validity",
            format!("{days} days is out of range; use 1 to {MAX_VALIDITY_DAYS}"),
        ));
    }
    Ok(chrono::Duration::days(i64::from(days)))
}

/// 16 random bytes from the OS (through ring, via rustls's provider), first byte forced into
/// 0x40..=0x7f: positive with no DER sign byte and no leading zero, so every serial is exactly
/// 32 hex digits and 126 random bits (RFC 5280 asks for at most 20 octets, CAs use >= 64 bits).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CertError::Random {
            action: "choose a certificate serial number".to_string(),
        })?;
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
