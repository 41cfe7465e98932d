//! Crash safety: SIGKILL a writer in the middle of durable batches, many times, then check
//! with `labmesh fsck` that no file is torn and that every acknowledged event is on disk.
//!
//! Cycles default to 200 (`LABMESH_CRASH_CYCLES` overrides). Each cycle starts
//! `labmesh emit --from-jsonl -` with a random batch size, feeds it events as fast as it takes
//! them, reads the paths it acknowledges (printed only after a batch's group commit), and
//! kills it after a random few milliseconds: mid-write, mid-fsync, mid-rename, or idle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use labmesh_tests::{labmesh, run};
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn fsck_clean(data: &std::path::Path) -> Value {
    let out = run(labmesh(data).args(["fsck", "--json"]));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fsck output: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["torn"], 0, "torn files after a crash: {report:#}");
    assert_eq!(report["invalid"], 0, "{report:#}");
    assert_eq!(report["misplaced"], 0, "{report:#}");
    assert_eq!(out.status.code(), Some(0));
    report
}

#[test]
fn sigkill_during_batches_never_tears_or_loses_an_acknowledged_event() {
    let cycles: usize = std::env::var("LABMESH_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("LABMESH_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test: {cycles} cycles, LABMESH_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut acked: BTreeSet<PathBuf> = BTreeSet::new();
    let mut killed_mid_stream = 0;
    for cycle in 0..cycles {
        let batch: usize = rng.random_range(1..=64);
        let mut child = labmesh(data)
            .args([
                "emit",
                "--from-jsonl",
                "-",
                "--batch-size",
                &batch.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            for seq in 0..20_000 {
                let line = format!(
                    "{{\"type\":\"crash_probe\",\"service\":\"c{cycle}\",\"correlation_id\":\"{cycle}-{seq}\",\"payload\":{{\"seq\":{seq},\"pad\":\"{}\"}}}}\n",
                    "x".repeat(seq % 200)
                );
                if stdin.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_micros(rng.random_range(500..40_000)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed_mid_stream += 1;
        }
        let _ = feeder.join();
        let paths = reader.join().unwrap();
        for p in &paths {
            assert!(
                p.exists(),
                "cycle {cycle} (seed {seed}): acknowledged {} is missing",
                p.display()
            );
        }
        acked.extend(paths);
        if cycle % 50 == 49 {
            fsck_clean(data);
        }
    }
    let report = fsck_clean(data);
    for p in &acked {
        assert!(
            p.exists(),
            "seed {seed}: acknowledged {} is missing",
            p.display()
        );
    }
    let ok = report["ok"].as_u64().unwrap() as usize;
    assert!(
        ok >= acked.len(),
        "{ok} files on disk < {} acknowledged",
        acked.len()
    );
    eprintln!(
        "crash test: {} acknowledged events over {cycles} kills ({killed_mid_stream} by signal), {} leftover temp files, {ok} event files",
        acked.len(),
        report["temp_files"]
    );
    assert!(
        killed_mid_stream > cycles / 2,
        "the writer mostly finished before the kill: the test proves little"
    );
}
