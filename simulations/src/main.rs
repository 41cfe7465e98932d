//! `cargo run -p simulations -- run SCENARIO|ALL [--seeds A..B] [--jobs N] [--json]
//! [--plot PATH]`, `cargo run -p simulations -- sweep [--sizes 10,100] [--json]` and
//! `cargo run -p simulations -- fullstack [--scenario S] [--nodes N] [--seeds A..B] [--json]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use simulations::scenario::scenarios_dir;
use simulations::{Report, Scenario, plot, run_seed, sweep};

mod fullstack_cmd;

const USAGE: &str = "usage: simulations run SCENARIO|ALL [--seeds A..B] [--jobs N] [--json] [--plot PATH]\n       simulations sweep [--sizes 10,100,300,1000] [--sync-only] [--loss 0,0.05] [--loss-model message|packet] [--tick 500,1000] [--differ 1000,2000] [--json]\n       simulations fullstack [--scenario steady|split|crash|skew|oneway|restart|alerter-crash|offline-days] [--nodes 5] [--seeds A..B] [--loss 0.02] [--latency 1..5] [--warmup 3] [--json]\n       simulations fullstack --scenario FILE_OR_NAME [--speed K] [--seeds A..B] [--json]";

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

const HEADER: &str = "scenario                 nodes   seed  events detect_ms  p50_ms    p99_ms converge_ms false_susp  B/node/s  notes sessions  wall_ms result";

fn line(r: &Report) -> String {
    format!(
        "{:<24} {:>5} {:>6} {:>7} {:>9} {:>7} {:>9} {:>11} {:>10} {:>9.1} {:>6} {:>8} {:>8} {}",
        r.scenario,
        r.nodes,
        r.seed,
        r.events,
        opt(r.detection_p50_ms),
        opt(r.dissemination_p50_ms),
        opt(r.dissemination_p99_ms),
        opt(r.convergence_after_heal_ms),
        r.false_suspicions,
        r.bytes_per_node_per_s,
        r.notifications,
        r.sessions,
        r.wall_ms,
        if r.ok() { "ok" } else { "FAIL" }
    )
}

/// The `q` quantile over seeds of one figure.
fn over_seeds(reports: &[Report], q: f64, f: fn(&Report) -> Option<u64>) -> String {
    let mut v: Vec<u64> = reports.iter().filter_map(f).collect();
    v.sort_unstable();
    opt(simulations::sim::quantile(&v, q))
}

const SUMMARY_HEADER: &str = "scenario                 seeds  failed detect_p50 diss_p50_med diss_p99_p99 converge_p99 false_susp B/node/s_max notes_max";

/// One line per scenario: medians and 99th percentiles over its seeds.
fn summary(reports: &[Report]) -> String {
    let bytes = reports
        .iter()
        .map(|r| r.bytes_per_node_per_s)
        .fold(0.0, f64::max);
    format!(
        "{:<24} {:>5} {:>7} {:>10} {:>12} {:>12} {:>12} {:>10} {:>12.1} {:>9}",
        reports.first().map_or("", |r| r.scenario.as_str()),
        reports.len(),
        reports.iter().filter(|r| !r.ok()).count(),
        over_seeds(reports, 0.5, |r| r.detection_p50_ms),
        over_seeds(reports, 0.5, |r| r.dissemination_p50_ms),
        over_seeds(reports, 0.99, |r| r.dissemination_p99_ms),
        over_seeds(reports, 0.99, |r| r.convergence_after_heal_ms),
        reports.iter().map(|r| r.false_suspicions).sum::<u64>(),
        bytes,
        reports.iter().map(|r| r.notifications).max().unwrap_or(0),
    )
}

/// Every shipped scenario, by name.
fn all_scenarios() -> Result<Vec<String>, String> {
    let dir = scenarios_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// Where the plot goes when `--plot` is not given.
fn default_plot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/sim")
        .join(format!("{name}.svg"))
}

/// Runs `seeds` of `scenario` on `jobs` threads under a progress bar; reports in seed order.
fn run_seeds(scenario: &Scenario, seeds: &[u64], jobs: usize) -> Result<Vec<Report>, String> {
    let bar = ProgressBar::new(seeds.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:<24} [{bar:40}] {pos}/{len} seeds, {msg} ({elapsed}, eta {eta})",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    bar.set_prefix(scenario.name.clone());
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let out: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                    match run_seed(scenario, seed) {
                        Ok(r) => {
                            if let Some(f) = r.failure() {
                                failed.fetch_add(1, Ordering::Relaxed);
                                // A hidden bar (stderr not a terminal) prints nothing.
                                if bar.is_hidden() {
                                    eprintln!("{f}");
                                } else {
                                    bar.println(f);
                                }
                            }
                            bar.set_message(format!("{} failed", failed.load(Ordering::Relaxed)));
                            bar.inc(1);
                            out.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                        }
                        Err(e) => {
                            *first_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    bar.finish();
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut reports = out.into_inner().unwrap_or_else(|p| p.into_inner());
    reports.sort_by_key(|r| r.seed);
    Ok(reports)
}

fn real_main(args: &[String]) -> Result<bool, String> {
    let json = args.iter().any(|a| a == "--json");
    if args.first().map(String::as_str) == Some("fullstack") {
        return fullstack_cmd::run(args, json);
    }
    let mut groups: Vec<Vec<Report>> = Vec::new();
    match args.first().map(String::as_str) {
        Some("run") => {
            let name = args.get(1).ok_or("run needs a scenario (or ALL)")?;
            let names = if name == "ALL" {
                all_scenarios()?
            } else {
                vec![name.clone()]
            };
            let seeds = seeds(flag(args, "--seeds"))?;
            let jobs = match flag(args, "--jobs") {
                Some(j) => j.parse().map_err(|_| format!("bad --jobs {j}"))?,
                None => 1,
            };
            for name in &names {
                let scenario = Scenario::load(name)?;
                let reports = run_seeds(&scenario, &seeds, jobs)?;
                let path = match flag(args, "--plot") {
                    Some(p) if names.len() == 1 => PathBuf::from(p),
                    Some(dir) => Path::new(dir).join(format!("{}.svg", scenario.name)),
                    None => default_plot(&scenario.name),
                };
                let title = format!("{}: event copies missing over time", scenario.name);
                plot::write_svg(&path, &title, &reports)?;
                eprintln!("plot: {}", path.display());
                groups.push(reports);
            }
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
            let grid = sweep::Grid::from_args(
                flag(args, "--loss"),
                flag(args, "--loss-model"),
                flag(args, "--tick"),
                flag(args, "--differ"),
            )?;
            let mut out = Vec::new();
            for n in sizes {
                for s in grid.scenarios(&sweep::scenario(n, !sync_only)) {
                    let r = run_seed(&s, 1)?;
                    eprintln!(
                        "{}: {} in {} ms",
                        s.name,
                        if r.ok() { "ok" } else { "FAIL" },
                        r.wall_ms
                    );
                    if let Some(f) = r.failure() {
                        eprintln!("{f}");
                    }
                    out.push(r);
                }
            }
            groups.push(out);
        }
        _ => return Err("unknown command".into()),
    }
    let all: Vec<&Report> = groups.iter().flatten().collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?
        );
    } else {
        // Per-seed lines while they fit on a screen; the summary always.
        if groups.iter().all(|g| g.len() <= 20) {
            println!("{HEADER}");
            for r in &all {
                println!("{}", line(r));
            }
            println!();
        }
        println!("{SUMMARY_HEADER}");
        for g in &groups {
            println!("{}", summary(g));
        }
        for r in all.iter().filter(|r| !r.ok()) {
            if let Some(f) = r.failure() {
                println!("{f}");
            }
        }
    }
    Ok(all.iter().all(|r| r.ok()))
}
