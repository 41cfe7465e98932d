//! A partition with real agents in network namespaces (issue 6): both sides fire the same
//! alert, so each side's alerter may page once (the accepted duplicate), but never more; after
//! the heal the merged ledger stops any further copy, and the resolution is sent once.
//!
//! Five hosts split 2 | 3. The mesh's alerter (alpha, highest priority) is on the minority side;
//! the majority elects bravo. The alert is a missed periodic job (`labmesh expect`), declared
//! before the split and falling due during it, so each side raises it on its own, as its own
//! episode: the hard case for the ledger after the heal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use labmesh_tests::netns::{Hosts, can_run, liveness};
use labmesh_tests::receiver::{alert_bodies, recording_server_on};
use labmesh_tests::{Agent, events, issue_bundle_granting, labmesh, run, stderr, wait_until};
use serde_json::Value;

const RULE: &str = "expect:backup.sh";
/// Host i runs NAMES[i] with PRIORITIES[i]; hosts 0 and 1 are one side, 2..5 the other.
const NAMES: [&str; 5] = ["alpha", "delta", "bravo", "charlie", "echo"];
const PRIORITIES: [&str; 5] = ["10", "0", "5", "0", "0"];
const SIDE_A: [usize; 2] = [0, 1];
const SIDE_B: [usize; 3] = [2, 3, 4];

fn senders(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| b["sender"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn alerter(agent: &Agent) -> Value {
    agent.get_json("/v1/status")["alerter"].clone()
}

/// Starts the five agents, alpha first (the CA), each with `config` and its priority.
fn start(hosts: &Hosts, dir: &Path, config: &Path) -> (Vec<PathBuf>, Vec<Agent>) {
    let data: Vec<PathBuf> = NAMES.iter().map(|n| dir.join(n)).collect();
    let seed = format!("{}:7370", hosts.ip(0));
    let mut agents = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let mut extra = vec!["--alerter-priority".to_owned(), PRIORITIES[i].to_owned()];
        if i > 0 {
            let bundle = dir.join(format!("{name}.json"));
            issue_bundle_granting(&data[0], NAMES[0], name, &bundle, PRIORITIES[i]);
            extra.extend([
                "--join".to_owned(),
                bundle.display().to_string(),
                "--seed".to_owned(),
                seed.clone(),
            ]);
        }
        agents.push(hosts.agent_with_config(i, &data[i], name, &extra, config));
    }
    (data, agents)
}

fn sees_alive(agent: &Agent, others: impl Iterator<Item = usize>) -> bool {
    others
        .into_iter()
        .all(|j| liveness(agent, NAMES[j]).as_deref() == Some("alive"))
}

#[test]
fn both_sides_page_at_most_once_and_after_the_heal_nothing_more_and_one_resolution() {
    if !can_run() {
        return;
    }
    let hosts = Hosts::create(NAMES.len());
    let dir = tempfile::tempdir().unwrap();
    // The root namespace is reachable from every host through the bridge, on both sides.
    let (receiver, seen) = recording_server_on(&format!("{}.254", hosts.subnet));
    let config = dir.path().join("labmesh.toml");
    std::fs::write(
        &config,
        format!(
            "[alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"2s\"\n\
             repeat_interval = \"1h\"\n\n\
             [[rule]]\nname = \"node_offline\"\nenabled = false\n\n\
             [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n"
        ),
    )
    .unwrap();
    let (data, agents) = start(&hosts, dir.path(), &config);
    let all = 0..NAMES.len();
    let timeout = Duration::from_secs(60);
    for (i, a) in agents.iter().enumerate() {
        wait_until(&format!("{} sees everyone", NAMES[i]), timeout, || {
            sees_alive(a, all.clone().filter(|j| *j != i))
        });
        wait_until(&format!("{} follows alpha", NAMES[i]), timeout, || {
            alerter(a) == "alpha"
        });
    }

    // The job is declared on alpha and replicates before the split. Its window (30 s) leaves
    // time for both sides to notice the split and elect before it falls due.
    let declared = run(labmesh(&data[0]).args([
        "--api-addr",
        &agents[0].api.to_string(),
        "expect",
        "backup.sh",
        "--every",
        "30s",
        "--grace",
        "1s",
    ]));
    assert!(declared.status.success(), "{}", stderr(&declared));
    for (i, a) in agents.iter().enumerate() {
        wait_until(&format!("{} knows the job", NAMES[i]), timeout, || {
            a.get_json("/v1/expectations")["expectations"]
                .as_array()
                .is_some_and(|x| x.iter().any(|x| x["name"] == "backup.sh"))
        });
    }

    hosts.partition(&SIDE_A, &SIDE_B, true);
    for i in SIDE_B {
        wait_until(&format!("{} elects bravo", NAMES[i]), timeout, || {
            alerter(&agents[i]) == "bravo"
        });
    }
    for i in SIDE_A {
        wait_until(
            &format!("{} lost the other side", NAMES[i]),
            timeout,
            || {
                SIDE_B
                    .iter()
                    .all(|j| liveness(&agents[i], NAMES[*j]).as_deref() != Some("alive"))
                    && alerter(&agents[i]) == "alpha"
            },
        );
    }
    assert!(
        alert_bodies(&seen, None, "firing", RULE).is_empty(),
        "the job fell due before both sides had elected: the test needs a longer window"
    );

    // The window passes on both sides: each records its own episode and may page once.
    for (i, side) in [(0, "alpha"), (2, "bravo")] {
        wait_until(&format!("{side} records the alert"), timeout, || {
            events(&data[i], "alert_firing")
                .iter()
                .any(|e| e["payload"]["rule"] == RULE)
        });
    }
    wait_until("a firing notification", timeout, || {
        !alert_bodies(&seen, None, "firing", RULE).is_empty()
    });
    // Past group_wait and group_interval on both sides: a second copy per side would be here.
    std::thread::sleep(Duration::from_secs(6));
    let during = senders(&alert_bodies(&seen, None, "firing", RULE));
    eprintln!("firing notifications during the split, by sender: {during:?}");
    for side in ["alpha", "bravo"] {
        let n = during.iter().filter(|s| *s == side).count();
        assert!(
            n <= 1,
            "{side} paged {n} times during the split: {during:?}"
        );
    }
    assert!(
        (1..=2).contains(&during.len()),
        "one page per side at most: {during:?}"
    );
    assert!(
        during.iter().all(|s| s == "alpha" || s == "bravo"),
        "only the two alerters page: {during:?}"
    );

    hosts.partition(&SIDE_A, &SIDE_B, false);
    for (i, a) in agents.iter().enumerate() {
        wait_until(
            &format!("{} sees everyone again", NAMES[i]),
            timeout,
            || sees_alive(a, all.clone().filter(|j| *j != i)),
        );
        wait_until(
            &format!("{} follows alpha again", NAMES[i]),
            timeout,
            || alerter(a) == "alpha",
        );
    }
    // Both ledgers meet: each side's notification_sent reaches the other side's alerter.
    for i in [0, 2] {
        wait_until(&format!("{}'s merged ledger", NAMES[i]), timeout, || {
            let sent = events(&data[i], "notification_sent");
            during.iter().all(|s| sent.iter().any(|e| e["node"] == *s))
        });
    }
    // Past settle, group_wait and several group_intervals: a copy after the heal would be here.
    std::thread::sleep(Duration::from_secs(8));
    let after_heal = senders(&alert_bodies(&seen, None, "firing", RULE));
    assert_eq!(after_heal, during, "a page after the heal");

    // The job reports: the alert (both sides' episodes) resolves with one notification.
    let out = run(labmesh(&data[3]).args([
        "--name",
        NAMES[3],
        "emit",
        "--type",
        "backup_done",
        "--source",
        "backup.sh",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the resolved notification", timeout, || {
        !alert_bodies(&seen, None, "resolved", RULE).is_empty()
    });
    std::thread::sleep(Duration::from_secs(6));
    let resolved = senders(&alert_bodies(&seen, None, "resolved", RULE));
    assert_eq!(resolved, ["alpha"], "one resolution, from the one alerter");
    assert_eq!(senders(&alert_bodies(&seen, None, "firing", RULE)), during);
    drop(agents);
}
