//! Event signing with the node key, and the signer book's checks.

use certs::{EventKey, MeshCa, RevocationList, SignerBook, SignerRefusal};

#[test]
fn a_node_signs_with_its_mesh_key_and_peers_learn_its_certificate() {
    let ca = MeshCa::generate("home", 365).unwrap();
    let ws = ca.issue("ws", &[], 365).unwrap();
    let nas = ca.issue("nas", &[], 365).unwrap();
    let key = EventKey::from_identity(&ws).unwrap();
    let signature = key.sign(b"a batch root").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let book = SignerBook::open(&nas, Some(dir.path())).unwrap();
    assert_eq!(book.check(&key.key_id(), "ws"), Err(SignerRefusal::Unknown));
    assert_eq!(book.learn(ws.cert_der().as_ref()).unwrap(), key.key_id());
    book.check(&key.key_id(), "ws").unwrap();
    book.verify(&key.key_id(), b"a batch root", &signature)
        .unwrap();
    assert_eq!(
        book.verify(&key.key_id(), b"another root", &signature),
        Err(SignerRefusal::BadSignature)
    );
    assert_eq!(
        book.check(&key.key_id(), "nas"),
        Err(SignerRefusal::WrongNode {
            signer: "ws".into()
        })
    );
    // Kept on disk: a restarted node still knows it.
    let again = SignerBook::open(&nas, Some(dir.path())).unwrap();
    again.check(&key.key_id(), "ws").unwrap();
    assert_eq!(
        again.certificate(&key.key_id()).as_deref(),
        Some(ws.cert_der().as_ref())
    );
}

#[test]
fn certificates_of_another_mesh_are_not_learned() {
    let ca = MeshCa::generate("home", 365).unwrap();
    let other = MeshCa::generate("home", 365).unwrap();
    let nas = ca.issue("nas", &[], 365).unwrap();
    let intruder = other.issue("ws", &[], 365).unwrap();
    let book = SignerBook::open(&nas, None).unwrap();
    let err = book.learn(intruder.cert_der().as_ref()).unwrap_err();
    assert!(
        err.to_string().contains("not issued by this mesh's CA"),
        "{err}"
    );
    assert!(book.learn(b"garbage").is_err());
    assert_eq!(book.len(), 1, "only its own certificate");
}

#[test]
fn a_revoked_certificate_signs_nothing_more() {
    let ca = MeshCa::generate("home", 365).unwrap();
    let ws = ca.issue("ws", &[], 365).unwrap();
    let nas = ca.issue("nas", &[], 365).unwrap();
    let book = SignerBook::open(&nas, None).unwrap();
    let id = book.learn(ws.cert_der().as_ref()).unwrap();
    let list = RevocationList::new();
    book.use_revocations(list.clone());
    let record = ca
        .sign_revocation(ws.cert_pem(), "stolen laptop", chrono::Utc::now())
        .unwrap();
    list.add(record, ws.ca_pem()).unwrap();
    assert_eq!(book.check(&id, "ws"), Err(SignerRefusal::Revoked));
}
