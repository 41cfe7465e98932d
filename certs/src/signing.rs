//! Event signing with the node's own mesh key, and the book of certificates that others signed
//! with.
//!
//! An event is signed by its origin with the ECDSA P-256 key of its node certificate
//! ([`EventKey`]), so nothing new has to be issued or kept secret: the CA that lets a node into
//! the mesh is the one that vouches for what it writes. Files name the signing certificate by a
//! key id, the first 8 bytes of its SHA-256 fingerprint. A receiver that does not know the id
//! learns the certificate from the peer that sent the files ([`SignerBook::learn`]): it is
//! accepted when it chains to the mesh CA (at any time inside its validity: events outlive
//! certificates) and names exactly one node, and it is kept under `<certs>/signers/` so that
//! `labmesh fsck --verify` can check stored events later. The book also answers revocation: a
//! revoked certificate signs nothing any more.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::disk::{self, Existing};
use crate::error::{CertError, Result};
use crate::identity::{NodeIdentity, check_chain_any_time};
use crate::revocation::RevocationList;
use crate::x509::{self, CertInfo};

/// Folder (under the certs dir) of the certificates this node learned from peers.
pub const SIGNERS_DIR: &str = "signers";

/// The first 8 bytes of a certificate's SHA-256 fingerprint: how event files name their signer.
pub fn key_id(cert_der: &[u8]) -> [u8; 8] {
    let fp = x509::fingerprint(cert_der);
    let mut id = [0u8; 8];
    id.copy_from_slice(&fp[..8]);
    id
}

/// This node's signing key: the private key of its mesh certificate.
pub struct EventKey {
    key: EcdsaKeyPair,
    key_id: [u8; 8],
    rng: SystemRandom,
}

impl EventKey {
    pub fn from_identity(identity: &NodeIdentity) -> Result<EventKey> {
        let der = identity.key_der()?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err(CertError::bad_cert(
                "the node key",
                "not a PKCS#8 key; labmesh writes PKCS#8 keys (regenerate it with labmesh)",
            ));
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| CertError::bad_cert("the node key", format!("not usable for signing: {e}")))?;
        Ok(EventKey {
            key,
            key_id: key_id(identity.cert_der().as_ref()),
            rng,
        })
    }

    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    /// ECDSA P-256/SHA-256 over `message`, in fixed 64-byte form.
    pub fn sign(&self, message: &[u8]) -> std::result::Result<[u8; 64], String> {
        let sig = self
            .key
            .sign(&self.rng, message)
            .map_err(|_| "ring refused to sign".to_owned())?;
        sig.as_ref()
            .try_into()
            .map_err(|_| "not a 64-byte signature".to_owned())
    }
}

impl std::fmt::Debug for EventKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventKey")
            .field("key_id", &hex::encode(self.key_id))
            .finish_non_exhaustive()
    }
}

/// Why a signer was refused, for the caller to word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerRefusal {
    Unknown,
    WrongNode { signer: String },
    Revoked,
    BadSignature,
}

#[derive(Clone)]
struct Signer {
    node: String,
    public_key: Vec<u8>,
    der: Vec<u8>,
    fingerprint: [u8; 32],
}

/// The certificates of the mesh CA this node has seen, by key id.
pub struct SignerBook {
    ca_der: CertificateDer<'static>,
    ca_info: CertInfo,
    dir: Option<PathBuf>,
    signers: RwLock<HashMap<[u8; 8], Signer>>,
    revocations: RwLock<Option<RevocationList>>,
}

impl SignerBook {
    /// A book that knows this node's own certificate and, with `certs_dir`, the certificates
    /// kept under `<certs_dir>/signers/` (a file that no longer checks out is skipped with a
    /// warning). New ones are saved there.
    pub fn open(identity: &NodeIdentity, certs_dir: Option<&Path>) -> Result<Arc<SignerBook>> {
        let (ca_der, ca_info) = x509::cert_from_pem(identity.ca_pem(), "the mesh CA certificate")?;
        let book = SignerBook {
            ca_der,
            ca_info,
            dir: certs_dir.map(|d| d.join(SIGNERS_DIR)),
            signers: RwLock::new(HashMap::new()),
            revocations: RwLock::new(None),
        };
        book.insert(identity.cert_der().as_ref())?;
        if let Some(dir) = &book.dir
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "der") {
                    continue;
                }
                let checked = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|der| book.insert(&der).map_err(|e| e.to_string()));
                if let Err(e) = checked {
                    tracing::warn!(file = %path.display(), error = %e, "skipped a stored signer certificate");
                }
            }
        }
        Ok(Arc::new(book))
    }

    /// From now on, refuse certificates on this list (the mesh driver's live list).
    pub fn use_revocations(&self, list: RevocationList) {
        *self.revocations.write().unwrap_or_else(|p| p.into_inner()) = Some(list);
    }

    fn is_revoked(&self, fingerprint: &[u8; 32]) -> bool {
        self.revocations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|l| l.is_revoked(fingerprint))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 8], Signer>> {
        self.signers.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a certificate and adds it; returns its key id and whether it was new.
    fn insert(&self, der: &[u8]) -> Result<([u8; 8], bool)> {
        let id = key_id(der);
        if let Some(known) = self.read().get(&id) {
            if known.der == der {
                return Ok((id, false));
            }
            return Err(CertError::bad_cert(
                "a signer certificate",
                format!(
                    "its key id {} is already taken by the certificate of {}",
                    hex::encode(id),
                    known.node
                ),
            ));
        }
        let what = "a signer certificate";
        let cert_der = CertificateDer::from(der.to_vec());
        let info = x509::parse_cert(der).map_err(|e| {
            CertError::bad_cert(what, format!("not a valid X.509 certificate: {e}"))
        })?;
        check_chain_any_time(&self.ca_der, &self.ca_info, &cert_der, &info)
            .map_err(|e| CertError::bad_cert(what, format!("not issued by this mesh's CA: {e}")))?;
        let node = info.node_name().map_err(|e| CertError::bad_cert(what, e))?;
        let public_key = x509::p256_public_key(&info, what)?;
        let signer = Signer {
            node,
            public_key: raw_point(&public_key),
            der: der.to_vec(),
            fingerprint: x509::fingerprint(der),
        };
        self.signers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, signer);
        Ok((id, true))
    }

    /// Checks a certificate a peer sent (chains to the mesh CA, one node name, not revoked)
    /// and keeps it. Returns its key id.
    pub fn learn(&self, der: &[u8]) -> Result<[u8; 8]> {
        if self.is_revoked(&x509::fingerprint(der)) {
            return Err(CertError::bad_cert("a signer certificate", "it is revoked"));
        }
        let (id, new) = self.insert(der)?;
        if new && let Some(dir) = &self.dir {
            let path = dir.join(format!("{}.der", hex::encode(x509::fingerprint(der))));
            let saved = disk::ensure_dir(dir).and_then(|()| {
                disk::write_atomic(&path, der, 0o644, Existing::Replace, "a signer certificate")
            });
            if let Err(e) = saved {
                tracing::warn!(error = %e, "cannot keep a signer certificate (fsck --verify will not know it)");
            }
        }
        Ok(id)
    }

    /// Checks that `key` is known, names `node` and is not revoked.
    pub fn check(&self, key: &[u8; 8], node: &str) -> std::result::Result<(), SignerRefusal> {
        let signers = self.read();
        let signer = signers.get(key).ok_or(SignerRefusal::Unknown)?;
        if self.is_revoked(&signer.fingerprint) {
            return Err(SignerRefusal::Revoked);
        }
        if signer.node != node {
            return Err(SignerRefusal::WrongNode {
                signer: signer.node.clone(),
            });
        }
        Ok(())
    }

    /// Checks an ECDSA P-256/SHA-256 fixed-form signature made with `key`.
    pub fn verify(
        &self,
        key: &[u8; 8],
        message: &[u8],
        signature: &[u8; 64],
    ) -> std::result::Result<(), SignerRefusal> {
        let public = self
            .read()
            .get(key)
            .map(|s| s.public_key.clone())
            .ok_or(SignerRefusal::Unknown)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(message, signature)
            .map_err(|_| SignerRefusal::BadSignature)
    }

    /// The certificate behind `key`, in DER.
    pub fn certificate(&self, key: &[u8; 8]) -> Option<Vec<u8>> {
        self.read().get(key).map(|s| s.der.clone())
    }

    /// How many certificates the book holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

/// The uncompressed EC point ring wants, from a SubjectPublicKeyInfo (or the point itself).
fn raw_point(spki_or_point: &[u8]) -> Vec<u8> {
    // An uncompressed P-256 point is 65 bytes starting with 4; in a SubjectPublicKeyInfo it is
    // the tail of the BIT STRING.
    if spki_or_point.len() >= 65 && spki_or_point[spki_or_point.len() - 65] == 4 {
        return spki_or_point[spki_or_point.len() - 65..].to_vec();
    }
    spki_or_point.to_vec()
}
