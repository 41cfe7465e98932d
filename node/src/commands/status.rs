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
use labmesh::output::{color_enabled, paint};
use labmesh::status::{Cell, Tone, model};

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

/// Pads cells to their column (measured without colour codes), then paints them by tone.
fn painted_table(indent: &str, header: &[&str], rows: &[Vec<Cell>], color: bool) -> Vec<String> {
    let head: Vec<Cell> = header
        .iter()
        .map(|h| Cell {
            text: h.to_uppercase(),
            tone: Tone::Plain,
        })
        .collect();
    let all: Vec<&Vec<Cell>> = std::iter::once(&head).chain(rows).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &all {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.text.chars().count();
            match widths.get_mut(i) {
                Some(x) => *x = (*x).max(w),
                None => widths.push(w),
            }
        }
    }
    all.iter()
        .map(|row| {
            let mut line = indent.to_owned();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(&paint(&cell.text, cell.tone.ansi(), color));
                let pad = widths[i].saturating_sub(cell.text.chars().count());
                line.push_str(&" ".repeat(pad + 2));
            }
            line.trim_end().to_owned()
        })
        .collect()
}

fn print_screen(out: &mut impl Write, status: &Value, color: bool) -> std::io::Result<()> {
    let m = model(status);
    writeln!(
        out,
        "mesh {}  (answered by {}, labmesh {}, {} events stored)",
        m.mesh, m.node, m.version, m.events
    )?;
    for line in painted_table("", &m.nodes.header, &m.nodes.rows, color) {
        writeln!(out, "{line}")?;
    }
    writeln!(out)?;
    for section in &m.sections {
        let title = section.title.to_lowercase();
        if section.rows.is_empty() {
            writeln!(out, "{title}: none")?;
            continue;
        }
        let tone = if section.id == "services" {
            Tone::Bad
        } else {
            Tone::Plain
        };
        writeln!(out, "{}", paint(&format!("{title}:"), tone.ansi(), color))?;
        for line in painted_table("  ", &section.header, &section.rows, color) {
            writeln!(out, "{line}")?;
        }
    }
    writeln!(out, "refused peers and messages: {}", m.refused)?;
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
