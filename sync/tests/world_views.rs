//! The world files' contents for hand-written scenarios: the seed's incident example, late
//! events, deployments, diagnostics, node availability, writing and checkpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sync::event::{Event, NewEvent, Severity, parse_timestamp};
use sync::world::{OrderKey, Views, WorldError, WorldState, ntp64_from_datetime, order_key};

fn event(at: &str, node: &str, ty: &str, sev: Severity, service: &str, cid: &str) -> Event {
    event_with(at, node, ty, sev, service, cid, json!({}))
}

fn event_with(
    at: &str,
    node: &str,
    ty: &str,
    sev: Severity,
    service: &str,
    cid: &str,
    payload: Value,
) -> Event {
    let Value::Object(payload) = payload else {
        panic!("payload must be an object")
    };
    NewEvent::new(ty, sev, "test")
        .service(service)
        .correlation_id(cid)
        .payload(payload)
        .into_event(node, parse_timestamp(at).unwrap())
        .unwrap()
}

fn world(events: &[Event]) -> WorldState {
    WorldState::from_events(events)
}

/// Pretty bytes of a value, to compare field order as well as content.
fn text(value: &Value) -> String {
    String::from_utf8(Views::to_bytes(value)).unwrap()
}

fn seed_events() -> Vec<Event> {
    vec![
        event(
            "2026-05-12T12:05:00Z",
            "saturn",
            "service_unhealthy",
            Severity::Error,
            "mosquitto",
            "hc-1",
        ),
        event(
            "2026-05-12T12:06:00Z",
            "saturn",
            "service_unhealthy",
            Severity::Error,
            "mosquitto",
            "hc-1",
        ),
        event(
            "2026-05-12T12:10:00Z",
            "saturn",
            "service_recovered",
            Severity::Info,
            "mosquitto",
            "hc-1",
        ),
    ]
}

#[test]
fn seed_incident_example_is_reproduced_exactly() {
    let views = world(&seed_events()).views();
    // The seed's example, with the id computed from started_at (2026-05-12T12:05:00Z is
    // 1778587500 s; the seed's 1715518800 is 2024-05-12T13:00:00Z and contradicts its own
    // started_at).
    let expected = json!({
        "inc-1778587500-saturn-mosquitto": {
            "id": "inc-1778587500-saturn-mosquitto",
            "node": "saturn",
            "service": "mosquitto",
            "status": "resolved",
            "severity": "error",
            "started_at": "2026-05-12T12:05:00Z",
            "last_occurrence": "2026-05-12T12:06:00Z",
            "occurrence_count": 2,
            "events": [
                "2026-05-12T12:05:00Z",
                "2026-05-12T12:06:00Z"
            ],
            "correlation_id": "hc-1",
            "resolved_at": "2026-05-12T12:10:00Z"
        }
    });
    assert_eq!(text(&views.incidents), text(&expected));

    let service = &views.services["saturn/mosquitto"];
    assert_eq!(
        text(service),
        text(&json!({
            "node": "saturn",
            "service": "mosquitto",
            "status": "healthy",
            "since": "2026-05-12T12:10:00Z",
            "last_event_type": "service_recovered",
            "incident": null
        }))
    );
}

#[test]
fn services_link_the_active_incident_and_keep_since() {
    let evs = &seed_events()[..2];
    let views = world(evs).views();
    let service = &views.services["saturn/mosquitto"];
    assert_eq!(service["status"], "unhealthy");
    assert_eq!(service["since"], "2026-05-12T12:05:00Z");
    assert_eq!(service["incident"], "inc-1778587500-saturn-mosquitto");
    assert_eq!(
        views.incidents["inc-1778587500-saturn-mosquitto"]["status"],
        "open"
    );
    assert_eq!(
        views.incidents["inc-1778587500-saturn-mosquitto"]["resolved_at"],
        Value::Null
    );
}

#[test]
fn late_failure_lands_in_the_resolved_incident() {
    let mut evs = seed_events();
    let late = event(
        "2026-05-12T12:07:30Z",
        "saturn",
        "healthcheck_failed",
        Severity::Critical,
        "mosquitto",
        "hc-2",
    );
    let mut state = world(&evs);
    state.apply(&late);
    let views = state.views();
    let incidents = views.incidents.as_object().unwrap();
    assert_eq!(incidents.len(), 1, "{}", text(&views.incidents));
    let inc = &incidents["inc-1778587500-saturn-mosquitto"];
    assert_eq!(inc["status"], "resolved");
    assert_eq!(inc["occurrence_count"], 3);
    assert_eq!(inc["last_occurrence"], "2026-05-12T12:07:30Z");
    assert_eq!(inc["severity"], "critical");
    assert_eq!(
        inc["events"],
        json!([
            "2026-05-12T12:05:00Z",
            "2026-05-12T12:06:00Z",
            "2026-05-12T12:07:30Z"
        ])
    );
    assert_eq!(views.services["saturn/mosquitto"]["status"], "healthy");

    // The same views as if it had arrived on time.
    evs.insert(2, late);
    assert_eq!(world(&evs).views(), views);

    // A failure after the resolution is a new incident.
    state.apply(&event(
        "2026-05-12T12:20:00Z",
        "saturn",
        "service_unhealthy",
        Severity::Warning,
        "mosquitto",
        "hc-3",
    ));
    let views = state.views();
    let inc = &views.incidents["inc-1778588400-saturn-mosquitto"];
    assert_eq!(inc["status"], "open");
    assert_eq!(inc["occurrence_count"], 1);
    assert_eq!(inc["correlation_id"], "hc-3");
    assert_eq!(
        views.services["saturn/mosquitto"]["incident"],
        "inc-1778588400-saturn-mosquitto"
    );
}

#[test]
fn repeated_failures_collapse_into_one_incident() {
    let mut evs: Vec<Event> = (0..3)
        .map(|i| {
            event(
                &format!("2026-05-12T08:0{i}:00.250Z"),
                "jupiter",
                "service_unhealthy",
                Severity::Warning,
                "ollama",
                &format!("hc-{i}"),
            )
        })
        .collect();
    evs.push(event(
        "2026-05-12T08:09:00Z",
        "jupiter",
        "service_recovered",
        Severity::Info,
        "ollama",
        "hc-9",
    ));
    let views = world(&evs).views();
    let incidents = views.incidents.as_object().unwrap();
    assert_eq!(incidents.len(), 1);
    let (id, inc) = incidents.iter().next().unwrap();
    assert_eq!(id, "inc-1778572800-jupiter-ollama");
    assert_eq!(inc["status"], "resolved");
    assert_eq!(inc["occurrence_count"], 3);
    assert_eq!(inc["started_at"], "2026-05-12T08:00:00.250Z");
    assert_eq!(inc["correlation_id"], "hc-0");
    assert_eq!(inc["resolved_at"], "2026-05-12T08:09:00Z");
    // Applying everything again changes nothing.
    let mut again = world(&evs);
    again.apply_all(evs.iter().rev());
    assert_eq!(again, world(&evs));
}

#[test]
fn a_failed_then_successful_deployment_completes() {
    let started = event_with(
        "2026-05-12T12:00:00Z",
        "saturn",
        "deployment_started",
        Severity::Info,
        "mosquitto",
        "deploy-882",
        json!({"version": "2.0.18", "stage": "pull"}),
    );
    let failed = event_with(
        "2026-05-12T12:01:00Z",
        "saturn",
        "deployment_failed",
        Severity::Error,
        "mosquitto",
        "deploy-882",
        json!({"stage": "verify", "error": "port 1883 not bound"}),
    );
    let remediation = event(
        "2026-05-12T12:02:00Z",
        "saturn",
        "remediation_started",
        Severity::Info,
        "mosquitto",
        "deploy-882",
    );
    let completed = event(
        "2026-05-12T12:05:00Z",
        "saturn",
        "deployment_completed",
        Severity::Info,
        "mosquitto",
        "deploy-882",
    );

    let mut state = world(std::slice::from_ref(&started));
    let d = &state.views().deployments["deploy-882"];
    assert_eq!(d["status"], "running");
    assert_eq!(d["stage"], "pull");
    assert_eq!(d["finished_at"], Value::Null);

    state.apply(&failed);
    state.apply(&remediation);
    let views = state.views();
    assert_eq!(
        text(&views.deployments["deploy-882"]),
        text(&json!({
            "correlation_id": "deploy-882",
            "node": "saturn",
            "service": "mosquitto",
            "status": "failed",
            "started_at": "2026-05-12T12:00:00Z",
            "finished_at": "2026-05-12T12:01:00Z",
            "stage": "verify",
            "error": "port 1883 not bound",
            "events": [
                {"at": "2026-05-12T12:00:00Z", "type": "deployment_started", "node": "saturn", "stage": "pull"},
                {"at": "2026-05-12T12:01:00Z", "type": "deployment_failed", "node": "saturn",
                 "error": "port 1883 not bound", "stage": "verify"},
                {"at": "2026-05-12T12:02:00Z", "type": "remediation_started", "node": "saturn"}
            ]
        }))
    );
    assert_eq!(views.runtime_summary["deployments"]["failed"], 1);

    state.apply(&completed);
    let views = state.views();
    let d = &views.deployments["deploy-882"];
    assert_eq!(d["status"], "completed");
    assert_eq!(d["finished_at"], "2026-05-12T12:05:00Z");
    assert_eq!(d["stage"], Value::Null);
    assert_eq!(d["error"], Value::Null);
    assert_eq!(d["events"].as_array().unwrap().len(), 4);
    // The failure stays visible in the run's history.
    assert_eq!(d["events"][1]["error"], "port 1883 not bound");
    let summary = &views.runtime_summary["deployments"];
    assert_eq!(summary["completed"], 1);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["latest"]["correlation_id"], "deploy-882");
    assert_eq!(summary["latest"]["status"], "completed");

    // Arrival order does not matter.
    assert_eq!(
        world(&[completed, remediation, failed, started]).views(),
        views
    );

    // Remediation alone is not a deployment; events without a correlation id are not either.
    let other = world(&[
        event(
            "2026-05-12T12:00:00Z",
            "mars",
            "remediation_started",
            Severity::Info,
            "x",
            "fix-1",
        ),
        event(
            "2026-05-12T12:00:00Z",
            "mars",
            "deployment_started",
            Severity::Info,
            "x",
            "",
        ),
    ]);
    assert_eq!(other.views().deployments, json!({}));
}

#[test]
fn deployment_failed_attaches_diagnostics() {
    let unhealthy = event(
        "2026-05-12T12:00:00Z",
        "saturn",
        "service_unhealthy",
        Severity::Warning,
        "mosquitto",
        "hc-1",
    );
    let failed = event_with(
        "2026-05-12T12:01:00Z",
        "saturn",
        "deployment_failed",
        Severity::Error,
        "mosquitto",
        "deploy-882",
        json!({
            "stage": "verify",
            "error": "port 1883 not bound",
            "diagnostic_files": ["/opt/homelab/logs/deploy-882/verify.log"],
            "log": "/opt/homelab/logs/deploy-882.jsonl",
            "version": "2.0.18"
        }),
    );
    let views = world(&[unhealthy, failed.clone()]).views();
    let inc = &views.incidents["inc-1778587200-saturn-mosquitto"];
    assert_eq!(inc["occurrence_count"], 1, "attaching is not an occurrence");
    assert_eq!(inc["severity"], "error");
    assert_eq!(inc["correlation_id"], "hc-1");
    assert_eq!(
        text(&inc["diagnostics"]),
        text(&json!([{
            "at": "2026-05-12T12:01:00Z",
            "correlation_id": "deploy-882",
            "diagnostic_files": ["/opt/homelab/logs/deploy-882/verify.log"],
            "error": "port 1883 not bound",
            "log": "/opt/homelab/logs/deploy-882.jsonl",
            "stage": "verify"
        }]))
    );

    // Without an active incident a failed deployment opens one, as an occurrence.
    let views = world(&[failed]).views();
    let inc = &views.incidents["inc-1778587260-saturn-mosquitto"];
    assert_eq!(inc["status"], "open");
    assert_eq!(inc["occurrence_count"], 1);
    assert_eq!(inc["events"], json!(["2026-05-12T12:01:00Z"]));
    assert_eq!(inc["correlation_id"], "deploy-882");
    assert_eq!(inc["diagnostics"].as_array().unwrap().len(), 1);
    assert_eq!(views.services["saturn/mosquitto"]["status"], "unhealthy");

    // No diagnostics: the key is left out, as in the seed's example.
    let views = world(&seed_events()).views();
    assert!(
        views.incidents["inc-1778587500-saturn-mosquitto"]
            .get("diagnostics")
            .is_none()
    );
}

#[test]
fn node_availability_follows_the_peer_in_the_payload() {
    let peer = |p: &str| json!({ "peer": p });
    let evs = vec![
        event(
            "2026-05-12T11:00:00Z",
            "saturn",
            "heartbeat",
            Severity::Info,
            "all",
            "",
        ),
        event_with(
            "2026-05-12T12:00:00Z",
            "jupiter",
            "node_offline",
            Severity::Warning,
            "all",
            "",
            peer("saturn"),
        ),
        // A second observer reports the same loss later: the state began at the first report.
        event_with(
            "2026-05-12T12:00:40Z",
            "mars",
            "node_offline",
            Severity::Warning,
            "all",
            "",
            peer("saturn"),
        ),
        event_with(
            "2026-05-12T12:30:00Z",
            "jupiter",
            "node_left",
            Severity::Info,
            "all",
            "",
            peer("pluto"),
        ),
    ];
    let mut state = world(&evs);
    let nodes = state.views().nodes;
    assert_eq!(
        text(&nodes["saturn"]),
        text(&json!({
            "node": "saturn",
            "availability": "offline",
            "availability_since": "2026-05-12T12:00:00Z",
            "last_seen": "2026-05-12T11:00:00Z",
            "last_event_type": "heartbeat"
        }))
    );
    assert_eq!(nodes["pluto"]["availability"], "left");
    assert_eq!(nodes["pluto"]["last_seen"], Value::Null);
    assert_eq!(nodes["jupiter"]["availability"], "unknown");
    assert_eq!(nodes["jupiter"]["last_event_type"], "node_left");

    state.apply(&event_with(
        "2026-05-12T12:05:00Z",
        "jupiter",
        "node_online",
        Severity::Info,
        "all",
        "",
        peer("saturn"),
    ));
    // An event without a peer is the node speaking about itself (the seed's node_offline).
    state.apply(&event(
        "2026-05-12T12:06:00Z",
        "mars",
        "node_offline",
        Severity::Warning,
        "all",
        "",
    ));
    let views = state.views();
    assert_eq!(views.nodes["saturn"]["availability"], "online");
    assert_eq!(
        views.nodes["saturn"]["availability_since"],
        "2026-05-12T12:05:00Z"
    );
    assert_eq!(views.nodes["mars"]["availability"], "offline");
    let summary = &views.runtime_summary["nodes"];
    assert_eq!(
        *summary,
        json!({"total": 4, "online": 1, "offline": 1, "left": 1, "unknown": 1})
    );
}

#[test]
fn the_live_overlay_touches_only_nodes_json() {
    let state = world(&seed_events());
    let mut live = BTreeMap::new();
    live.insert("saturn".to_owned(), json!({"state": "alive"}));
    live.insert("venus".to_owned(), json!({"state": "suspect"}));
    let plain = state.views();
    let with_live = state.views_with_live(&live);
    assert_eq!(with_live.nodes["saturn"]["live"], json!({"state": "alive"}));
    assert_eq!(with_live.nodes["venus"]["availability"], "unknown");
    assert_eq!(
        with_live.nodes["venus"]["live"],
        json!({"state": "suspect"})
    );
    assert!(plain.nodes["saturn"].get("live").is_none());
    assert_eq!(with_live.services, plain.services);
    assert_eq!(with_live.deployments, plain.deployments);
    assert_eq!(with_live.incidents, plain.incidents);
    // The summary counts nodes, so it is computed without the overlay.
    assert_eq!(with_live.runtime_summary, plain.runtime_summary);
}

#[test]
fn runtime_summary_headlines() {
    let mut evs = seed_events();
    evs.push(event(
        "2026-05-12T13:00:00.5Z",
        "mars",
        "healthcheck_failed",
        Severity::Error,
        "grafana",
        "hc-7",
    ));
    let summary = world(&evs).views().runtime_summary;
    assert_eq!(
        text(&summary),
        text(&json!({
            "nodes": {"total": 2, "online": 0, "offline": 0, "left": 0, "unknown": 2},
            "services": {"total": 2, "healthy": 1, "unhealthy": 1,
                         "unhealthy_services": ["mars/grafana"]},
            "incidents": {"total": 2, "open": 1, "resolved": 1,
                          "open_ids": ["inc-1778590800-mars-grafana"]},
            "deployments": {"total": 0, "running": 0, "completed": 0, "failed": 0, "latest": null},
            "last_event_at": "2026-05-12T13:00:00.500Z"
        }))
    );
}

#[test]
fn hlc_orders_events_whose_clocks_disagree() {
    // saturn's wall clock runs 10 minutes fast: its recovery says 12:10 but its hybrid clock
    // (synchronised with the mesh) says 12:04, before jupiter's failure report at 12:05.
    let mut recovered = event(
        "2026-05-12T12:10:00Z",
        "saturn",
        "service_recovered",
        Severity::Info,
        "mosquitto",
        "hc-1",
    );
    let hlc = ntp64_from_datetime(parse_timestamp("2026-05-12T12:04:00Z").unwrap());
    recovered
        .extra
        .insert("hlc".into(), format!("{hlc:016x}/1f2e").into());
    assert_eq!(
        order_key(&recovered),
        OrderKey {
            time: hlc,
            id: recovered.id
        }
    );
    let unhealthy = event(
        "2026-05-12T12:05:00Z",
        "saturn",
        "service_unhealthy",
        Severity::Error,
        "mosquitto",
        "hc-1",
    );
    let views = world(&[recovered, unhealthy]).views();
    let inc = &views.incidents["inc-1778587500-saturn-mosquitto"];
    assert_eq!(inc["status"], "open");
    assert_eq!(views.services["saturn/mosquitto"]["status"], "unhealthy");
}

#[test]
fn views_are_written_atomically_and_only_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let world_dir = dir.path().join("world");
    let mut state = world(&seed_events());
    let written = state.views().write(&world_dir).unwrap();
    assert_eq!(written.len(), 5);
    for name in Views::FILE_NAMES {
        let bytes = std::fs::read(world_dir.join(name)).unwrap();
        assert!(bytes.ends_with(b"}\n"), "{name}");
        let _: Value = serde_json::from_slice(&bytes).unwrap();
    }
    let incidents = std::fs::read_to_string(world_dir.join("incidents.json")).unwrap();
    assert_eq!(incidents, text(&state.views().incidents));

    assert!(state.views().write(&world_dir).unwrap().is_empty());

    // A heartbeat moves nodes.json and the summary's last_event_at, nothing else.
    state.apply(&event(
        "2026-05-12T12:30:00Z",
        "saturn",
        "heartbeat",
        Severity::Info,
        "all",
        "",
    ));
    let written = state.views().write(&world_dir).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["nodes.json", "runtime-summary.json"]);
    // No temp files left behind.
    assert_eq!(std::fs::read_dir(&world_dir).unwrap().count(), 5);
}

#[test]
fn checkpoint_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/world.json");
    assert!(WorldState::load(&path).unwrap().is_none());

    let mut evs = seed_events();
    evs.push(event_with(
        "2026-05-12T12:01:00Z",
        "saturn",
        "deployment_failed",
        Severity::Error,
        "mosquitto",
        "deploy-882",
        json!({"stage": "verify", "error": "port 1883 not bound", "diagnostics": {"z": 1, "a": [1, 2]}}),
    ));
    evs.push(event_with(
        "2026-05-12T12:02:00Z",
        "jupiter",
        "node_offline",
        Severity::Warning,
        "all",
        "",
        json!({"peer": "saturn"}),
    ));
    let state = world(&evs);
    state.save(&path).unwrap();
    let loaded = WorldState::load(&path).unwrap().unwrap();
    assert_eq!(loaded, state);
    assert_eq!(loaded.hash(), state.hash());
    assert_eq!(loaded.views(), state.views());
    for ((_, a), (_, b)) in loaded.views().files().iter().zip(state.views().files()) {
        assert_eq!(Views::to_bytes(a), Views::to_bytes(b));
    }

    // Restart incrementally: the loaded state takes new (and already seen) events.
    let mut resumed = loaded;
    let late = event(
        "2026-05-12T12:20:00Z",
        "saturn",
        "service_unhealthy",
        Severity::Error,
        "mosquitto",
        "hc-4",
    );
    resumed.apply_all(evs.iter().chain([&late]));
    evs.push(late);
    assert_eq!(resumed, world(&evs));

    // A damaged or foreign checkpoint is refused with a way out.
    std::fs::write(
        &path,
        b"{\"format\":\"labmesh-world\",\"version\":99,\"state\":{}}",
    )
    .unwrap();
    let err = WorldState::load(&path).unwrap_err();
    assert!(matches!(err, WorldError::Checkpoint { .. }));
    assert!(err.to_string().contains("version 99"), "{err}");
    assert!(err.to_string().contains("delete it"), "{err}");
    std::fs::write(&path, b"{\"format\":").unwrap();
    assert!(matches!(
        WorldState::load(&path).unwrap_err(),
        WorldError::Checkpoint { .. }
    ));
}

#[test]
fn unknown_types_only_move_last_seen() {
    let mut state = world(&seed_events());
    let before = state.views();
    state.apply(&event(
        "2026-05-12T12:00:00Z",
        "saturn",
        "build_completed",
        Severity::Info,
        "mosquitto",
        "deploy-1",
    ));
    let after = state.views();
    assert_eq!(after.incidents, before.incidents);
    assert_eq!(after.services, before.services);
    assert_eq!(after.deployments, before.deployments);
    // Older than saturn's latest event: last_seen stays.
    assert_eq!(after.nodes, before.nodes);
}
