//! The mesh identity as the event store's signer and directory: events are signed with this
//! node's certificate key and checked against the certificates of the mesh CA
//! (`certs::signing`), in the format `sync::signature` defines.

use std::sync::Arc;

use certs::{EventKey, NodeIdentity, SignerBook, SignerRefusal};
use sync::EventTrust;
use sync::signature::{EventSigner, KeyId, SignatureError, SignerDirectory};

struct MeshSigner(EventKey);

impl EventSigner for MeshSigner {
    fn key_id(&self) -> KeyId {
        self.0.key_id()
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignatureError> {
        self.0.sign(message).map_err(SignatureError::Signing)
    }
}

struct MeshDirectory(Arc<SignerBook>);

fn refusal(key: &KeyId, node: &str, r: SignerRefusal) -> SignatureError {
    match r {
        SignerRefusal::Unknown => SignatureError::UnknownKey(hex::encode(key)),
        SignerRefusal::WrongNode { signer } => SignatureError::WrongNode {
            signer,
            node: node.to_owned(),
        },
        SignerRefusal::Revoked => SignatureError::Revoked(hex::encode(key)),
        SignerRefusal::BadSignature => SignatureError::BadSignature,
    }
}

impl SignerDirectory for MeshDirectory {
    fn check_key(&self, key: &KeyId, node: &str) -> Result<(), SignatureError> {
        self.0.check(key, node).map_err(|r| refusal(key, node, r))
    }

    fn verify_signature(
        &self,
        key: &KeyId,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), SignatureError> {
        self.0
            .verify(key, message, signature)
            .map_err(|r| refusal(key, "", r))
    }

    fn certificate(&self, key: &KeyId) -> Option<Vec<u8>> {
        self.0.certificate(key)
    }

    fn learn(&self, der: &[u8]) -> Result<KeyId, String> {
        self.0.learn(der).map_err(|e| e.to_string())
    }
}

/// The store's trust for a node with this identity. `certs_dir` keeps learned certificates
/// (`None` keeps them in memory only). `signing` is false for tools that only check.
pub fn event_trust(
    identity: &NodeIdentity,
    certs_dir: Option<&std::path::Path>,
    signing: bool,
) -> Result<(Arc<EventTrust>, Arc<SignerBook>), certs::CertError> {
    let book = SignerBook::open(identity, certs_dir)?;
    let signer: Option<Arc<dyn EventSigner>> = if signing {
        Some(Arc::new(MeshSigner(EventKey::from_identity(identity)?)))
    } else {
        None
    };
    let directory: Arc<dyn SignerDirectory> = Arc::new(MeshDirectory(book.clone()));
    Ok((Arc::new(EventTrust::new(signer, directory)), book))
}
