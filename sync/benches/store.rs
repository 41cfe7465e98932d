//! Event store benchmark: `cargo bench -p sync --bench store`.
//!
//! Prints, in one run and on one disk (a temp dir under `target/`):
//! - durable single-event writes per second: `EventStore::append` in process, the `labmesh emit`
//!   command (one process per event), the durable shell library `deploy/lib/events.sh`, and the
//!   seed-style shell `emit_event` (the baseline: date/uuid/hostname forks and `cat >`, no fsync);
//! - `EventStore::append_batch` events per second (group commit, batches of 1000);
//! - origin signatures: `EventStore::append_batch` with and without signing, and storing the
//!   same files received from a peer (`store_bytes_batch`, what catch-up does) with and without
//!   verifying them (goal: each costs at most 10 %);
//! - index rebuild (`EventStore::open`) time over 100k and 1M event files.
//!
//! Each line gives the absolute figure and its ratio against the baseline measured in the same
//! run. `LABMESH_BENCH_SIZES=100000` limits the rebuild sizes (default `100000,1000000`);
//! `LABMESH_BENCH_QUICK=1` shrinks everything for a smoke run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use sync::event::{NewEvent, Severity};
use sync::store::{EventStore, EventWriter, StoreConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn scratch(name: &str) -> PathBuf {
    let dir = repo().join("target/bench-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn new_event(i: usize) -> NewEvent {
    let mut payload = serde_json::Map::new();
    payload.insert("seq".into(), i.into());
    payload.insert("version".into(), "1.0".into());
    NewEvent::new("deployment_started", Severity::Info, "bench.sh")
        .service("mosquitto")
        .correlation_id(&format!("deploy-{}", i / 10))
        .payload(payload)
}

const SEED_STYLE_LIB: &str = r#"
# The seed's emit_event as users wrote it before labmesh: one fork per field, written in place.
emit_event() {
  local type="$1" severity="$2" source="$3" service="$4" cid="$5" payload="$6"
  local ts node uuid day dir
  ts=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
  node=$(hostname)
  uuid=$(cat /proc/sys/kernel/random/uuid)
  day=$(date -u +%Y-%m-%d)
  dir="$EVENTS_DIR/$day/$node"
  mkdir -p "$dir"
  cat > "$dir/$(date -u +%Y%m%dT%H%M%S.%3NZ)_${type}_${uuid}.json" <<EOF
{"timestamp":"$ts","node":"$node","type":"$type","severity":"$severity","source":"$source","service":"$service","correlation_id":"$cid","payload":$payload}
EOF
}
"#;

fn shell_rate(lib: &str, n: usize, env: &[(&str, &Path)]) -> Option<f64> {
    let script = format!(
        "{lib}\nfor i in $(seq {n}); do emit_event deployment_started info bench.sh mosquitto deploy-$i '{{\"version\": \"1.0\"}}' >/dev/null || exit 1; done"
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let status = cmd.status().ok()?;
    status.success().then(|| rate(n, start.elapsed()))
}

fn labmesh_bin() -> Option<PathBuf> {
    for profile in ["release", "debug"] {
        let p = repo().join("target").join(profile).join("labmesh");
        if p.exists() {
            return Some(p);
        }
    }
    None
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing we need.
    let quick = std::env::var_os("LABMESH_BENCH_QUICK").is_some();
    let n_single = if quick { 50 } else { 500 };
    println!("== event store benchmark ==");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {cores} cores; disk of {}",
        repo().join("target").display()
    );

    // Durable single writes.
    let dir = scratch("single");
    let mut cfg = StoreConfig::new(&dir, "benchnode");
    cfg.max_event_bytes = 65536;
    let (store, _) = EventStore::open(cfg).unwrap();
    let start = Instant::now();
    for i in 0..n_single {
        store.append(new_event(i)).unwrap();
    }
    let in_process = rate(n_single, start.elapsed());
    drop(store);

    let seed_dir = scratch("seed-style");
    let seed =
        shell_rate(SEED_STYLE_LIB, n_single / 5, &[("EVENTS_DIR", &seed_dir)]).unwrap_or(f64::NAN);

    let lib_dir = scratch("shell-lib");
    let lib_path = repo().join("deploy/lib/events.sh");
    let shell_lib = if lib_path.exists() {
        shell_rate(
            &format!("source '{}'", lib_path.display()),
            n_single / 5,
            &[("LABMESH_DATA_DIR", &lib_dir)],
        )
    } else {
        None
    };

    let cli = labmesh_bin().map(|bin| {
        let dir = scratch("cli");
        let n = n_single / 5;
        let start = Instant::now();
        for i in 0..n {
            let ok = Command::new(&bin)
                .args([
                    "emit",
                    "--type",
                    "deployment_started",
                    "--source",
                    "bench.sh",
                    "--service",
                    "mosquitto",
                ])
                .arg("--correlation-id")
                .arg(format!("deploy-{i}"))
                .args(["--payload", r#"{"version": "1.0"}"#])
                .env("LABMESH_DATA_DIR", &dir)
                .env("LABMESH_NAME", "benchnode")
                .env("LABMESH_CONFIG", "/dev/null")
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "labmesh emit failed");
        }
        rate(n, start.elapsed())
    });

    println!();
    println!("durable single-event writes (baseline: seed-style shell emit_event, no fsync):");
    println!("  seed-style shell emit_event     {seed:>10.0} events/s   1.00x (baseline)");
    println!(
        "  EventStore::append (durable)    {in_process:>10.0} events/s  {:>5.1}x  (goal >= 10x)",
        in_process / seed
    );
    match cli {
        Some(r) => println!(
            "  labmesh emit, one process each {r:>10.0} events/s  {:>5.1}x",
            r / seed
        ),
        None => println!("  labmesh emit: binary not built (cargo build -p labmesh), skipped"),
    }
    match shell_lib {
        Some(r) => println!(
            "  deploy/lib/events.sh (durable) {r:>10.0} events/s  {:>5.1}x",
            r / seed
        ),
        None => println!("  deploy/lib/events.sh: not found or failed, skipped"),
    }

    // Group commit.
    let dir = scratch("batch");
    let writer = EventWriter::new(&dir, 65536);
    let n_batch = if quick { 5_000 } else { 100_000 };
    let base = Utc.with_ymd_and_hms(2026, 5, 12, 0, 0, 0).unwrap();
    let events: Vec<_> = (0..n_batch)
        .map(|i| {
            new_event(i)
                .into_event(
                    &format!("node{}", i % 5),
                    base + chrono::Duration::milliseconds(i as i64 * 7),
                )
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    for chunk in events.chunks(1000) {
        writer.write_batch(chunk).unwrap();
    }
    let batch_rate = rate(n_batch, start.elapsed());
    println!();
    println!("group commit:");
    println!(
        "  EventStore::append_batch (1000/batch) {batch_rate:>10.0} events/s  {:>6.1}x the durable single append  (goal >= 20000/s)",
        batch_rate / in_process
    );

    signing(quick, base);

    // Index rebuild.
    let sizes: Vec<usize> = std::env::var("LABMESH_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if quick {
                vec![10_000]
            } else {
                vec![100_000, 1_000_000]
            }
        });
    println!();
    println!("index rebuild (EventStore::open over N files, 30 days x 10 nodes, page cache warm):");
    let dir = scratch("rebuild");
    let writer = EventWriter::new(&dir, 65536);
    let mut written = 0usize;
    let mut first: Option<(usize, f64)> = None;
    for &n in &sizes {
        let start = Instant::now();
        while written < n {
            let chunk: Vec<_> = (written..n.min(written + 5000))
                .map(|i| {
                    let day = (i % 30) as i64;
                    let at = base
                        + chrono::Duration::days(day)
                        + chrono::Duration::milliseconds((i / 30) as i64 * 13);
                    new_event(i)
                        .into_event(&format!("node{}", i % 10), at)
                        .unwrap()
                })
                .collect();
            writer.write_batch(&chunk).unwrap();
            written += chunk.len();
        }
        let fill = start.elapsed();
        let start = Instant::now();
        let (store, report) = EventStore::open(StoreConfig::new(&dir, "benchnode")).unwrap();
        let took = start.elapsed().as_secs_f64();
        assert_eq!(store.len(), n, "{report:?}");
        let per_sec = n as f64 / took;
        let ratio = first.map_or(1.0, |(n0, t0)| (took / t0) / (n as f64 / n0 as f64));
        first.get_or_insert((n, took));
        println!(
            "  {n:>8} files: {took:>7.2} s  ({per_sec:>8.0} files/s; time per file {:>5.2}x the smallest size's)  [written in {:.1} s]",
            ratio,
            fill.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(repo().join("target/bench-scratch"));
}

/// Best of three runs of `f` over fresh scratch folders (the first run also warms the disk).
fn best_rate(n: usize, mut f: impl FnMut(usize) -> Duration) -> f64 {
    (0..3).map(|round| rate(n, f(round))).fold(0.0, f64::max)
}

fn signing(quick: bool, base: chrono::DateTime<Utc>) {
    use std::sync::Arc;
    use sync::EventTrust;
    use sync::signature::test_keys::TestMesh;

    let n = if quick { 5_000 } else { 50_000 };
    let mesh = TestMesh::new();
    let (signer, _) = mesh.issue("benchnode");
    let events: Vec<_> = (0..n)
        .map(|i| {
            new_event(i)
                .into_event(
                    "benchnode",
                    base + chrono::Duration::milliseconds(i as i64 * 7),
                )
                .unwrap()
        })
        .collect();
    let trust = |signing: bool| {
        let signer: Option<Arc<dyn sync::signature::EventSigner>> =
            signing.then(|| signer.clone() as Arc<dyn sync::signature::EventSigner>);
        Some(Arc::new(EventTrust::new(signer, Arc::new(mesh.clone()))))
    };
    let open = |name: String, trust: Option<Arc<EventTrust>>| {
        let mut cfg = StoreConfig::new(scratch(&name), "benchnode");
        cfg.trust = trust;
        EventStore::open(cfg).unwrap().0
    };
    let append = |signing: bool| {
        best_rate(n, |round| {
            let store = open(
                format!("append-{signing}-{round}"),
                if signing { trust(true) } else { None },
            );
            let start = Instant::now();
            for chunk in events.chunks(1000) {
                store.append_batch(chunk).unwrap();
            }
            start.elapsed()
        })
    };
    let plain = append(false);
    let signed = append(true);
    // The files a peer would send: signed, read back from a store that wrote them.
    let source = open("source".into(), trust(true));
    for chunk in events.chunks(1000) {
        source.append_batch(chunk).unwrap();
    }
    let files: Vec<Vec<u8>> = source
        .query(&sync::Query::default())
        .iter()
        .map(|e| source.read_bytes(e).unwrap())
        .collect();
    assert_eq!(files.len(), n);
    let receive = |verifying: bool| {
        best_rate(n, |round| {
            let mut cfg = StoreConfig::new(scratch(&format!("recv-{verifying}-{round}")), "peer");
            if verifying {
                cfg.trust = Some(Arc::new(EventTrust::new(None, Arc::new(mesh.clone()))));
            }
            let store = EventStore::open(cfg).unwrap().0;
            let start = Instant::now();
            for chunk in files.chunks(500) {
                let out = store.store_bytes_batch(chunk).unwrap();
                assert!(out.iter().all(Result::is_ok));
            }
            start.elapsed()
        })
    };
    let unverified = receive(false);
    let verified = receive(true);
    // The crypto alone, off the disk: what signing and checking add per event.
    let unsigned: Vec<Vec<u8>> = events.iter().map(|e| e.to_file_bytes()).collect();
    let start = Instant::now();
    let signed_files = sync::signature::sign_files(&*signer, "benchnode", &unsigned).unwrap();
    let sign_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let roots = sync::signature::VerifiedRoots::default();
    let start = Instant::now();
    for (bytes, text) in &signed_files {
        sync::signature::verify(bytes, "benchnode", Some(text), &mesh, &roots).unwrap();
    }
    let verify_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!();
    println!("origin signatures ({n} events, best of 3; baseline: the same work unsigned):");
    println!("  append_batch, unsigned (baseline)      {plain:>10.0} events/s   1.00x");
    println!(
        "  append_batch, signed                   {signed:>10.0} events/s  {:>5.2}x  (goal >= 0.90x)",
        signed / plain
    );
    println!("  store_bytes_batch, unchecked (baseline) {unverified:>9.0} events/s   1.00x");
    println!(
        "  store_bytes_batch, verified            {verified:>10.0} events/s  {:>5.2}x  (goal >= 0.90x)",
        verified / unverified
    );
    println!(
        "  CPU alone: signing {sign_us:.2} us/event, checking {verify_us:.2} us/event ({:.1} % and {:.1} % of an unsigned append's {:.1} us)",
        100.0 * sign_us * plain / 1e6,
        100.0 * verify_us * unverified / 1e6,
        1e6 / plain
    );
}
