use super::test_keys::TestMesh;
use super::*;

fn unsigned(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!("{{\"id\":\"e{i}\",\"node\":\"ws\",\"payload\":{{\"n\":{i}}}}}\n").into_bytes()
        })
        .collect()
}

fn top_sig(bytes: &[u8]) -> Option<String> {
    let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes).ok()?;
    doc.get(SIG_FIELD)?.as_str().map(str::to_owned)
}

#[test]
fn every_file_of_every_batch_size_verifies_alone_and_splits_back_byte_for_byte() {
    let mesh = TestMesh::new();
    let (signer, _) = mesh.issue("ws");
    for n in [1, 2, 3, 5, 63, 64, 65, 130] {
        let files = unsigned(n);
        let signed = sign_files(&*signer, "ws", &files).expect("signs");
        assert_eq!(signed.len(), n);
        let roots = VerifiedRoots::default();
        for ((bytes, text), original) in signed.iter().zip(&files) {
            let (back, found) = split(bytes).expect("has a sig member");
            assert_eq!(&back, original, "the unsigned bytes come back exactly");
            assert_eq!(found, text);
            assert_eq!(
                top_sig(bytes).as_deref(),
                Some(text.as_str()),
                "still one JSON object"
            );
            verify(bytes, "ws", Some(text), &mesh, &roots).expect("verifies");
            assert_eq!(key_of(bytes), Some(signer.key_id()));
        }
    }
}

#[test]
fn a_changed_byte_a_moved_leaf_or_another_node_is_refused() {
    let mesh = TestMesh::new();
    let (signer, _) = mesh.issue("ws");
    let (_, _) = mesh.issue("nas");
    let signed = sign_files(&*signer, "ws", &unsigned(4)).expect("signs");
    let roots = VerifiedRoots::default();
    let (bytes, text) = &signed[1];
    // Content changed after signing (the payload number).
    let tampered = String::from_utf8(bytes.clone())
        .expect("utf8")
        .replace("\"n\":1", "\"n\":7");
    assert_eq!(
        verify(tampered.as_bytes(), "ws", Some(text), &mesh, &roots),
        Err(SignatureError::BadSignature)
    );
    // Another file's signature field on this content.
    let other = split(&signed[2].0).expect("sig").1.to_owned();
    let swapped = attach(
        &split(bytes).expect("sig").0,
        &SigField::parse(&other).expect("parses"),
    );
    assert!(verify(&swapped, "ws", Some(&other), &mesh, &roots).is_err());
    // The same file claimed for another node.
    assert!(matches!(
        verify(bytes, "nas", Some(text), &mesh, &roots),
        Err(SignatureError::WrongNode { .. })
    ));
    // No signature at all, and a sig that is not the last member.
    assert_eq!(
        verify(&unsigned(1)[0], "ws", None, &mesh, &roots),
        Err(SignatureError::Unsigned)
    );
    let moved = format!("{{\"sig\":\"{text}\",\"node\":\"ws\"}}");
    assert!(matches!(
        verify(moved.as_bytes(), "ws", Some(text), &mesh, &roots),
        Err(SignatureError::Malformed(_))
    ));
}

#[test]
fn a_cached_root_still_answers_to_revocation() {
    let mesh = TestMesh::new();
    let (signer, _) = mesh.issue("ws");
    let signed = sign_files(&*signer, "ws", &unsigned(3)).expect("signs");
    let roots = VerifiedRoots::default();
    verify(&signed[0].0, "ws", Some(&signed[0].1), &mesh, &roots).expect("verifies");
    mesh.revoke(&signer.key_id());
    assert!(matches!(
        verify(&signed[1].0, "ws", Some(&signed[1].1), &mesh, &roots),
        Err(SignatureError::Revoked(_))
    ));
}

#[test]
fn a_strict_directory_knows_only_what_it_learned() {
    let mesh = TestMesh::new();
    let (signer, cert) = mesh.issue("ws");
    let view = mesh.strict_view();
    let signed = sign_files(&*signer, "ws", &unsigned(1)).expect("signs");
    let roots = VerifiedRoots::default();
    assert!(matches!(
        verify(&signed[0].0, "ws", Some(&signed[0].1), &view, &roots),
        Err(SignatureError::UnknownKey(_))
    ));
    assert_eq!(view.learn(&cert), Ok(signer.key_id()));
    assert!(view.learn(b"made up").is_err());
    verify(&signed[0].0, "ws", Some(&signed[0].1), &view, &roots).expect("verifies once learned");
}

#[test]
fn the_field_has_one_spelling() {
    let mesh = TestMesh::new();
    let (signer, _) = mesh.issue("ws");
    let signed = sign_files(&*signer, "ws", &unsigned(5)).expect("signs");
    let text = &signed[4].1;
    let field = SigField::parse(text).expect("parses");
    assert_eq!(&field.to_text(), text);
    let parts: Vec<&str> = text.split('.').collect();
    let variants = [
        text.replacen("1.", "2.", 1),
        text.replacen(parts[1], &parts[1].to_uppercase(), 1),
        format!(
            "{}.{}.04.{}.{}.{}",
            parts[0], parts[1], parts[3], parts[4], parts[5]
        ),
        format!(
            "{}.{}.{}.{}.{}.{}=",
            parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]
        ),
        format!("{}.{}.5.5.{}.{}", parts[0], parts[1], parts[4], parts[5]),
        format!(
            "{}.{}.{}.65.{}.{}",
            parts[0], parts[1], parts[2], parts[4], parts[5]
        ),
        format!(
            "{}.{}.{}.{}..{}",
            parts[0], parts[1], parts[2], parts[3], parts[5]
        ),
        format!("{text}.x"),
    ];
    for v in variants {
        assert!(SigField::parse(&v).is_err(), "{v} must not parse");
    }
}

#[test]
fn split_never_panics_on_short_or_odd_input() {
    for input in [
        &b""[..],
        b"}",
        b"\"}",
        b" \n",
        b",\"sig\":\"\"}",
        b"{,\"sig\":\"a\\\"}",
        b"{\"a\":1,\"sig\":\"x\"}}",
    ] {
        let _ = split(input);
        let _ = key_of(input);
    }
    assert_eq!(
        split(b"{\"a\":1,\"sig\":\"x\"}\n"),
        Some((b"{\"a\":1}\n".to_vec(), "x"))
    );
}
