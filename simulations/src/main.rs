//! `cargo run -p simulations -- run SCENARIO [--seeds A..B] [--json]` and
//! `cargo run -p simulations -- sweep [--sizes 10,100] [--json]`.
//! `cargo run -p simulations -- fullstack [--scenario S] [--nodes N] [--seed N] [--json]`.

use std::process::ExitCode;

use simulations::{Report, Scenario, run_seed, sweep};

mod fullstack_cmd;

const USAGE: &str = "usage: simulations run SCENARIO [--seeds A..B] [--json]\n       simulations sweep [--sizes 10,100,300,1000] [--sync-only] [--json]\n       simulations fullstack [--scenario steady|split|crash|skew|oneway|restart|alerter-crash|offline-days] [--nodes 5] [--seeds A..B] [--loss 0.02] [--latency 1..5] [--json]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match real_main(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn seeds(spec: Option<&str>) -> Result<Vec<u64>, String> {
    let Some(spec) = spec else {
        return Ok(vec![1]);
    };
    let bad = || format!("--seeds wants A..B or N, got {spec}");
    match spec.split_once("..") {
        Some((a, b)) => {
            let a: u64 = a.parse().map_err(|_| bad())?;
            let b: u64 = b.trim_start_matches('=').parse().map_err(|_| bad())?;
            Ok((a..=b).collect())
        }
        None => Ok(vec![spec.parse().map_err(|_| bad())?]),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |x| x.to_string())
}

fn line(r: &Report) -> String {
    format!(
        "{:<18} {:>5} {:>6} {:>7} {:>9} {:>9} {:>11} {:>10.1} {:>6} {:>8} {:>8} {}",
        r.scenario,
        r.nodes,
        r.seed,
        r.events,
        opt(r.dissemination_p50_ms),
        opt(r.dissemination_p99_ms),
        opt(r.convergence_after_heal_ms),
        r.bytes_per_node_per_s,
        r.notifications,
        r.sessions,
        r.wall_ms,
        if r.ok() { "ok" } else { "FAIL" }
    )
}

/// Worst figures over the seeds, and how many failed.
fn summary(reports: &[Report]) -> String {
    let worst = |f: fn(&Report) -> Option<u64>| reports.iter().filter_map(f).max();
    let bytes = reports
        .iter()
        .map(|r| r.bytes_per_node_per_s)
        .fold(0.0, f64::max);
    let failed = reports.iter().filter(|r| !r.ok()).count();
    format!(
        "worst of {} runs: p50 {} ms, p99 {} ms, convergence {} ms, {bytes:.1} B/node/s, {} notifications max; {failed} failed",
        reports.len(),
        opt(worst(|r| r.dissemination_p50_ms)),
        opt(worst(|r| r.dissemination_p99_ms)),
        opt(worst(|r| r.convergence_after_heal_ms)),
        reports.iter().map(|r| r.notifications).max().unwrap_or(0)
    )
}

const HEADER: &str = "scenario           nodes   seed  events  p50_ms    p99_ms    converge_ms  B/node/s   notes sessions  wall_ms result";

fn real_main(args: &[String]) -> Result<bool, String> {
    let json = args.iter().any(|a| a == "--json");
    if args.first().map(String::as_str) == Some("fullstack") {
        return fullstack_cmd::run(args, json);
    }
    let reports: Vec<Report> = match args.first().map(String::as_str) {
        Some("run") => {
            let name = args.get(1).ok_or("run needs a scenario")?;
            let scenario = Scenario::load(name)?;
            let mut out = Vec::new();
            for seed in seeds(flag(args, "--seeds"))? {
                let r = run_seed(&scenario, seed)?;
                eprintln!(
                    "seed {seed}: {} in {} ms, trace {}",
                    if r.ok() { "ok" } else { "FAIL" },
                    r.wall_ms,
                    r.trace_hash
                );
                if let Some(f) = r.failure() {
                    eprintln!("{f}");
                }
                out.push(r);
            }
            out
        }
        Some("sweep") => {
            let sizes: Vec<usize> = match flag(args, "--sizes") {
                Some(s) => s
                    .split(',')
                    .map(|x| x.parse().map_err(|_| format!("bad size {x}")))
                    .collect::<Result<_, _>>()?,
                None => sweep::SIZES.to_vec(),
            };
            let sync_only = args.iter().any(|a| a == "--sync-only");
            let mut out = Vec::new();
            for n in sizes {
                let r = run_seed(&sweep::scenario(n, !sync_only), 1)?;
                eprintln!(
                    "N={n}: {} in {} ms",
                    if r.ok() { "ok" } else { "FAIL" },
                    r.wall_ms
                );
                if let Some(f) = r.failure() {
                    eprintln!("{f}");
                }
                out.push(r);
            }
            out
        }
        _ => return Err("unknown command".into()),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?
        );
    } else {
        println!("{HEADER}");
        for r in &reports {
            println!("{}", line(r));
        }
        if reports.len() > 1 {
            println!("{}", summary(&reports));
        }
    }
    Ok(reports.iter().all(Report::ok))
}
