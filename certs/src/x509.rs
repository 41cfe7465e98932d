//! Reading the few certificate fields we need (serial, validity, SAN, public key) and PEM/time
//! glue between chrono, rcgen and rustls.
//!
//! Why a small DER reader of our own: rcgen 0.14 keeps its x509-parser-backed
//! `CertificateParams::from_ca_cert_der` crate-private and re-exports neither `x509-parser` nor
//! `time`, and rustls's `ParsedCertificate` only exposes the public key. The fields we read sit at
//! fixed places in RFC 5280's `TBSCertificate`, so a bounds-checked TLV walk is enough. It never
//! decides trust: chains, signatures, validity and key usages are checked by webpki (through
//! rustls) before a peer's certificate is read here.

use std::net::IpAddr;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::error::{CertError, Result};

/// SHA-256 of a certificate's DER encoding: how the mesh names a certificate (revocations,
/// `certs list`, logs).
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// The fields of a certificate this crate uses.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    /// Serial number as a positive integer's big-endian bytes, without DER's sign byte.
    pub serial: Vec<u8>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// URI SANs: where the CA writes what it grants the node (see [`crate::ALERTER_PRIORITY_URI`]).
    pub uris: Vec<String>,
    /// The whole SubjectPublicKeyInfo TLV.
    pub spki: Vec<u8>,
}

impl CertInfo {
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }

    /// The single DNS SAN our node certificates carry: the node name.
    pub fn node_name(&self) -> std::result::Result<String, String> {
        match self.dns_names.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err("the certificate has no DNS name (subject alternative name)".to_string()),
            many => Err(format!(
                "the certificate has {} DNS names ({}); a labmesh node certificate has exactly one",
                many.len(),
                many.join(", ")
            )),
        }
    }

    /// The highest `alerter_priority` the CA lets this node claim: the value of its one
    /// `labmesh:alerter-priority:N` URI, 0 when it has none (certificates issued before the CA
    /// wrote it, or issued without `--alerter-priority`).
    pub fn alerter_priority_cap(&self) -> std::result::Result<i64, String> {
        let mut caps = self
            .uris
            .iter()
            .filter_map(|u| u.strip_prefix(crate::ALERTER_PRIORITY_URI));
        let Some(first) = caps.next() else {
            return Ok(0);
        };
        if caps.next().is_some() {
            return Err("the certificate grants more than one alerter priority".to_string());
        }
        first.parse().map_err(|_| {
            format!("the certificate's alerter priority {first:?} is not a whole number")
        })
    }
}

// DER tags we meet (universal class unless noted).
const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_VERSION: u8 = 0xA0; // [0] EXPLICIT
const TAG_EXTENSIONS: u8 = 0xA3; // [3] EXPLICIT
const TAG_SAN_DNS: u8 = 0x82; // GeneralName dNSName [2] IMPLICIT IA5String
const TAG_SAN_IP: u8 = 0x87; // GeneralName iPAddress [7] IMPLICIT OCTET STRING
const TAG_SAN_URI: u8 = 0x86; // GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String
/// 2.5.29.17, subjectAltName, as DER OID content.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// A cursor over DER-encoded TLVs.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads one TLV: (tag, content, whole encoding).
    fn read_any(&mut self) -> std::result::Result<(u8, &'a [u8], &'a [u8]), String> {
        let input = self.rest;
        let (&tag, after_tag) = input.split_first().ok_or("unexpected end of data")?;
        if tag & 0x1f == 0x1f {
            return Err("unsupported multi-byte DER tag".to_string());
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or("truncated length")?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err("unsupported DER length".to_string());
            }
            if after_len.len() < n {
                return Err("truncated length".to_string());
            }
            let (len_bytes, rest) = after_len.split_at(n);
            after_len = rest;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if after_len.len() < len {
            return Err("length runs past the end of the data".to_string());
        }
        let (content, rest) = after_len.split_at(len);
        let header_len = input.len() - after_len.len();
        let whole = &input[..header_len + len];
        self.rest = rest;
        Ok((tag, content, whole))
    }

    /// Reads one TLV that must have `tag`; returns its content.
    fn read(&mut self, tag: u8, what: &str) -> std::result::Result<&'a [u8], String> {
        self.read_whole(tag, what).map(|(content, _)| content)
    }

    fn read_whole(
        &mut self,
        tag: u8,
        what: &str,
    ) -> std::result::Result<(&'a [u8], &'a [u8]), String> {
        let (got, content, whole) = self.read_any().map_err(|e| format!("{what}: {e}"))?;
        if got != tag {
            return Err(format!(
                "{what}: expected DER tag {tag:#04x}, found {got:#04x}"
            ));
        }
        Ok((content, whole))
    }
}

/// Parses the fields we need from a DER certificate.
pub(crate) fn parse_cert(der: &[u8]) -> std::result::Result<CertInfo, String> {
    let mut outer = Der::new(der);
    let cert = outer.read(TAG_SEQUENCE, "certificate")?;
    if !outer.is_empty() {
        return Err("trailing bytes after the certificate".to_string());
    }
    let mut cert = Der::new(cert);
    let mut tbs = Der::new(cert.read(TAG_SEQUENCE, "tbsCertificate")?);
    if tbs.peek_tag() == Some(TAG_VERSION) {
        tbs.read_any()?;
    }
    let serial = tbs.read(TAG_INTEGER, "serial number")?;
    tbs.read(TAG_SEQUENCE, "signature algorithm")?;
    tbs.read(TAG_SEQUENCE, "issuer")?;
    let mut validity = Der::new(tbs.read(TAG_SEQUENCE, "validity")?);
    let not_before = read_time(&mut validity, "notBefore")?;
    let not_after = read_time(&mut validity, "notAfter")?;
    tbs.read(TAG_SEQUENCE, "subject")?;
    let (_, spki) = tbs.read_whole(TAG_SEQUENCE, "subject public key info")?;

    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    let mut uris = Vec::new();
    while !tbs.is_empty() {
        let (tag, content, _) = tbs.read_any()?;
        if tag != TAG_EXTENSIONS {
            continue; // issuerUniqueID / subjectUniqueID: not ours to read
        }
        let mut exts = Der::new(Der::new(content).read(TAG_SEQUENCE, "extensions")?);
        while !exts.is_empty() {
            let mut ext = Der::new(exts.read(TAG_SEQUENCE, "extension")?);
            let oid = ext.read(TAG_OID, "extension id")?;
            if ext.peek_tag() == Some(TAG_BOOLEAN) {
                ext.read_any()?;
            }
            let value = ext.read(TAG_OCTET_STRING, "extension value")?;
            if oid != OID_SAN {
                continue;
            }
            let mut names = Der::new(Der::new(value).read(TAG_SEQUENCE, "subjectAltName")?);
            while !names.is_empty() {
                let (tag, content, _) = names.read_any()?;
                match tag {
                    TAG_SAN_DNS => {
                        let name = std::str::from_utf8(content)
                            .ok()
                            .filter(|s| s.is_ascii())
                            .ok_or("a DNS name in the certificate is not ASCII")?;
                        dns_names.push(name.to_string());
                    }
                    TAG_SAN_URI => {
                        let uri = std::str::from_utf8(content)
                            .ok()
                            .filter(|s| s.is_ascii())
                            .ok_or("a URI in the certificate is not ASCII")?;
                        uris.push(uri.to_string());
                    }
                    TAG_SAN_IP => match content.len() {
                        4 => {
                            let mut b = [0u8; 4];
                            b.copy_from_slice(content);
                            ips.push(IpAddr::from(b));
                        }
                        16 => {
                            let mut b = [0u8; 16];
                            b.copy_from_slice(content);
                            ips.push(IpAddr::from(b));
                        }
                        _ => return Err("an IP address in the certificate is malformed".into()),
                    },
                    _ => {}
                }
            }
        }
    }

    // DER integers carry a leading 0x00 when the high bit is set; the serial is the magnitude.
    let serial = match serial {
        [0, rest @ ..] if !rest.is_empty() => rest.to_vec(),
        other => other.to_vec(),
    };
    Ok(CertInfo {
        serial,
        not_before,
        not_after,
        dns_names,
        ips,
        uris,
        spki: spki.to_vec(),
    })
}

fn read_time(der: &mut Der<'_>, what: &str) -> std::result::Result<DateTime<Utc>, String> {
    let (tag, content, _) = der.read_any().map_err(|e| format!("{what}: {e}"))?;
    let text = std::str::from_utf8(content).map_err(|_| format!("{what}: not ASCII"))?;
    let full = match tag {
        // RFC 5280: YY >= 50 means 19YY, else 20YY.
        TAG_UTC_TIME if text.len() == 13 => {
            let yy: u32 = text[..2].parse().map_err(|_| format!("{what}: bad year"))?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        TAG_GENERALIZED_TIME if text.len() == 15 => text.to_string(),
        _ => return Err(format!("{what}: unsupported time encoding")),
    };
    NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%SZ")
        .map(|t| Utc.from_utc_datetime(&t))
        .map_err(|e| format!("{what}: {e}"))
}

/// DER of AlgorithmIdentifier ecdsa-with-SHA256 (1.2.840.10045.4.3.2), content only.
const ECDSA_WITH_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const TAG_BIT_STRING: u8 = 0x03;

/// Checks that the certificate's signature verifies with the P-256 public key `ca_key`, with
/// ring's verifier from rustls's provider; no validity or usage checks (webpki does those).
pub(crate) fn check_signed_by(cert_der: &[u8], ca_key: &[u8]) -> std::result::Result<(), String> {
    let mut outer = Der::new(cert_der);
    let mut cert = Der::new(outer.read(TAG_SEQUENCE, "certificate")?);
    let (_, tbs) = cert.read_whole(TAG_SEQUENCE, "tbsCertificate")?;
    let alg = cert.read(TAG_SEQUENCE, "signature algorithm")?;
    let sig = cert.read(TAG_BIT_STRING, "signature")?;
    if alg != ECDSA_WITH_SHA256 {
        return Err("it is not signed with ECDSA P-256/SHA-256 like labmesh certificates".into());
    }
    let sig = match sig {
        [0, rest @ ..] => rest,
        _ => return Err("malformed signature".to_string()),
    };
    verify_p256_sha256(ca_key, tbs, sig)
        .map_err(|_| "its signature does not verify with the CA's key".to_string())
}

/// ring's ECDSA P-256/SHA-256 verifier (ASN.1 signatures) as rustls's provider exposes it: the
/// code that checks certificate signatures in handshakes.
pub(crate) fn verify_p256_sha256(
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> std::result::Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    let algorithm = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == rustls::SignatureScheme::ECDSA_NISTP256_SHA256)
        .and_then(|(_, algs)| algs.first())
        .ok_or("the crypto provider lacks ECDSA P-256")?;
    algorithm
        .verify_signature(public_key, message, signature)
        .map_err(|_| "bad signature".to_string())
}

/// Decodes the first certificate of a PEM text; `what` names it in errors.
pub(crate) fn cert_der_from_pem(pem: &str, what: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        CertError::bad_cert(
            what,
            format!("no PEM certificate (\"-----BEGIN CERTIFICATE-----\") could be read: {e}"),
        )
    })
}

/// Decodes a PEM certificate and reads its fields.
pub(crate) fn cert_from_pem(pem: &str, what: &str) -> Result<(CertificateDer<'static>, CertInfo)> {
    let der = cert_der_from_pem(pem, what)?;
    let info = parse_cert(der.as_ref())
        .map_err(|e| CertError::bad_cert(what, format!("not a valid X.509 certificate: {e}")))?;
    Ok((der, info))
}

/// Decodes a PEM private key for rustls.
pub(crate) fn key_der_from_pem(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        CertError::bad_cert(
            what,
            format!("no PEM private key (\"-----BEGIN PRIVATE KEY-----\") could be read: {e}"),
        )
    })
}

/// Loads a PEM key pair for rcgen (signing) and checks it is ECDSA P-256, the only kind labmesh
/// creates.
pub(crate) fn key_pair_from_pem(pem: &str, what: &str) -> Result<rcgen::KeyPair> {
    let key = rcgen::KeyPair::from_pem(pem)
        .map_err(|e| CertError::bad_cert(what, format!("not a usable private key: {e}")))?;
    if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(CertError::bad_cert(
            what,
            "not an ECDSA P-256 key; labmesh keys are ECDSA P-256 (regenerate it with labmesh)",
        ));
    }
    Ok(key)
}

/// The raw public key (the SubjectPublicKeyInfo's bit string) of a certificate, checked to be
/// ECDSA P-256.
pub(crate) fn p256_public_key(info: &CertInfo, what: &str) -> Result<Vec<u8>> {
    let spki = rcgen::SubjectPublicKeyInfo::from_der(&info.spki)
        .map_err(|e| CertError::bad_cert(what, format!("unreadable public key: {e}")))?;
    use rcgen::PublicKeyData;
    if spki.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(CertError::bad_cert(
            what,
            "the public key is not ECDSA P-256",
        ));
    }
    Ok(spki.der_bytes().to_vec())
}

/// Checks that `key` is the private half of the certificate's public key.
pub(crate) fn key_matches(key: &rcgen::KeyPair, info: &CertInfo, what: &str) -> Result<bool> {
    Ok(p256_public_key(info, what)? == key.public_key_raw())
}

/// Sets rcgen validity from chrono times. rcgen wants `time::OffsetDateTime`, and `time` is not
/// one of our dependencies: we start from rcgen's own `date_time_ymd(1970, 1, 1)` and add whole
/// seconds, which needs no type name. Times must lie in 1970..=9999 (X.509's range, and where
/// that addition cannot overflow).
pub(crate) fn set_validity(
    params: &mut rcgen::CertificateParams,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<()> {
    if not_after <= not_before {
        return Err(CertError::input(
            "certificate validity",
            format!("not_after ({not_after}) must be later than not_before ({not_before})"),
        ));
    }
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_before)?;
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_after)?;
    Ok(())
}

fn since_epoch(t: DateTime<Utc>) -> Result<std::time::Duration> {
    let secs = t.timestamp();
    // 253402300799 = 9999-12-31T23:59:59Z, the last second X.509 can express.
    if !(0..=253_402_300_799).contains(&secs) {
        return Err(CertError::input(
            "certificate validity",
            format!("{t} is outside 1970..=9999"),
        ));
    }
    Ok(std::time::Duration::from_secs(secs.unsigned_abs()))
}

/// RFC 3339 with whole seconds and a `Z`, the form used in every labmesh file.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
