//! Tests of settings resolution (beside `mod.rs` to keep both short): durations, the
//! example config file, error messages.

use super::*;

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("-1s").is_err());
}

/// Every key documented in the example file is one the config parser knows.
#[test]
fn example_config_keys_are_all_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/labmesh.example.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest_is_assignment(rest)
                    || [
                        "[[check]]",
                        "[alerting]",
                        "[[receiver]]",
                        "[[route]]",
                        "[[rule]]",
                        "[[maintenance]]",
                    ]
                    .contains(&rest) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    // The example's CA file must exist for the check to validate: a real PEM in its place.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca_pem = certs::MeshCa::generate("example", 1)
        .map(|c| c.cert_pem().to_owned())
        .unwrap();
    std::fs::write(&ca, ca_pem).unwrap();
    assert!(uncommented.contains("/etc/labmesh/homelab-ca.pem"));
    let uncommented = uncommented.replace("/etc/labmesh/homelab-ca.pem", &ca.display().to_string());
    let cfg: ConfigFile =
        toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert!(cfg.name.is_some() && cfg.data_dir.is_some() && cfg.api_addr.is_some());
    assert!(cfg.api_allowed_hosts.is_some() && cfg.api_read_token.is_some());
    assert!(
        cfg.store.max_event_bytes.is_some()
            && cfg.store.rescan_interval.is_some()
            && cfg.store.settle.is_some()
            && cfg.store.max_clock_ahead.is_some()
    );
    assert!(cfg.log.format.is_some() && cfg.log.level.is_some());
    let m = &cfg.mesh;
    assert!(
        m.name.is_some()
            && m.gossip_addr.is_some()
            && m.advertise_addr.is_some()
            && m.seeds.is_some()
    );
    assert!(m.transient.is_some() && m.role.is_some() && m.alerter_priority.is_some());
    assert!(m.gossip_interval.is_some() && m.offline_after.is_some());
    assert!(cfg.probes.interval.is_some());
    let a = &cfg.admit;
    assert!(a.min_free_mem.is_some() && a.min_free_vram.is_some() && a.min_free_disk.is_some());
    let floors = resolve_floors(None, a, Floors::default(), &|k| k.to_owned()).unwrap();
    assert_eq!(
        floors,
        Floors::default(),
        "the example documents the defaults"
    );
    let w = &cfg.workers;
    assert!(w.default_interval.is_some() && w.missed_intervals.is_some());
    // Every example check is valid, and every check key appears in one of them.
    let defs = crate::checks::config::validate_all(&uncommented, &cfg.checks)
        .unwrap_or_else(|e| panic!("{}", crate::checks::config::describe(&uncommented, &e)));
    let kinds: Vec<&str> = defs.iter().map(|d| d.probe.kind()).collect();
    assert_eq!(kinds, ["http", "tcp", "command", "docker", "ttl"]);
    let web = cfg.checks[0].get_ref();
    assert!(web.service.is_some() && web.interval.is_some() && web.timeout.is_some());
    assert!(web.fall.is_some() && web.rise.is_some() && web.expect_status.is_some());
    assert!(web.body_contains.is_some());
    // The alerting tables: every knob documented, the receivers and route valid.
    let k = &cfg.alerting;
    assert!(k.settle.is_some() && k.group_wait.is_some() && k.group_interval.is_some());
    assert!(k.repeat_interval.is_some() && k.retry_initial.is_some() && k.retry_max.is_some());
    assert!(k.retry_give_up_after.is_some() && k.send_timeout.is_some());
    assert!(k.attempt_stale_after.is_some() && k.external_url.is_some());
    let t = alerting::AlertingToml {
        alerting: k.clone(),
        rule: cfg.rule.iter().map(|r| r.get_ref().clone()).collect(),
        receiver: cfg.receiver.iter().map(|r| r.get_ref().clone()).collect(),
        route: cfg.route.iter().map(|r| r.get_ref().clone()).collect(),
        maintenance: cfg
            .maintenance
            .iter()
            .map(|r| r.get_ref().clone())
            .collect(),
    };
    let mut c = alerting::Config::try_from(t).unwrap_or_else(|e| panic!("{e}"));
    c.pipeline.external_url = None;
    // An example, not a default: unset, every non-transient node may be alerter.
    assert_eq!(
        c.election.alerters.take(),
        Some(vec!["nas1".to_owned(), "ws".to_owned()])
    );
    assert_eq!(c.receivers.len(), 3);
    assert_eq!(
        c,
        alerting::Config::try_from(alerting::AlertingToml {
            receiver: cfg.receiver.iter().map(|r| r.get_ref().clone()).collect(),
            route: cfg.route.iter().map(|r| r.get_ref().clone()).collect(),
            rule: cfg.rule.iter().map(|r| r.get_ref().clone()).collect(),
            maintenance: cfg
                .maintenance
                .iter()
                .map(|r| r.get_ref().clone())
                .collect(),
            ..Default::default()
        })
        .unwrap(),
        "the example documents the default knobs"
    );
}

#[test]
fn secret_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "abc\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "[[receiver]]\nkind = \"telegram\"\ntoken_file = \"{}\"\nchat_id = 1\n",
        secret.display()
    );
    let file: ConfigFile = toml::from_str(&text).unwrap();
    let e = alerting_tables::validate_config(&text, &file).unwrap_err();
    assert!(
        e.contains("chmod 600") && e.contains(&secret.display().to_string()),
        "{e}"
    );
    assert!(e.starts_with("[[receiver]] at line 1"), "{e}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    alerting_tables::validate_config(&text, &file).unwrap();
    let bad = "[alerting]\ngroup_wait = \"soon\"\n";
    let file: ConfigFile = toml::from_str(bad).unwrap();
    let e = alerting_tables::validate_config(bad, &file).unwrap_err();
    assert!(e.contains("group_wait"), "{e}");
    let bad = "[[receiver]]\nkind = \"pager\"\n";
    let file: ConfigFile = toml::from_str(bad).unwrap();
    let e = alerting_tables::validate_config(bad, &file).unwrap_err();
    assert!(e.starts_with("[[receiver]] at line 1"), "{e}");
}

fn rest_is_assignment(rest: &str) -> bool {
    rest.split_once(" = ")
        .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
}

#[test]
fn floors_come_from_flags_then_file() {
    let file = AdmitSection {
        min_free_mem: Some("4G".into()),
        min_free_vram: Some("1G".into()),
        min_free_disk: None,
    };
    let flags = FloorOverrides {
        min_free_mem: Some("1G".into()),
        ..FloorOverrides::default()
    };
    let f = resolve_floors(Some(&flags), &file, Floors::default(), &|k| k.to_owned()).unwrap();
    assert_eq!(
        (f.mem, f.vram, f.disk),
        (1 << 30, 1 << 30, Floors::default().disk)
    );
    let bad = AdmitSection {
        min_free_disk: Some("5 parsecs".into()),
        ..AdmitSection::default()
    };
    let e = resolve_floors(None, &bad, Floors::default(), &|k| format!("`{k}`")).unwrap_err();
    assert!(e.0.starts_with("`admit.min_free_disk`: "), "{}", e.0);
    let flags = FloorOverrides {
        min_free_vram: Some("lots".into()),
        ..FloorOverrides::default()
    };
    let e = resolve_floors(Some(&flags), &file, Floors::default(), &|k| k.to_owned()).unwrap_err();
    assert!(e.0.starts_with("--min-free-vram: "), "{}", e.0);
}

#[test]
fn config_errors_name_line_and_key() {
    let text = "name = \"vm1\"\n[store]\nmax_event_byte = 5\n";
    let err = toml::from_str::<ConfigFile>(text).unwrap_err();
    let msg = toml_error(text, &err);
    assert!(
        msg.starts_with("line 3, column 1 (`max_event_byte`)"),
        "{msg}"
    );
    assert!(msg.contains("unknown field"), "{msg}");
}
