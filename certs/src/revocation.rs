//! Signed revocation records and the in-memory list the TLS verifiers consult.
//!
//! A record travels through the mesh inside an event payload (as JSON), so any node may relay
//! it, but only the CA key can make one: a node accepts a record only when its signature
//! verifies with the mesh CA certificate's public key.
//!
//! # Canonical bytes
//!
//! The signature covers this byte string (UTF-8, `\n` line ends), fields in this order:
//!
//! ```text
//! labmesh revocation v1\n
//! fingerprint=<len>:<fingerprint>\n
//! node=<len>:<node>\n
//! serial=<len>:<serial>\n
//! reason=<len>:<reason>\n
//! revoked_at=<len>:<revoked_at>\n
//! ```
//!
//! `<len>` is the field's length in bytes, in decimal, so no value can imitate a field boundary
//! whatever it contains. Values are the record's strings exactly as carried (the checks below
//! make them canonical: lower-case hex, RFC 3339). The first line separates these signatures
//! from anything else the CA key might ever sign. The signature is ECDSA P-256 with SHA-256,
//! ASN.1 DER-encoded (the encoding X.509 uses), carried as lower-case hex.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::DateTime;
use rcgen::SigningKey;
use serde::{Deserialize, Serialize};

use crate::error::{CertError, Result};
use crate::names::validate_node_name;
use crate::x509;

/// First line of the signed bytes.
pub const REVOCATION_CONTEXT: &str = "labmesh revocation v1";

/// Longest accepted `reason`, in bytes: records are gossiped, keep them small.
pub const MAX_REASON_LEN: usize = 256;

/// One revoked certificate, signed by the mesh CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocation {
    /// SHA-256 of the revoked certificate's DER, 64 lower-case hex digits.
    pub fingerprint: String,
    /// The node the certificate was issued to.
    pub node: String,
    /// The certificate's serial number, lower-case hex.
    pub serial: String,
    /// Free text from the operator ("laptop stolen").
    pub reason: String,
    /// When it was revoked, RFC 3339 UTC.
    pub revoked_at: String,
    /// The CA's signature over [`SignedRevocation::canonical_bytes`], lower-case hex.
    pub signature: String,
}

impl SignedRevocation {
    /// Signs a record with the CA key (called by `MeshCa`).
    pub(crate) fn sign(
        ca_key: &rcgen::KeyPair,
        fingerprint: &[u8; 32],
        node: &str,
        serial_hex: &str,
        reason: &str,
        revoked_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self> {
        let mut record = SignedRevocation {
            fingerprint: hex::encode(fingerprint),
            node: node.to_string(),
            serial: serial_hex.to_ascii_lowercase(),
            reason: reason.to_string(),
            revoked_at: x509::rfc3339(revoked_at),
            signature: String::new(),
        };
        record
            .check_fields()
            .map_err(|problem| CertError::Revocation {
                node: node.to_string(),
                problem,
            })?;
        let signature = ca_key
            .sign(&record.canonical_bytes())
            .map_err(|e| CertError::rcgen("sign the revocation record", e))?;
        record.signature = hex::encode(signature);
        Ok(record)
    }

    /// The bytes the signature covers (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(REVOCATION_CONTEXT.as_bytes());
        out.push(b'\n');
        for (name, value) in [
            ("fingerprint", &self.fingerprint),
            ("node", &self.node),
            ("serial", &self.serial),
            ("reason", &self.reason),
            ("revoked_at", &self.revoked_at),
        ] {
            out.extend_from_slice(format!("{name}={}:", value.len()).as_bytes());
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// Checks the record's form and that `signature` verifies with the public key of the CA
    /// certificate `ca_pem`. A changed field, a signature by another key, or a malformed record
    /// all fail.
    pub fn verify(&self, ca_pem: &str) -> Result<()> {
        let fail = |problem: String| CertError::Revocation {
            node: self.node.clone(),
            problem,
        };
        self.check_fields().map_err(fail)?;
        let (_, ca_info) = x509::cert_from_pem(ca_pem, "the mesh CA certificate")?;
        let public_key = x509::p256_public_key(&ca_info, "the mesh CA certificate")?;
        let signature = hex::decode(&self.signature)
            .map_err(|e| fail(format!("the signature is not hex ({e})")))?;
        x509::verify_p256_sha256(&public_key, &self.canonical_bytes(), &signature).map_err(|_| {
            fail(
                "the signature does not verify with this mesh's CA key (the record was \
                     altered, or made by another mesh's CA)"
                    .to_string(),
            )
        })
    }

    /// The revoked certificate's fingerprint as bytes.
    pub fn fingerprint_bytes(&self) -> Result<[u8; 32]> {
        parse_fingerprint(&self.fingerprint).map_err(|problem| CertError::Revocation {
            node: self.node.clone(),
            problem,
        })
    }

    /// Form checks, so the canonical bytes are canonical (one spelling per record).
    fn check_fields(&self) -> std::result::Result<(), String> {
        parse_fingerprint(&self.fingerprint)?;
        validate_node_name(&self.node).map_err(|e| e.to_string())?;
        if self.serial.is_empty() || self.serial.len() > 40 || !is_lower_hex(&self.serial) {
            return Err(format!(
                "serial {:?} is not 1 to 40 lower-case hex digits",
                self.serial
            ));
        }
        if self.reason.len() > MAX_REASON_LEN {
            return Err(format!("the reason is longer than {MAX_REASON_LEN} bytes"));
        }
        if self.reason.chars().any(char::is_control) {
            return Err("the reason contains control characters".to_string());
        }
        let at = DateTime::parse_from_rfc3339(&self.revoked_at)
            .map_err(|e| format!("revoked_at {:?} is not RFC 3339 ({e})", self.revoked_at))?;
        if x509::rfc3339(at.to_utc()) != self.revoked_at {
            return Err(format!(
                "revoked_at {:?} is not in canonical form (UTC, whole seconds, e.g. \
                 2026-05-12T12:05:00Z)",
                self.revoked_at
            ));
        }
        Ok(())
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_fingerprint(hex_str: &str) -> std::result::Result<[u8; 32], String> {
    if hex_str.len() != 64 || !is_lower_hex(hex_str) {
        return Err(format!(
            "fingerprint {hex_str:?} is not 64 lower-case hex digits (a SHA-256)"
        ));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The revoked certificates this node knows about. Cheap to clone (one `Arc`); clones share the
/// list, so a record added after a TLS config was built is enforced on its next handshake.
///
/// When two records name the same certificate, the one with the earliest `revoked_at` (then the
/// smallest signature) is kept, so every node ends with the same records whatever the order they
/// arrived in.
#[derive(Clone, Default)]
pub struct RevocationList {
    inner: Arc<RwLock<BTreeMap<[u8; 32], SignedRevocation>>>,
}

impl RevocationList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `record` against the CA certificate `ca_pem` and adds it. Returns `true` when
    /// the certificate was not revoked before (the caller then records or forwards it).
    pub fn add(&self, record: SignedRevocation, ca_pem: &str) -> Result<bool> {
        record.verify(ca_pem)?;
        let fingerprint = record.fingerprint_bytes()?;
        let mut map = self.write();
        match map.get(&fingerprint) {
            None => {
                map.insert(fingerprint, record);
                Ok(true)
            }
            Some(existing) => {
                let key = |r: &SignedRevocation| (r.revoked_at.clone(), r.signature.clone());
                if key(&record) < key(existing) {
                    map.insert(fingerprint, record);
                }
                Ok(false)
            }
        }
    }

    pub fn is_revoked(&self, fingerprint: &[u8; 32]) -> bool {
        self.read().contains_key(fingerprint)
    }

    /// All records, ordered by fingerprint.
    pub fn records(&self) -> Vec<SignedRevocation> {
        self.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    // A panic while holding the lock cannot leave the map half-updated (each write is one
    // insert), so a poisoned lock is still safe to use.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<[u8; 32], SignedRevocation>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<[u8; 32], SignedRevocation>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SignedRevocation {
        SignedRevocation {
            fingerprint: "ab".repeat(32),
            node: "nas".into(),
            serial: "4f01".into(),
            reason: "stolen".into(),
            revoked_at: "2026-05-12T12:05:00Z".into(),
            signature: String::new(),
        }
    }

    #[test]
    fn canonical_bytes_are_length_prefixed() {
        let text = String::from_utf8(sample().canonical_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                "labmesh revocation v1\nfingerprint=64:{}\nnode=3:nas\nserial=4:4f01\n\
                 reason=6:stolen\nrevoked_at=20:2026-05-12T12:05:00Z\n",
                "ab".repeat(32)
            )
        );
        // A reason that spells out a later field still changes the bytes unambiguously.
        let mut a = sample();
        a.reason = "x\nrevoked_at=1:y".into();
        assert_ne!(a.canonical_bytes(), sample().canonical_bytes());
    }

    #[test]
    fn field_checks() {
        assert!(sample().check_fields().is_ok());
        let mut r = sample();
        r.fingerprint = "AB".repeat(32);
        assert!(r.check_fields().is_err());
        let mut r = sample();
        r.revoked_at = "2026-05-12T14:05:00+02:00".into();
        assert!(r.check_fields().unwrap_err().contains("canonical"));
        let mut r = sample();
        r.reason = "a\u{7}b".into();
        assert!(r.check_fields().is_err());
    }
}
