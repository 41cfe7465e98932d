//! Real ECDSA P-256 keys for tests and the simulator, without X.509: a [`TestMesh`] plays the
//! mesh CA (it "issues" a certificate per node: the node name and public key, remembered as
//! issued) and is also every node's [`SignerDirectory`]. The agent uses the real thing, the
//! mesh certificates (`node/src/trust.rs`); the signature format and checks are the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

use super::{EventSigner, KeyId, SignatureError, SignerDirectory, key_id_of};

#[derive(Default)]
struct Book {
    /// Issued "certificates" by key id: node and public key.
    issued: BTreeMap<KeyId, (String, Vec<u8>, Vec<u8>)>,
    /// What this directory has learned (a real node learns certificates from peers).
    known: BTreeSet<KeyId>,
    revoked: BTreeSet<KeyId>,
}

/// A test CA and directory shared by the nodes of a test.
#[derive(Clone, Default)]
pub struct TestMesh {
    book: Arc<Mutex<Book>>,
    /// When set, only learned keys verify (as on a real node); else every issued key does.
    strict: bool,
}

/// One node's key.
pub struct TestSigner {
    key: EcdsaKeyPair,
    id: KeyId,
}

impl TestMesh {
    pub fn new() -> Self {
        TestMesh::default()
    }

    /// A directory that knows only the certificates it was given through `learn`.
    pub fn strict_view(&self) -> TestMesh {
        TestMesh {
            book: Arc::new(Mutex::new(Book {
                issued: self.lock().issued.clone(),
                ..Book::default()
            })),
            strict: true,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a key for `node` and returns its signer and "certificate".
    pub fn issue(&self, node: &str) -> (Arc<TestSigner>, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap_or_else(|_| unreachable!("ring generates P-256 keys"));
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap_or_else(|_| unreachable!("ring reads its own keys"));
        let public = key.public_key().as_ref().to_vec();
        let mut cert = b"labmesh test certificate\0".to_vec();
        cert.extend_from_slice(node.as_bytes());
        cert.push(0);
        cert.extend_from_slice(&public);
        let id = key_id_of(&cert);
        self.lock()
            .issued
            .insert(id, (node.to_owned(), public, cert.clone()));
        (Arc::new(TestSigner { key, id }), cert)
    }

    /// Marks a key revoked.
    pub fn revoke(&self, key: &KeyId) {
        self.lock().revoked.insert(*key);
    }
}

impl EventSigner for TestSigner {
    fn key_id(&self) -> KeyId {
        self.id
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignatureError> {
        let sig = self
            .key
            .sign(&SystemRandom::new(), message)
            .map_err(|_| SignatureError::Signing("ring refused to sign".into()))?;
        sig.as_ref()
            .try_into()
            .map_err(|_| SignatureError::Signing("not a 64-byte signature".into()))
    }
}

impl SignerDirectory for TestMesh {
    fn check_key(&self, key: &KeyId, node: &str) -> Result<(), SignatureError> {
        let book = self.lock();
        let hex_key = hex::encode(key);
        let Some((signer, _, _)) = book.issued.get(key) else {
            return Err(SignatureError::UnknownKey(hex_key));
        };
        if self.strict && !book.known.contains(key) {
            return Err(SignatureError::UnknownKey(hex_key));
        }
        if book.revoked.contains(key) {
            return Err(SignatureError::Revoked(hex_key));
        }
        if signer != node {
            return Err(SignatureError::WrongNode {
                signer: signer.clone(),
                node: node.to_owned(),
            });
        }
        Ok(())
    }

    fn verify_signature(
        &self,
        key: &KeyId,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), SignatureError> {
        let public = self
            .lock()
            .issued
            .get(key)
            .map(|(_, p, _)| p.clone())
            .ok_or_else(|| SignatureError::UnknownKey(hex::encode(key)))?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(message, signature)
            .map_err(|_| SignatureError::BadSignature)
    }

    fn certificate(&self, key: &KeyId) -> Option<Vec<u8>> {
        self.lock().issued.get(key).map(|(_, _, c)| c.clone())
    }

    fn learn(&self, der: &[u8]) -> Result<KeyId, String> {
        let id = key_id_of(der);
        let mut book = self.lock();
        if book.issued.get(&id).is_none_or(|(_, _, c)| c != der) {
            return Err("not issued by this test mesh".into());
        }
        book.known.insert(id);
        Ok(id)
    }
}
