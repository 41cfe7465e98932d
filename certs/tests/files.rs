//! The CA, node identities, join bundles and revocation records on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use certs::{
    CertError, JoinBundle, MeshCa, NodeIdentity, RevocationList, SignedRevocation, fingerprint,
    read_mesh_name,
};
use chrono::{DateTime, Duration, Utc};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn ips() -> Vec<IpAddr> {
    vec![
        IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]
}

#[test]
fn ca_save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    assert!(
        MeshCa::load(&certs).unwrap().is_none(),
        "no ca.key: not a CA"
    );

    let ca = MeshCa::generate("home", certs::DEFAULT_CA_VALIDITY_DAYS).unwrap();
    ca.save(&certs).unwrap();
    assert_eq!(mode(&certs.join("ca.key")), 0o600);
    assert_eq!(mode(&certs), 0o700);
    assert_eq!(mode(&certs.join("ca.pem")), 0o644);
    assert_eq!(
        fs::read_to_string(certs.join("mesh-name")).unwrap(),
        "home\n"
    );
    assert_eq!(read_mesh_name(&certs).unwrap().as_deref(), Some("home"));
    // No temporary files left behind.
    let mut names: Vec<_> = fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.key", "ca.pem", "mesh-name"]);

    let loaded = MeshCa::load(&certs).unwrap().expect("CA present");
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    assert_eq!(loaded.mesh_name(), "home");
    assert_eq!(loaded.fingerprint(), ca.fingerprint());
    let ten_years = Utc::now() + Duration::days(3649);
    assert!(loaded.not_after() > ten_years);
    // The loaded CA signs with the same key: its certificates pass the saved CA.
    let id = loaded.issue("nas", &ips(), 30).unwrap();
    NodeIdentity::from_pems(ca.cert_pem(), id.cert_pem(), id.key_pem()).unwrap();
    // Saving again is fine; saving another mesh's CA over it is not.
    loaded.save(&certs).unwrap();
    let err = MeshCa::generate("home", 10)
        .unwrap()
        .save(&certs)
        .unwrap_err();
    assert!(matches!(err, CertError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");
    // The key never shows in Debug output.
    assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));
}

#[test]
fn ca_load_names_the_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::generate("home", 10).unwrap();
    ca.save(dir.path()).unwrap();
    fs::remove_file(dir.path().join("ca.pem")).unwrap();
    let err = MeshCa::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("ca.pem") && err.contains("restore ca.pem"),
        "{err}"
    );

    // A key from another CA next to this certificate.
    ca.save(dir.path()).unwrap();
    let other = tempfile::tempdir().unwrap();
    MeshCa::generate("home", 10)
        .unwrap()
        .save(other.path())
        .unwrap();
    fs::copy(other.path().join("ca.key"), dir.path().join("ca.key")).unwrap();
    let err = MeshCa::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn issued_certificates_are_recorded_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::generate("home", 100).unwrap();
    // Never saved: nothing to record into, and no error.
    ca.issue("early", &[], 5).unwrap();
    ca.save(dir.path()).unwrap();
    let beta1 = ca.issue("beta", &ips(), 10).unwrap();
    let alpha = ca.issue("alpha", &[], 30).unwrap();
    let beta2 = ca.issue("beta", &ips(), 20).unwrap();

    let list = MeshCa::list_issued(dir.path()).unwrap();
    let summary: Vec<_> = list
        .iter()
        .map(|c| (c.node.as_str(), c.serial_hex.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("alpha", alpha.serial_hex()),
            ("beta", beta1.serial_hex()),
            ("beta", beta2.serial_hex()),
        ]
    );
    for (entry, id) in list.iter().zip([&alpha, &beta1, &beta2]) {
        assert_eq!(entry.fingerprint_hex, id.fingerprint_hex());
        assert_eq!(entry.serial_hex.len(), 32);
        let not_after = DateTime::parse_from_rfc3339(&entry.not_after).unwrap();
        assert_eq!(not_after, id.not_after());
        assert_eq!(
            entry.path,
            dir.path()
                .join("issued")
                .join(format!("{}-{}.pem", id.node(), id.serial_hex()))
        );
        assert_eq!(fs::read_to_string(&entry.path).unwrap(), id.cert_pem());
    }
    // The certificate content: SANs, validity, serial.
    assert_eq!(beta1.ips(), ips().as_slice());
    let skew = Utc::now() - beta1.not_before();
    assert!(skew > Duration::minutes(59) && skew < Duration::minutes(61));
    let days = beta1.not_after() - Utc::now();
    assert!(days > Duration::days(9) && days <= Duration::days(10));
    assert_ne!(beta1.serial_hex(), beta2.serial_hex());
    assert_eq!(beta1.fingerprint(), fingerprint(beta1.cert_der()));
    // An empty certs dir lists nothing.
    assert!(
        MeshCa::list_issued(&dir.path().join("nope"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn issue_refuses_bad_node_names_and_days() {
    let ca = MeshCa::generate("home", 10).unwrap();
    let err = ca.issue("Bad_Name", &[], 10).unwrap_err();
    assert!(matches!(err, CertError::InvalidNodeName { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("\"Bad_Name\"") && msg.contains("host name"),
        "{msg}"
    );
    assert!(ca.issue("../etc", &[], 10).is_err());
    assert!(ca.issue("10.0.0.1", &[], 10).is_err());
    assert!(ca.issue("ok", &[], 0).is_err());
    assert!(MeshCa::generate("home lab", 10).is_err());
}

#[test]
fn node_identity_save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    assert!(NodeIdentity::load(&certs).unwrap().is_none());
    let ca = MeshCa::generate("home", 10).unwrap();
    let id = ca.issue("nas", &ips(), 10).unwrap();
    id.save(&certs).unwrap();
    assert_eq!(mode(&certs.join("node.key")), 0o600);
    assert_eq!(mode(&certs.join("node.pem")), 0o644);
    let loaded = NodeIdentity::load(&certs).unwrap().unwrap();
    assert_eq!(loaded.node(), "nas");
    assert_eq!(loaded.fingerprint(), id.fingerprint());
    assert_eq!(loaded.serial_hex(), id.serial_hex());
    assert_eq!(loaded.not_after(), id.not_after());
    assert_eq!(loaded.ca_pem(), ca.cert_pem());
    assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));

    // Half an identity is an error that names the missing file.
    fs::remove_file(certs.join("node.key")).unwrap();
    let err = NodeIdentity::load(&certs).unwrap_err().to_string();
    assert!(
        err.contains("node.key") && err.contains("node.pem"),
        "{err}"
    );

    // A key that belongs to another certificate.
    let other = ca.issue("nas", &[], 10).unwrap();
    fs::write(certs.join("node.key"), other.key_pem()).unwrap();
    let err = NodeIdentity::load(&certs).unwrap_err().to_string();
    assert!(
        err.contains("node.key") && err.contains("does not match"),
        "{err}"
    );

    // A certificate from another mesh's CA.
    let foreign = MeshCa::generate("home", 10)
        .unwrap()
        .issue("nas", &[], 10)
        .unwrap();
    fs::write(certs.join("node.pem"), foreign.cert_pem()).unwrap();
    fs::write(certs.join("node.key"), foreign.key_pem()).unwrap();
    let err = NodeIdentity::load(&certs).unwrap_err().to_string();
    assert!(err.contains("not issued by"), "{err}");
}

#[test]
fn bundle_write_read_install_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::generate("home", 10).unwrap();
    let id = ca.issue("laptop", &ips(), 10).unwrap();
    let bundle = JoinBundle::new(ca.mesh_name(), &id);
    let path = dir.path().join("laptop.join.json");
    bundle.write(&path, false).unwrap();
    assert_eq!(mode(&path), 0o600);
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["labmesh_join_bundle"], 1);
    assert_eq!(json["mesh"], "home");
    assert_eq!(json["node"], "laptop");

    // Not overwritten unless asked.
    let other = JoinBundle::new("home", &ca.issue("laptop", &[], 10).unwrap());
    let err = other.write(&path, false).unwrap_err();
    assert!(matches!(err, CertError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("laptop.join.json"), "{err}");
    let (read, warnings) = JoinBundle::read(&path).unwrap();
    assert_eq!(read, bundle, "the refused write left the file alone");
    assert!(warnings.is_empty(), "{warnings:?}");
    other.write(&path, true).unwrap();
    assert_eq!(JoinBundle::read(&path).unwrap().0, other);
    bundle.write(&path, true).unwrap();

    // Readable by others: still read, with a warning.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let (_, warnings) = JoinBundle::read(&path).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("0644") && warnings[0].contains("chmod 600"),
        "{warnings:?}"
    );

    let certs = dir.path().join("node-data").join("certs");
    let installed = bundle.install(&certs).unwrap();
    assert_eq!(installed.fingerprint(), id.fingerprint());
    assert_eq!(mode(&certs.join("node.key")), 0o600);
    assert_eq!(mode(&certs.join("node.pem")), 0o644);
    assert_eq!(
        fs::read_to_string(certs.join("ca.pem")).unwrap(),
        ca.cert_pem()
    );
    assert_eq!(read_mesh_name(&certs).unwrap().as_deref(), Some("home"));
    assert!(!certs.join("ca.key").exists());
    let loaded = NodeIdentity::load(&certs).unwrap().unwrap();
    assert_eq!(loaded.node(), "laptop");
    assert_eq!(loaded.key_pem(), id.key_pem());
    assert!(!format!("{bundle:?}").contains("PRIVATE KEY"));
}

/// Writes a bundle file by hand, bypassing `write`'s validation.
fn write_raw(path: &Path, json: &serde_json::Value) {
    fs::write(path, serde_json::to_string(json).unwrap()).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn raw_bundle(ca: &MeshCa, id: &NodeIdentity) -> serde_json::Value {
    serde_json::json!({
        "labmesh_join_bundle": 1,
        "mesh": ca.mesh_name(),
        "node": id.node(),
        "ca_pem": ca.cert_pem(),
        "cert_pem": id.cert_pem(),
        "key_pem": id.key_pem(),
    })
}

#[test]
fn bundle_read_refuses_a_key_that_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::generate("home", 10).unwrap();
    let id = ca.issue("laptop", &[], 10).unwrap();
    let other = ca.issue("laptop", &[], 10).unwrap();
    let mut json = raw_bundle(&ca, &id);
    json["key_pem"] = other.key_pem().into();
    let path = dir.path().join("b.json");
    write_raw(&path, &json);
    let err = JoinBundle::read(&path).unwrap_err();
    assert!(matches!(err, CertError::Bundle { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("join bundle {}:", path.display()))
            && msg.contains("key_pem")
            && msg.contains("does not match")
            && msg.contains("new bundle"),
        "{msg}"
    );
    // `write` refuses to produce such a file in the first place.
    let bad = JoinBundle {
        key_pem: other.key_pem().to_string(),
        ..JoinBundle::new("home", &id)
    };
    assert!(bad.write(&dir.path().join("c.json"), false).is_err());
    assert!(!dir.path().join("c.json").exists());
}

#[test]
fn bundle_read_refuses_wrong_marker_version_and_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.json");
    let ca = MeshCa::generate("home", 10).unwrap();
    let id = ca.issue("laptop", &[], 10).unwrap();
    let read_err = |json: serde_json::Value| {
        write_raw(&path, &json);
        JoinBundle::read(&path).unwrap_err().to_string()
    };

    let mut json = raw_bundle(&ca, &id);
    let obj = json.as_object_mut().unwrap();
    obj.remove("labmesh_join_bundle");
    obj.insert("labmesh_bundle".into(), 1.into());
    let msg = read_err(json);
    assert!(
        msg.contains("not a labmesh join bundle (no \"labmesh_join_bundle\" field)"),
        "{msg}"
    );

    let mut json = raw_bundle(&ca, &id);
    json["labmesh_join_bundle"] = 2.into();
    let msg = read_err(json);
    assert!(
        msg.contains("format version 2 is not supported") && msg.contains("upgrade labmesh"),
        "{msg}"
    );

    let mut json = raw_bundle(&ca, &id);
    json["labmesh_join_bundle"] = "yes".into();
    assert!(read_err(json).contains("must be a format version number"));

    let mut json = raw_bundle(&ca, &id);
    json.as_object_mut().unwrap().remove("cert_pem");
    assert!(read_err(json).contains("missing field `cert_pem`"));

    fs::write(&path, "labmesh_join_bundle = 1").unwrap();
    assert!(
        JoinBundle::read(&path)
            .unwrap_err()
            .to_string()
            .contains("not valid JSON")
    );

    // A certificate not issued by the bundle's CA.
    let other_ca = MeshCa::generate("home", 10).unwrap();
    let mut json = raw_bundle(&ca, &id);
    json["ca_pem"] = other_ca.cert_pem().into();
    let msg = read_err(json);
    assert!(msg.contains("not issued by its ca_pem"), "{msg}");

    // A node name that disagrees with the certificate.
    let mut json = raw_bundle(&ca, &id);
    json["node"] = "desktop".into();
    let msg = read_err(json);
    assert!(
        msg.contains("\"desktop\"") && msg.contains("\"laptop\""),
        "{msg}"
    );

    // A PEM that is not one.
    let mut json = raw_bundle(&ca, &id);
    json["cert_pem"] = "hello".into();
    let msg = read_err(json);
    assert!(
        msg.contains("cert_pem") && msg.contains("BEGIN CERTIFICATE"),
        "{msg}"
    );

    // An expired certificate.
    let now = Utc::now();
    let old = ca
        .issue_with_validity(
            "laptop",
            &[],
            now - Duration::days(3),
            now - Duration::days(1),
        )
        .unwrap();
    let msg = read_err(raw_bundle(&ca, &old));
    assert!(msg.contains("expired at"), "{msg}");
}

#[test]
fn install_refuses_a_dir_holding_another_meshs_ca() {
    let dir = tempfile::tempdir().unwrap();
    MeshCa::generate("mine", 10)
        .unwrap()
        .save(dir.path())
        .unwrap();
    let theirs = MeshCa::generate("theirs", 10).unwrap();
    let bundle = JoinBundle::new("theirs", &theirs.issue("nas", &[], 10).unwrap());
    let err = bundle.install(dir.path()).unwrap_err().to_string();
    assert!(err.contains("CA key of another mesh"), "{err}");
    assert!(!dir.path().join("node.pem").exists());
}

#[test]
fn revocation_records_verify_and_tampering_fails() {
    let ca = MeshCa::generate("home", 10).unwrap();
    let id = ca.issue("laptop", &[], 10).unwrap();
    let at = DateTime::parse_from_rfc3339("2026-05-12T12:05:00Z")
        .unwrap()
        .to_utc();
    let record = ca
        .sign_revocation(id.cert_pem(), "laptop stolen", at)
        .unwrap();
    assert_eq!(record.fingerprint, id.fingerprint_hex());
    assert_eq!(record.node, "laptop");
    assert_eq!(record.serial, id.serial_hex());
    assert_eq!(record.revoked_at, "2026-05-12T12:05:00Z");
    record.verify(ca.cert_pem()).unwrap();

    // It travels as JSON and still verifies.
    let json = serde_json::to_string(&record).unwrap();
    let back: SignedRevocation = serde_json::from_str(&json).unwrap();
    back.verify(ca.cert_pem()).unwrap();

    // Each field is covered by the signature.
    let other = ca.issue("desktop", &[], 10).unwrap();
    let tampered: Vec<SignedRevocation> = vec![
        SignedRevocation {
            fingerprint: other.fingerprint_hex(),
            ..record.clone()
        },
        SignedRevocation {
            node: "desktop".into(),
            ..record.clone()
        },
        SignedRevocation {
            serial: other.serial_hex(),
            ..record.clone()
        },
        SignedRevocation {
            reason: "laptop stolen!".into(),
            ..record.clone()
        },
        SignedRevocation {
            revoked_at: "2026-05-12T12:05:01Z".into(),
            ..record.clone()
        },
        SignedRevocation {
            signature: {
                let mut s = record.signature.clone();
                let last = if s.ends_with('0') { "1" } else { "0" };
                s.replace_range(s.len() - 1.., last);
                s
            },
            ..record.clone()
        },
    ];
    let list = RevocationList::new();
    for bad in tampered {
        let err = bad.verify(ca.cert_pem()).unwrap_err();
        assert!(matches!(err, CertError::Revocation { .. }), "{err}");
        assert!(list.add(bad, ca.cert_pem()).is_err());
    }
    assert!(list.is_empty());
    let err = SignedRevocation {
        reason: "x".into(),
        ..record.clone()
    }
    .verify(ca.cert_pem())
    .unwrap_err()
    .to_string();
    assert!(err.contains("does not verify"), "{err}");

    // Another mesh's CA cannot vouch for it, nor sign one for our certificate.
    let other_ca = MeshCa::generate("home", 10).unwrap();
    assert!(record.verify(other_ca.cert_pem()).is_err());
    let err = other_ca
        .sign_revocation(id.cert_pem(), "x", at)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not issued by"), "{err}");
    let forged = other_ca
        .sign_revocation_for(&id.fingerprint(), "laptop", &id.serial_hex(), "x", at)
        .unwrap();
    assert!(list.add(forged, ca.cert_pem()).is_err());
    assert!(!list.is_revoked(&id.fingerprint()));
}

#[test]
fn revocation_list_adds_once_and_shares_across_clones() {
    let ca = MeshCa::generate("home", 10).unwrap();
    let id = ca.issue("laptop", &[], 10).unwrap();
    let list = RevocationList::new();
    let shared = list.clone();
    let first = ca
        .sign_revocation(id.cert_pem(), "stolen", Utc::now())
        .unwrap();
    assert!(list.add(first.clone(), ca.cert_pem()).unwrap());
    assert!(!list.add(first.clone(), ca.cert_pem()).unwrap());
    assert!(shared.is_revoked(&id.fingerprint()));
    assert!(!shared.is_revoked(&[0u8; 32]));
    assert_eq!(shared.records(), vec![first.clone()]);

    // A second record for the same certificate: every node keeps the earliest, whatever the
    // arrival order.
    let earlier = ca
        .sign_revocation(id.cert_pem(), "lost", Utc::now() - Duration::days(1))
        .unwrap();
    assert!(!list.add(earlier.clone(), ca.cert_pem()).unwrap());
    let other_order = RevocationList::new();
    other_order.add(earlier.clone(), ca.cert_pem()).unwrap();
    other_order.add(first, ca.cert_pem()).unwrap();
    assert_eq!(list.records(), vec![earlier.clone()]);
    assert_eq!(other_order.records(), list.records());

    // Expired certificates can still be revoked.
    let now = Utc::now();
    let old = ca
        .issue_with_validity("old", &[], now - Duration::days(3), now - Duration::days(1))
        .unwrap();
    let rec = ca.sign_revocation(old.cert_pem(), "", now).unwrap();
    assert!(list.add(rec, ca.cert_pem()).unwrap());
    assert_eq!(list.len(), 2);
}

#[test]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<CertError>();
    check::<MeshCa>();
    check::<NodeIdentity>();
    check::<RevocationList>();
    check::<certs::Rejections>();
}
