//! Unit tests of `rule_toml.rs` (kept apart so the module reads as one idea).
use super::*;
use crate::rules::Condition;

#[test]
fn the_defaults_parse_and_hold_the_seed_thresholds() {
    let set = RuleSet::defaults().unwrap();
    let RuleKind::Threshold(disk) = &set.get("disk_used").unwrap().kind else {
        panic!()
    };
    assert_eq!((disk.warn, disk.critical), (Some(85.0), Some(95.0)));
    let RuleKind::Threshold(steal) = &set.get("cpu_steal").unwrap().kind else {
        panic!()
    };
    assert_eq!(
        (steal.warn, steal.critical, steal.clear),
        (Some(5.0), Some(15.0), 3.0)
    );
    assert_eq!(steal.condition(4.0), Condition::Hold);
    assert_eq!(steal.condition(2.9), Condition::Clear);
    assert_eq!(steal.condition(16.0), Condition::Raise(Severity::Critical));
    let RuleKind::Threshold(mem) = &set.get("memory_available").unwrap().kind else {
        panic!()
    };
    assert!(mem.below);
    assert_eq!(mem.condition(9.0), Condition::Raise(Severity::Warning));
    assert!(set.get("node_offline").is_some() && set.get("disk_full_soon").is_some());
}

#[test]
fn user_rules_override_fields_disable_and_add() {
    let user = parse_rules_toml(
        r#"
        [[rule]]
        name = "disk_used"
        warn = 80
        [[rule]]
        name = "gpu_vram"
        enabled = false
        [[rule]]
        name = "backup"
        kind = "expect"
        expect = "backup.sh every 24h grace 1h"
        "#,
    )
    .unwrap();
    let set = RuleSet::with_overrides(user).unwrap();
    let RuleKind::Threshold(disk) = &set.get("disk_used").unwrap().kind else {
        panic!()
    };
    assert_eq!(
        (disk.warn, disk.critical),
        (Some(80.0), Some(95.0)),
        "critical kept from the default"
    );
    assert!(set.get("gpu_vram").is_none());
    let RuleKind::Expect(e) = &set.get("backup").unwrap().kind else {
        panic!()
    };
    assert_eq!(
        (e.source.as_str(), e.every, e.grace),
        (
            "backup.sh",
            Duration::from_secs(86400),
            Duration::from_secs(3600)
        )
    );
}

#[test]
fn mistakes_are_refused_with_the_rule_and_field_named() {
    let err = parse_rules_toml("[[rule]]\nname = \"x\"\nthreshhold = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `threshhold`"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    let bad = |text: &str| {
        RuleSet::with_overrides(parse_rules_toml(text).unwrap())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        bad("[[rule]]\nname = \"x\"\n"),
        "rule `x`: a new rule needs `kind` (threshold, event, node_offline, expect or disk_full)"
    );
    assert!(
        bad("[[rule]]\nname = \"x\"\nkind = \"threshold\"\nmetric = \"cpu\"\nwarn = 1\n")
            .contains("`cpu` is not a metric")
    );
    assert!(
        bad("[[rule]]\nname = \"x\"\nkind = \"node_offline\"\nmetric = \"cpu_percent\"\n")
            .contains("field `metric` does not apply to a `node_offline` rule")
    );
    assert!(bad("[[rule]]\nname = \"disk_used\"\nclear = 99\n").contains("healthy side"));
    assert!(
        bad("[[rule]]\nname = \"b\"\nkind = \"expect\"\nexpect = \"backup daily\"\n")
            .contains("NAME every 24h grace 1h")
    );
    assert!(bad("[[rule]]\nname = \"disk_used\"\nfor = \"5 parsecs\"\n").contains("field `for`"));
}
