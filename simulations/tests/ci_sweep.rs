//! CI's small sweep: three shipped scenarios (a split brain, an alerter dying mid-notification,
//! a rolling restart with a clock step) over seeds 1..=20 each, every invariant checked. About
//! 25 s of CPU in a debug build. The large sweep (>= 1000 seeds, every scenario) is the
//! documented command in docs/simulation.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use simulations::{Scenario, run_seed};

const SCENARIOS: [&str; 3] = [
    "split-brain-5",
    "alerter-crash-mid-notification",
    "rolling-restarts",
];
const SEEDS: u64 = 20;

#[test]
fn three_scenarios_over_twenty_seeds_break_no_invariant() {
    let runs: Vec<(Scenario, u64)> = SCENARIOS
        .iter()
        .flat_map(|name| {
            let s = Scenario::load(name).unwrap();
            (1..=SEEDS).map(move |seed| (s.clone(), seed))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while let Some((s, seed)) = runs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = run_seed(s, *seed).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    if let Some(f) = r.failure() {
                        failures.lock().unwrap().push(f);
                    }
                }
            });
        }
    });
    assert_eq!(done.load(Ordering::Relaxed), runs.len());
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
