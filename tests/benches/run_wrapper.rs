//! The `labmesh run` benchmark (issue #15): run with
//!
//! ```sh
//! cargo build --release -p labmesh && cargo bench -p labmesh-tests --bench run_wrapper
//! ```
//!
//! (a) Wall time of `labmesh run -- true` against `true` run directly, median of
//!     `LABMESH_BENCH_RUNS` (default 50) each, interleaved. Goal: ≤ 20 ms added.
//! (b) Passing `LABMESH_BENCH_MB` (default 100) MB of output, 80-byte lines, through
//!     `labmesh run -- cat FILE` into a pipe against `cat FILE` into the same pipe, median of 5
//!     each. Goal: ≤ 1.10 × cat. The wrapper also redacts, parses and logs every line, so this
//!     is the whole cost a build pays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labmesh_tests::{env_num, labmesh};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `cmd`, draining its stdout through a pipe (as a terminal pager or CI log would), and
/// returns the wall time.
fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    while out.read(&mut buf).unwrap() > 0 {}
    assert!(child.wait().unwrap().success());
    t.elapsed()
}

fn wrapped(data: &Path, args: &[&str]) -> Command {
    let mut cmd = labmesh(data);
    cmd.args(["--name", "bench", "run", "--kind", "build", "--"])
        .args(args);
    cmd
}

fn main() {
    let note = if cfg!(debug_assertions) {
        " ✘ (debug build: run with cargo bench)"
    } else {
        ""
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runs = env_num("LABMESH_BENCH_RUNS", 50);

    // (a) start-up and recording overhead.
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    timed(&mut wrapped(&data, &["true"])); // first run creates the data dir: not counted
    for _ in 0..runs {
        direct.push(timed(&mut Command::new("true")));
        through.push(timed(&mut wrapped(&data, &["true"])));
    }
    let (d, w) = (median(direct), median(through));
    let added = w.saturating_sub(d);
    println!(
        "run -- true: {:.1} ms median vs true {:.1} ms: +{:.1} ms (goal ≤ 20 ms) {}{note}",
        w.as_secs_f64() * 1e3,
        d.as_secs_f64() * 1e3,
        added.as_secs_f64() * 1e3,
        if added <= Duration::from_millis(20) {
            "✔"
        } else {
            "✘"
        }
    );

    // (b) throughput.
    let mb = env_num("LABMESH_BENCH_MB", 100);
    let file = dir.path().join("output.txt");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let line = format!(
            "{:<79}\n",
            "   Compiling some-crate v1.2.3 (/home/user/src/some-crate)"
        );
        for _ in 0..(mb * 1_000_000 / 80) {
            f.write_all(line.as_bytes()).unwrap();
        }
    }
    let path = file.display().to_string();
    let (mut cat, mut through) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        cat.push(timed(Command::new("cat").arg(&path)));
        through.push(timed(&mut wrapped(&data, &["cat", &path])));
    }
    let (c, w) = (median(cat), median(through));
    let ratio = w.as_secs_f64() / c.as_secs_f64();
    println!(
        "{mb} MB through run -- cat: {:.2} s vs cat {:.2} s: {ratio:.2}× ({:.0} MB/s; goal ≤ 1.10×) {}{note}",
        w.as_secs_f64(),
        c.as_secs_f64(),
        mb as f64 / w.as_secs_f64(),
        if ratio <= 1.10 { "✔" } else { "✘" }
    );
}
