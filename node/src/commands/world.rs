//! `labmesh world [nodes|services|incidents|deployments] [--json]`: reads the views the agent
//! keeps in `<data>/world/` (so it works while the agent is stopped, with the last state).

use std::io::Write;

use serde_json::Value;

use crate::cli::exit;
use crate::cli::{WorldArgs, WorldView};
use labmesh::config::Settings;
use labmesh::error::UsageError;
use labmesh::output::shown as text;

pub fn run(settings: &Settings, args: &WorldArgs) -> anyhow::Result<u8> {
    let file = match args.view {
        None => "runtime-summary.json",
        Some(WorldView::Nodes) => "nodes.json",
        Some(WorldView::Services) => "services.json",
        Some(WorldView::Incidents) => "incidents.json",
        Some(WorldView::Deployments) => "deployments.json",
    };
    let path = settings.data_dir.join("world").join(file);
    let bytes = std::fs::read(&path).map_err(|e| {
        UsageError(format!(
            "cannot read {}: {e} (the agent writes the world views; start `labmesh agent` once)",
            path.display()
        ))
    })?;
    let mut out = std::io::stdout().lock();
    if args.json || args.view.is_none() {
        out.write_all(&bytes)?;
        return Ok(exit::OK);
    }
    let doc: Value = serde_json::from_slice(&bytes)?;
    let rows = doc.as_object().cloned().unwrap_or_default();
    let columns: &[&str] = match args.view {
        Some(WorldView::Nodes) => &["node", "availability", "last_seen", "last_event_type"],
        Some(WorldView::Services) => &["node", "service", "status", "since", "incident"],
        Some(WorldView::Incidents) => &[
            "id",
            "status",
            "severity",
            "started_at",
            "occurrence_count",
            "resolved_at",
        ],
        _ => &[
            "correlation_id",
            "status",
            "node",
            "service",
            "started_at",
            "finished_at",
            "stage",
            "error",
        ],
    };
    let table: Vec<Vec<String>> = rows
        .values()
        .map(|r| columns.iter().map(|c| text(&r[*c])).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for r in &table {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(
        out,
        "{}",
        line(&columns.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>())
    )?;
    for r in &table {
        writeln!(out, "{}", line(r))?;
    }
    Ok(exit::OK)
}
