//! `labmesh check list` and `labmesh check pass|warn|fail NAME [--note TEXT]`.

use std::io::Write;

use serde_json::{Value, json};

use crate::cli::exit;
use crate::cli::{CheckCommand, CheckReportArgs};
use labmesh::client;
use labmesh::config::Settings;
use labmesh::error::UsageError;
use labmesh::output::shown as text;

pub fn run(settings: &Settings, cmd: &CheckCommand) -> anyhow::Result<u8> {
    match cmd {
        CheckCommand::List { json } => list(settings, *json),
        CheckCommand::Pass(args) => report(settings, "pass", args),
        CheckCommand::Warn(args) => report(settings, "warn", args),
        CheckCommand::Fail(args) => report(settings, "fail", args),
    }
}

fn list(settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let resp = client::request(settings.api_addr, "GET", "/v1/checks", None, None)?;
    if resp.status != 200 {
        anyhow::bail!("the agent answered {}: {}", resp.status, resp.body);
    }
    let checks = resp.json()?;
    let rows = checks.as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&checks)?)?;
    } else {
        writeln!(
            out,
            "{:<24} {:<8} {:<20} {:<11} {:<9} {:>6}  OUTPUT",
            "CHECK", "KIND", "SERVICE", "STATE", "STATUS", "MS"
        )?;
        for c in &rows {
            let output: String = text(&c["output"])
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(60)
                .collect();
            writeln!(
                out,
                "{:<24} {:<8} {:<20} {:<11} {:<9} {:>6}  {}",
                text(&c["name"]),
                text(&c["kind"]),
                text(&c["service"]),
                text(&c["state"]),
                text(&c["status"]),
                text(&c["latency_ms"]),
                output
            )?;
        }
    }
    let unhealthy = rows
        .iter()
        .any(|c| matches!(c["state"].as_str(), Some("unhealthy" | "recovering")));
    Ok(if unhealthy { exit::NO } else { exit::OK })
}

fn report(settings: &Settings, verb: &str, args: &CheckReportArgs) -> anyhow::Result<u8> {
    let token = std::fs::read_to_string(settings.token_path()).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the API token {}: {e} (run this as the user that runs the agent, or point --data-dir at its data dir)",
            settings.token_path().display()
        )
    })?;
    let name_ok = !args.name.is_empty()
        && args
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(UsageError(format!(
            "no check named {:?}: check names are letters, digits, '.', '_' and '-' (`labmesh check list` shows them)",
            args.name
        ))
        .into());
    }
    let path = format!("/v1/checks/{}/{verb}", args.name);
    let body = json!({ "note": args.note }).to_string();
    let resp = client::request(
        settings.api_addr,
        "POST",
        &path,
        Some(token.trim()),
        Some(&body),
    )?;
    let answer: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
    match resp.status {
        200 => {}
        404 | 400 => {
            return Err(
                UsageError(answer["error"].as_str().unwrap_or(&resp.body).to_owned()).into(),
            );
        }
        _ => anyhow::bail!("the agent answered {}: {}", resp.status, resp.body),
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "{}: {} (state {})",
            args.name,
            text(&answer["status"]),
            text(&answer["state"])
        );
    }
    Ok(exit::OK)
}
