//! `labmesh status`: the one screen. Every node of the mesh as any one agent sees it (liveness,
//! alerter mark, gossiped host figures), unhealthy services, open incidents and the latest
//! deployments; `--watch` refreshes it.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::cli::{StatusArgs, exit};
use labmesh::client;
use labmesh::config::Settings;
use labmesh::error::UsageError;
use labmesh::output::{color_enabled, table};
use labmesh::status::{SUMMARY_HEADER, age, score_class, summary_cells, text};

pub fn run(settings: &Settings, args: &StatusArgs) -> anyhow::Result<u8> {
    if args.score {
        return crate::commands::score::run(settings, args.node.as_deref(), args.json);
    }
    let addr = match &args.node {
        Some(target) => client::resolve(target)?,
        None => settings.api_addr,
    };
    let Some(secs) = args.watch else {
        let status = fetch(addr)?;
        let mut out = std::io::stdout().lock();
        print(&mut out, &status, args.json)?;
        return Ok(exit::OK);
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(
            UsageError(format!("--watch {secs}: give a positive number of seconds")).into(),
        );
    }
    let color = color_enabled();
    loop {
        let mut screen = Vec::new();
        match fetch(addr) {
            Ok(status) => print(&mut screen, &status, args.json)?,
            Err(e) => writeln!(screen, "{e:#}")?,
        }
        // Clear the screen and go home, then the new screen, in one write (no flicker); a
        // separator instead when the output is not a terminal.
        let lead: &[u8] = if color { b"\x1b[2J\x1b[H" } else { b"---\n" };
        let mut out = std::io::stdout().lock();
        let written = out
            .write_all(lead)
            .and_then(|()| out.write_all(&screen))
            .and_then(|()| out.flush());
        match written {
            // The reader went away (`| head`, a closed pager): watching is over.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(exit::OK),
            other => other?,
        }
        drop(out);
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
}

fn fetch(addr: std::net::SocketAddr) -> anyhow::Result<Value> {
    let resp = client::request(addr, "GET", "/v1/status", None, None)?;
    if resp.status != 200 {
        anyhow::bail!(
            "the agent at {addr} answered {}: {}",
            resp.status,
            resp.body
        );
    }
    Ok(resp.json()?)
}

fn print(out: &mut impl Write, status: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, status)?;
        writeln!(out)?;
    } else {
        print_screen(out, status, color_enabled())?;
    }
    Ok(())
}

fn paint(text: &str, code: Option<&str>, color: bool) -> String {
    match code {
        Some(code) if color && !text.is_empty() => format!("\x1b[{code}m{text}\x1b[0m"),
        _ => text.to_owned(),
    }
}

fn liveness_color(liveness: &str) -> Option<&'static str> {
    match liveness {
        "alive" => Some("32"),
        "suspect" => Some("33"),
        "dead" | "offline" => Some("31"),
        _ => None,
    }
}

fn severity_color(severity: &str) -> Option<&'static str> {
    match severity {
        "warning" => Some("33"),
        "error" => Some("31"),
        "critical" => Some("1;31"),
        _ => None,
    }
}

/// Pads cells to their column (measured without colour codes), then paints the chosen cells.
fn painted_table(rows: &[Vec<String>], paints: &[Vec<Option<&str>>], color: bool) -> Vec<String> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(x) => *x = (*x).max(w),
                None => widths.push(w),
            }
        }
    }
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let code = paints.get(r).and_then(|p| p.get(i)).copied().flatten();
                line.push_str(&paint(cell, code, color));
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(&" ".repeat(pad + 2));
            }
            line.trim_end().to_owned()
        })
        .collect()
}

fn list(status: &Value, key: &str) -> Vec<Value> {
    status[key].as_array().cloned().unwrap_or_default()
}

fn print_screen(out: &mut impl Write, status: &Value, color: bool) -> std::io::Result<()> {
    writeln!(
        out,
        "mesh {}  (answered by {}, labmesh {})",
        text(status, "mesh"),
        text(status, "node"),
        text(status, "version")
    )?;
    let mut header: Vec<String> = ["NODE", "A", "LIVENESS", "HEARTBEAT", "ROLE", "VERSION"]
        .map(String::from)
        .to_vec();
    header.extend(SUMMARY_HEADER.map(String::from));
    header.extend(["GOSSIP", "API"].map(String::from));
    let mut rows = vec![header];
    let mut paints: Vec<Vec<Option<&str>>> = vec![Vec::new()];
    for n in list(status, "nodes") {
        let mut name = text(&n, "node");
        if n["self"] == Value::Bool(true) {
            name.push_str(" (here)");
        }
        if n["transient"] == Value::Bool(true) {
            name.push_str(" (transient)");
        }
        let liveness = text(&n, "liveness");
        let mut row = vec![
            name,
            if n["alerter"] == Value::Bool(true) {
                "*"
            } else {
                ""
            }
            .to_owned(),
            liveness.clone(),
            n["last_heartbeat_age_ms"]
                .as_u64()
                .map(age)
                .unwrap_or_default(),
            text(&n, "role"),
            text(&n, "version"),
        ];
        row.extend(summary_cells(&n["summary"]));
        row.extend([text(&n, "gossip_addr"), text(&n, "api_addr")]);
        let score = match score_class(&n["summary"]) {
            Some("good") => Some("32"),
            Some("fair") => Some("33"),
            Some(_) => Some("31"),
            None => None,
        };
        let mut paint_row = vec![None; row.len()];
        paint_row[2] = liveness_color(&liveness);
        paint_row[12] = score;
        paints.push(paint_row);
        rows.push(row);
    }
    for line in painted_table(&rows, &paints, color) {
        writeln!(out, "{line}")?;
    }
    section(out, status, color)?;
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

/// Unhealthy services, open incidents, recent deployments.
fn section(out: &mut impl Write, status: &Value, color: bool) -> std::io::Result<()> {
    let services = list(status, "services_unhealthy");
    writeln!(out)?;
    if services.is_empty() {
        writeln!(out, "unhealthy services: none")?;
    } else {
        writeln!(out, "{}", paint("unhealthy services:", Some("31"), color))?;
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|s| {
                let since = text(s, "since");
                vec![
                    text(s, "service"),
                    format!("on {}", text(s, "node")),
                    format!("since {since}"),
                    text(s, "last_event_type"),
                ]
            })
            .collect();
        for line in table("  ", &rows) {
            writeln!(out, "{line}")?;
        }
    }
    let incidents = list(status, "incidents_open");
    if incidents.is_empty() {
        writeln!(out, "open incidents: none")?;
    } else {
        writeln!(out, "open incidents:")?;
        let rows: Vec<Vec<String>> = incidents
            .iter()
            .map(|i| {
                vec![
                    text(i, "severity"),
                    text(i, "service"),
                    format!("on {}", text(i, "node")),
                    format!("x{}", text(i, "occurrence_count")),
                    format!("last {}", text(i, "last_occurrence")),
                    text(i, "id"),
                ]
            })
            .collect();
        let paints: Vec<Vec<Option<&str>>> = incidents
            .iter()
            .map(|i| vec![severity_color(i["severity"].as_str().unwrap_or_default())])
            .collect();
        for line in painted_table(&rows, &paints, color) {
            writeln!(out, "  {line}")?;
        }
    }
    let deployments = list(status, "deployments_recent");
    if deployments.is_empty() {
        writeln!(out, "recent deployments: none")?;
    } else {
        writeln!(out, "recent deployments:")?;
        let rows: Vec<Vec<String>> = deployments
            .iter()
            .map(|d| {
                vec![
                    text(d, "status"),
                    text(d, "service"),
                    format!("on {}", text(d, "node")),
                    text(d, "started_at"),
                    text(d, "correlation_id"),
                ]
            })
            .collect();
        let paints: Vec<Vec<Option<&str>>> = deployments
            .iter()
            .map(|d| {
                vec![match d["status"].as_str() {
                    Some("completed") => Some("32"),
                    Some("failed") => Some("31"),
                    _ => Some("33"),
                }]
            })
            .collect();
        for line in painted_table(&rows, &paints, color) {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_screen_shows_nodes_marks_and_sections_without_colour() {
        let status = json!({
            "mesh": "home", "node": "alpha", "version": "0.1.0", "rejections": {},
            "nodes": [
                {"node": "alpha", "self": true, "liveness": "alive", "alerter": true,
                 "last_heartbeat_age_ms": 0, "summary": {"cpu": 5.0, "gpus": 0, "score": 97}},
                {"node": "bravo", "liveness": "suspect", "summary": null},
            ],
            "services_unhealthy": [{"service": "nas", "node": "bravo", "since": "t"}],
            "incidents_open": [{"service": "nas", "node": "bravo", "severity": "error",
                                "occurrence_count": 2, "id": "inc-1-bravo-nas"}],
            "deployments_recent": [],
        });
        let mut out = Vec::new();
        print_screen(&mut out, &status, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains("HEARTBEAT") && text.contains("SCORE"),
            "{text}"
        );
        let alpha = text.lines().find(|l| l.starts_with("alpha")).unwrap();
        assert!(alpha.contains(" * ") && alpha.contains("97"), "{alpha}");
        assert!(text.contains("inc-1-bravo-nas"), "{text}");
        assert!(text.contains("recent deployments: none"), "{text}");
        let mut out = Vec::new();
        print_screen(&mut out, &status, true).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("\x1b[32malive"));
    }
}
