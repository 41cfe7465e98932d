//! `labmesh runs log ID [-f]`: a run's recorded output, read from this node's data dir.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::cli::run::RunsLogArgs;
use labmesh::runs::logs::LogFollower;

/// How often a followed log is read, and how often the wrapper is checked to be alive.
const POLL_EVERY: Duration = Duration::from_millis(200);
const ALIVE_EVERY: Duration = Duration::from_secs(1);

pub(super) fn log(settings: &Settings, args: &RunsLogArgs) -> anyhow::Result<u8> {
    let now = Utc::now();
    let folded = load(settings, None, None, None, now)?;
    let run = show::find(&folded, args.id.trim())?;
    if run.record.host != settings.name {
        return Err(UsageError(format!(
            "run {} ran on {}; its log is there (`labmesh runs log {}` on {}, or GET /v1/runs/{}/log on its API)",
            run.record.id, run.record.host, run.record.id, run.record.host, run.record.id
        ))
        .into());
    }
    let Some(path) = labmesh::runs::logs::log_path(&settings.data_dir, &run.record.id) else {
        anyhow::bail!("run id {:?} is not a UUID", run.record.id);
    };
    if !path.is_file() {
        return Err(UsageError(format!(
            "the log of run {} is gone ({}): run logs are kept for the retention period",
            run.record.id,
            path.display()
        ))
        .into());
    }
    let running = run.record.outcome == Outcome::Running;
    let pid = run.payload.context.wrapper_pid;
    let mut follower = LogFollower::new(path);
    let mut out = io::stdout().lock();
    let mut last_alive_check = Instant::now();
    loop {
        let lines = follower.poll()?;
        let got = !lines.is_empty();
        for line in lines {
            print_line(&mut out, &line, args.json)?;
        }
        out.flush()?;
        if got {
            continue;
        }
        if !args.follow || !running || follower.ended() {
            break;
        }
        if last_alive_check.elapsed() >= ALIVE_EVERY {
            last_alive_check = Instant::now();
            if labmesh::runs::context::process_alive(pid) == Some(false) {
                // One last read: the wrapper may have written its end just before it went.
                for line in follower.poll()? {
                    print_line(&mut out, &line, args.json)?;
                }
                if !follower.ended() {
                    eprintln!(
                        "labmesh: the wrapper of run {} (pid {pid}) is gone without an end: the run is abandoned",
                        run.record.id
                    );
                }
                break;
            }
        }
        std::thread::sleep(POLL_EVERY);
    }
    Ok(exit::OK)
}

/// An output line to stdout as the command wrote it (stderr lines to stderr), a lifecycle
/// record as a short note on stderr; `--json`: the stored line.
fn print_line(out: &mut impl Write, line: &str, json: bool) -> io::Result<()> {
    if json {
        return writeln!(out, "{line}");
    }
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return writeln!(out, "{line}");
    };
    match (v["stream"].as_str(), v["line"].as_str()) {
        (Some("stderr"), Some(text)) => {
            out.flush()?;
            eprintln!("{text}");
            Ok(())
        }
        (Some(_), Some(text)) => writeln!(out, "{text}"),
        _ => {
            out.flush()?;
            let event = v["event"].as_str().unwrap_or("?");
            let at = v["timestamp"].as_str().unwrap_or("");
            match v["exit_code"].as_i64() {
                Some(code) => eprintln!("── {event} at {at} (exit {code})"),
                None => eprintln!("── {event} at {at}"),
            }
            Ok(())
        }
    }
}
