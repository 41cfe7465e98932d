//! `labmesh containers`: this node's Docker containers with health, failing streak, restart
//! count, whether the watchdog may restart them, and their last remediation. Exit 1 when any
//! listed container is unhealthy.

use std::io::Write;

use serde_json::Value;

use crate::cli::{ContainersArgs, exit};
use labmesh::client;
use labmesh::config::Settings;

pub fn run(settings: &Settings, args: &ContainersArgs) -> anyhow::Result<u8> {
    let addr = match &args.node {
        Some(target) => client::resolve(target)?,
        None => settings.api_addr,
    };
    let resp = client::request(addr, "GET", "/v1/containers", None, None)?;
    if resp.status != 200 {
        anyhow::bail!(
            "the agent at {addr} answered {}: {}",
            resp.status,
            resp.body
        );
    }
    let mut body = resp.json()?;
    if let Some(list) = body["containers"].as_array_mut()
        && args.unhealthy
    {
        list.retain(|c| c["health"] == "unhealthy");
    }
    let list = body["containers"].as_array().cloned().unwrap_or_default();
    let unhealthy = list.iter().any(|c| c["health"] == "unhealthy");
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
    } else {
        print(&mut out, &body, &list)?;
    }
    Ok(if unhealthy { exit::NO } else { exit::OK })
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn uptime(v: &Value) -> String {
    let Some(s) = v.as_u64() else {
        return "-".into();
    };
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn print(out: &mut impl Write, body: &Value, list: &[Value]) -> anyhow::Result<()> {
    let node = text(&body["node"]);
    if body["docker"]["status"] != "ok" {
        writeln!(
            out,
            "{node}: Docker {}: {}",
            text(&body["docker"]["status"]),
            text(&body["docker"]["reason"])
        )?;
        return Ok(());
    }
    if list.is_empty() {
        writeln!(out, "{node}: no containers")?;
        return Ok(());
    }
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|c| {
            let last = &c["last_remediation"];
            let remediation = if last.is_null() {
                "-".into()
            } else {
                format!("{} {}", text(&last["outcome"]), text(&last["at"]))
            };
            [
                text(&c["name"]),
                text(&c["state"]),
                text(&c["health"]),
                text(&c["failing_streak"]),
                text(&c["restart_count"]),
                uptime(&c["uptime_s"]),
                if c["restart_on_unhealthy"] == true {
                    "restart".into()
                } else {
                    "-".into()
                },
                remediation,
            ]
        })
        .collect();
    let head = [
        "CONTAINER",
        "STATE",
        "HEALTH",
        "STREAK",
        "RESTARTS",
        "UP",
        "WATCHDOG",
        "LAST REMEDIATION",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    writeln!(out, "{node}")?;
    let line = |cells: &[&str]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "  {}", line(&head))?;
    for (r, c) in rows.iter().zip(list) {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        writeln!(out, "  {}", line(&cells))?;
        if c["health"] == "unhealthy"
            && let Some(last) = c["health_log"].as_array().and_then(|l| l.last())
        {
            writeln!(out, "    last health check: {}", text(last))?;
        }
    }
    Ok(())
}
