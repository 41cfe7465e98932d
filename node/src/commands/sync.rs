//! `labmesh sync status` and `labmesh sync now [PEER]`.

use std::io::Write;

use crate::cli::SyncCommand;
use crate::cli::exit;
use labmesh::client;
use labmesh::config::Settings;

pub fn run(settings: &Settings, cmd: &SyncCommand) -> anyhow::Result<u8> {
    match cmd {
        SyncCommand::Status { json } => {
            let resp = client::request(settings.api_addr, "GET", "/v1/sync", None, None)?;
            if resp.status != 200 {
                anyhow::bail!("the agent answered {}: {}", resp.status, resp.body);
            }
            let status = resp.json()?;
            let mut out = std::io::stdout().lock();
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
                return Ok(exit::OK);
            }
            writeln!(
                out,
                "{}: {} events, fingerprint {}",
                status["node"].as_str().unwrap_or(""),
                status["events"],
                status["fingerprint"].as_str().unwrap_or("")
            )?;
            writeln!(
                out,
                "{:<20} {:<6} {:>10} {:>10} {:>10} {:>12} {:>12} {:>8}",
                "PEER", "EQUAL", "LAST", "SENT", "RECEIVED", "BYTES OUT", "BYTES IN", "REFUSED"
            )?;
            for p in status["peers"].as_array().cloned().unwrap_or_default() {
                let last = p["last_reconciliation_s_ago"]
                    .as_u64()
                    .map_or("never".to_owned(), |s| format!("{s}s ago"));
                writeln!(
                    out,
                    "{:<20} {:<6} {:>10} {:>10} {:>10} {:>12} {:>12} {:>8}",
                    p["peer"].as_str().unwrap_or(""),
                    if p["fingerprint_equal"] == true {
                        "yes"
                    } else {
                        "no"
                    },
                    last,
                    p["events_sent"].as_u64().unwrap_or(0),
                    p["events_received"].as_u64().unwrap_or(0),
                    p["bytes_sent"].as_u64().unwrap_or(0),
                    p["bytes_received"].as_u64().unwrap_or(0),
                    p["events_refused"].as_u64().unwrap_or(0)
                )?;
            }
            let refusals = status["latest_refusals"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !refusals.is_empty() {
                writeln!(out, "\nLatest refused input (newest last):")?;
                for r in refusals {
                    writeln!(
                        out,
                        "  {} from {}: {} x{}: {}",
                        r["at"].as_str().unwrap_or(""),
                        r["peer"].as_str().unwrap_or(""),
                        r["what"].as_str().unwrap_or(""),
                        r["count"],
                        r["reason"].as_str().unwrap_or("")
                    )?;
                }
            }
            Ok(exit::OK)
        }
        SyncCommand::Now { peer } => {
            let token = std::fs::read_to_string(settings.token_path()).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the API token {}: {e}",
                    settings.token_path().display()
                )
            })?;
            let path = match peer {
                Some(p) => format!("/v1/sync/now?peer={p}"),
                None => "/v1/sync/now".to_owned(),
            };
            let resp = client::request(settings.api_addr, "POST", &path, Some(token.trim()), None)?;
            if resp.status != 200 {
                anyhow::bail!("the agent answered {}: {}", resp.status, resp.body);
            }
            println!(
                "reconciliation requested with {}",
                peer.as_deref().unwrap_or("every live peer")
            );
            Ok(exit::OK)
        }
    }
}
