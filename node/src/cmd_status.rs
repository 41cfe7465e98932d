//! `labmesh status`: the mesh as any one agent sees it.

use std::io::Write;

use serde_json::Value;

use crate::cli::StatusArgs;
use crate::exit;
use crate::http_client;
use crate::settings::Settings;

pub fn run(settings: &Settings, args: &StatusArgs) -> anyhow::Result<u8> {
    let addr = match &args.node {
        Some(target) => http_client::resolve(target)?,
        None => settings.api_addr,
    };
    let resp = http_client::request(addr, "GET", "/v1/status", None, None)?;
    if resp.status != 200 {
        anyhow::bail!(
            "the agent at {addr} answered {}: {}",
            resp.status,
            resp.body
        );
    }
    let status = resp.json()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &status)?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    print_table(&mut out, &status)?;
    Ok(exit::OK)
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m", ms / 60_000),
        _ => format!("{}h", ms / 3_600_000),
    }
}

fn print_table(out: &mut impl Write, status: &Value) -> std::io::Result<()> {
    let color = crate::output::color_enabled();
    writeln!(
        out,
        "mesh {}  (answered by {}, labmesh {})",
        text(status, "mesh"),
        text(status, "node"),
        text(status, "version")
    )?;
    let header = [
        "NODE",
        "LIVENESS",
        "HEARTBEAT",
        "ROLE",
        "VERSION",
        "OS",
        "BACKEND",
        "GOSSIP",
        "API",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    for n in &nodes {
        let mut name = text(n, "node");
        if n["self"] == Value::Bool(true) {
            name.push_str(" *");
        }
        if n["transient"] == Value::Bool(true) {
            name.push_str(" (transient)");
        }
        if n["alerter"] == Value::Bool(true) {
            name.push_str(" (alerter)");
        }
        rows.push(vec![
            name,
            text(n, "liveness"),
            n["last_heartbeat_age_ms"]
                .as_u64()
                .map(age)
                .unwrap_or_default(),
            text(n, "role"),
            text(n, "version"),
            text(n, "os"),
            text(n, "backend"),
            text(n, "gossip_addr"),
            text(n, "api_addr"),
        ]);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>, liveness: Option<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            let painted = match (i, liveness, color) {
                (1, Some("alive"), true) => format!("\x1b[32m{c}\x1b[0m"),
                (1, Some("suspect"), true) => format!("\x1b[33m{c}\x1b[0m"),
                (1, Some("dead" | "offline"), true) => format!("\x1b[31m{c}\x1b[0m"),
                _ => c.clone(),
            };
            s.push_str(&painted);
            s.push_str(&" ".repeat(pad + 2));
        }
        s.trim_end().to_owned()
    };
    writeln!(
        out,
        "{}",
        line(header.iter().map(|h| (*h).to_owned()).collect(), None)
    )?;
    for r in rows {
        let liveness = r[1].clone();
        writeln!(out, "{}", line(r, Some(&liveness)))?;
    }
    let rejections = status["rejections"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if rejections.is_empty() {
        writeln!(out, "refused peers and messages: none")?;
    } else {
        let parts: Vec<String> = rejections.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(out, "refused peers and messages: {}", parts.join(", "))?;
    }
    Ok(())
}
