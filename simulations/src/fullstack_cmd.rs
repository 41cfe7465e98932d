//! The `fullstack` subcommand: runs the shipping mesh and sync code on turmoil over seeds and
//! prints the figures and the invariants' verdict.

use std::time::Duration;

use simulations::fullstack::{
    self, FileOutcome, FullScenario, FullstackConfig, Outcome, scenario_play,
};

use crate::{flag, opt};

/// `--seeds A..B`, `--seeds N` or `--seed N` (default: seed 1).
fn seeds(args: &[String]) -> Result<Vec<u64>, String> {
    crate::seeds(flag(args, "--seeds").or(flag(args, "--seed")))
}

/// Alerters per component, `|` between components (`-` when none was checked).
fn alerters(a: Option<&[Vec<String>]>) -> String {
    a.map_or("-".into(), |comps| {
        comps
            .iter()
            .map(|c| c.join(","))
            .collect::<Vec<_>>()
            .join("|")
    })
}

const HEADER: &str = "scenario nodes  seed loss  join_ms detect_ms converge_ms events diss_p50 diss_p99  B/node/s lost  false_dead suspicions sessions notes alerters virt_ms wall_ms result";

fn line(o: &Outcome) -> String {
    format!(
        "{:<8} {:>5} {:>5} {:>4.2} {:>8} {:>9} {:>11} {:>6} {:>8} {:>8} {:>9.0} {:>5} {:>10} {:>10} {:>8} {:>5} {:<8} {:>7} {:>7} {}",
        o.scenario,
        o.nodes,
        o.seed,
        o.loss,
        opt(o.join_ms),
        opt(o.detection_ms),
        opt(o.convergence_ms),
        o.events_acknowledged,
        opt(o.dissemination_p50_ms),
        opt(o.dissemination_p99_ms),
        o.bytes_per_node_per_s,
        o.datagrams_lost,
        o.false_dead,
        o.false_suspicions,
        o.sessions_completed,
        o.notifications.iter().filter(|n| n.accepted).count(),
        alerters(o.alerters_at_end.as_deref()),
        o.virtual_ms,
        o.wall_ms,
        if o.ok() { "ok" } else { "FAIL" }
    )
}

pub fn run(args: &[String], json: bool) -> Result<bool, String> {
    let name = flag(args, "--scenario").unwrap_or("steady");
    let scenario = match FullScenario::parse(name) {
        Ok(s) => s,
        // Not a built-in name: a scenario file, by name in simulations/scenarios/ or path.
        Err(builtin) => {
            let file = scenario_play::load(name).map_err(|e| format!("{e}\n({builtin})"))?;
            return run_file(&file, args, json);
        }
    };
    let nodes: usize = flag(args, "--nodes")
        .unwrap_or("5")
        .parse()
        .map_err(|_| "--nodes wants a number from 2 to 100".to_owned())?;
    let loss: f64 = flag(args, "--loss")
        .unwrap_or("0")
        .parse()
        .map_err(|_| "--loss wants a fraction, e.g. 0.02".to_owned())?;
    let latency = match flag(args, "--latency") {
        Some(spec) => {
            let bad = || format!("--latency wants MIN..MAX in ms, got {spec}");
            let (a, b) = spec.split_once("..").ok_or_else(bad)?;
            let a: u64 = a.parse().map_err(|_| bad())?;
            let b: u64 = b.parse().map_err(|_| bad())?;
            if a > b {
                return Err(bad());
            }
            Some((Duration::from_millis(a), Duration::from_millis(b)))
        }
        None => None,
    };
    let warmup = match flag(args, "--warmup") {
        Some(v) => {
            Some(Duration::from_secs(v.parse().map_err(|_| {
                format!("--warmup wants whole seconds, got {v}")
            })?))
        }
        None => None,
    };
    let mut outcomes = Vec::new();
    for seed in seeds(args)? {
        let mut cfg = FullstackConfig::new(nodes, seed, scenario);
        cfg.loss = loss;
        if let Some(w) = warmup {
            cfg.warmup = w;
        }
        if let Some((min, max)) = latency {
            cfg.latency_min = min;
            cfg.latency_max = max;
        }
        let o = fullstack::run(&cfg)?;
        report_seed(seed, &o, &[]);
        outcomes.push(o);
    }
    print_all(&outcomes, outcomes.iter(), json)?;
    Ok(outcomes.iter().all(Outcome::ok))
}

/// One seed's verdict on stderr, with `notes` (what a file's traps did) before violations.
fn report_seed(seed: u64, o: &Outcome, notes: &[String]) {
    eprintln!(
        "seed {seed}: {} in {} ms (virtual {} ms), trace {}",
        if o.ok() { "ok" } else { "FAIL" },
        o.wall_ms,
        o.virtual_ms,
        o.trace_hash
    );
    for n in notes.iter().chain(&o.violations) {
        eprintln!("  {n}");
    }
}

/// Every run as JSON (`records`, whatever their type), or the table of their outcomes.
fn print_all<'a, T: serde::Serialize>(
    records: &[T],
    outcomes: impl Iterator<Item = &'a Outcome>,
    json: bool,
) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(records).map_err(|e| e.to_string())?
        );
    } else {
        println!("{HEADER}");
        for o in outcomes {
            println!("{}", line(o));
        }
    }
    Ok(())
}

/// `--scenario FILE`: plays a scenario file on the full stack (see `scenario_play`).
fn run_file(file: &simulations::Scenario, args: &[String], json: bool) -> Result<bool, String> {
    let speed = match flag(args, "--speed") {
        Some(k) => Some(
            k.parse::<u64>()
                .ok()
                .filter(|&k| k >= 1)
                .ok_or_else(|| format!("--speed wants a whole number from 1, got {k}"))?,
        ),
        None => None,
    };
    let plan = scenario_play::Plan::new(file, speed)?;
    eprintln!(
        "{}: {} nodes at speed {} ({} s + {} s quiet of virtual time)",
        plan.name,
        plan.nodes,
        plan.speed,
        plan.duration_ms / 1000,
        plan.quiet_ms / 1000
    );
    for w in &plan.warnings {
        eprintln!("  warning: {w}");
    }
    let mut outcomes: Vec<FileOutcome> = Vec::new();
    for seed in seeds(args)? {
        let o = scenario_play::play_plan(&plan, seed)?;
        report_seed(seed, &o.outcome, &o.notifier_crashes);
        outcomes.push(o);
    }
    print_all(&outcomes, outcomes.iter().map(|o| &o.outcome), json)?;
    Ok(outcomes.iter().all(FileOutcome::ok))
}
