//! `labmesh status --score [--node X] [--json]`: the score card (0–100) of every node, or of
//! node X, with each dimension's points and why, and the action that gains the most.

use std::io::Write;

use serde_json::Value;

use crate::cli::exit;
use labmesh::client;
use labmesh::config::Settings;
use labmesh::error::UsageError;
use labmesh::output::shown as text;

/// `--node` is a node's name with `--score` (asked of the local agent), or an API address
/// (`HOST:PORT`, as without `--score`: that agent scores the whole mesh).
pub fn run(settings: &Settings, node: Option<&str>, json: bool) -> anyhow::Result<u8> {
    let (addr, name) = match node {
        Some(t) if t.contains(':') => (client::resolve(t)?, None),
        Some(n) => (settings.api_addr, Some(n)),
        None => (settings.api_addr, None),
    };
    let resp = client::request(addr, "GET", "/v1/score", None, None)?;
    if resp.status != 200 {
        anyhow::bail!(
            "the agent at {addr} answered {}: {}",
            resp.status,
            resp.body
        );
    }
    let doc: Value = resp.json()?;
    let mut cards = doc["cards"].as_array().cloned().unwrap_or_default();
    if let Some(n) = name {
        cards.retain(|c| c["node"] == n);
        if cards.is_empty() {
            return Err(UsageError(format!(
                "no node named {n:?} in the mesh (known: {})",
                doc["cards"]
                    .as_array()
                    .map(|a| a.iter().map(|c| text(&c["node"])).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .join(", ")
            ))
            .into());
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        let doc = match (name, cards.first()) {
            (Some(_), Some(card)) => card.clone(),
            _ => Value::Array(cards),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(exit::OK);
    }
    for card in &cards {
        writeln!(
            out,
            "{}  score {}/100",
            text(&card["node"]),
            text(&card["score"])
        )?;
        let dims = card["dimensions"].as_array().cloned().unwrap_or_default();
        for d in &dims {
            let points = if d["known"] == true {
                format!("{}/{}", text(&d["points"]), text(&d["max"]))
            } else {
                format!("-/{}", text(&d["max"]))
            };
            writeln!(
                out,
                "  {:<13} {:>6}  {}",
                text(&d["name"]),
                points,
                text(&d["explanation"])
            )?;
        }
        let best = dims
            .iter()
            .filter(|d| d["action"].is_string())
            .max_by_key(|d| {
                d["max"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(d["points"].as_u64().unwrap_or(0))
            });
        if let Some(d) = best {
            writeln!(out, "  next: {}", text(&d["action"]))?;
        }
    }
    Ok(exit::OK)
}
