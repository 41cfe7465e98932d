//! Tests of settings resolution (beside `settings.rs` to keep both short): durations, the
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
            Some(rest) if rest_is_assignment(rest) || rest == "[[check]]" => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg: ConfigFile =
        toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert!(cfg.name.is_some() && cfg.data_dir.is_some() && cfg.api_addr.is_some());
    assert!(
        cfg.store.max_event_bytes.is_some()
            && cfg.store.rescan_interval.is_some()
            && cfg.store.settle.is_some()
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
    let flags = FloorArgs {
        min_free_mem: Some("1G".into()),
        ..FloorArgs::default()
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
    let flags = FloorArgs {
        min_free_vram: Some("lots".into()),
        ..FloorArgs::default()
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
