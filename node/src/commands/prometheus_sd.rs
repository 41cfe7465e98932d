//! `labmesh prometheus-sd`: Prometheus file-based service discovery from the live membership.
//! Prometheus re-reads the file on change, so a cron job or a systemd timer running
//! `labmesh prometheus-sd --out /etc/prometheus/labmesh-targets.json` keeps every peer scraped
//! without listing hosts by hand (deploy/prometheus/prometheus.yml).

use std::io::Write;
use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::cli::{PrometheusSdArgs, exit};
use labmesh::client;
use labmesh::config::Settings;
use labmesh::error::UsageError;

pub fn run(settings: &Settings, args: &PrometheusSdArgs) -> anyhow::Result<u8> {
    let addr = match &args.node {
        Some(target) => client::resolve(target)?,
        None => settings.api_addr,
    };
    let resp = client::request(addr, "GET", "/v1/nodes", None, None)?;
    if resp.status != 200 {
        anyhow::bail!(
            "the agent at {addr} answered {}: {}",
            resp.status,
            resp.body
        );
    }
    let nodes = resp.json()?;
    let nodes = nodes
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("the agent at {addr} answered /v1/nodes with no list"))?;
    let (groups, warnings) = targets(nodes, args.all);
    for w in &warnings {
        eprintln!("labmesh prometheus-sd: {w}");
    }
    let mut text = serde_json::to_string_pretty(&Value::Array(groups))?;
    text.push('\n');
    match &args.out {
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
        // Atomic: Prometheus watches the file and must never read half of it.
        // Prometheus runs as its own user: the targets are not secret.
        Some(path) => labmesh::util::replace_file(path, text.as_bytes(), 0o644)
            .map_err(|e| UsageError(format!("--out {}: cannot write it: {e}", path.display())))?,
    }
    Ok(exit::OK)
}

/// One file_sd target group per node: its metrics address and the labels `node`, `role`,
/// `backend` (and `liveness` with `all`). Only up nodes unless `all`; nodes that left on
/// purpose never.
fn targets(nodes: &[Value], all: bool) -> (Vec<Value>, Vec<String>) {
    let mut groups = Vec::new();
    let mut warnings = Vec::new();
    for n in nodes {
        let name = n["node"].as_str().unwrap_or_default();
        let liveness = n["liveness"].as_str().unwrap_or("unknown");
        let up = matches!(liveness, "alive" | "suspect");
        if liveness == "left" || !(up || all) {
            continue;
        }
        let Some(target) = scrape_address(n) else {
            warnings.push(format!(
                "{name}: no usable API address gossiped (api_addr {:?}); skipped",
                n["api_addr"].as_str().unwrap_or("")
            ));
            continue;
        };
        if target.ip().is_loopback() && n["self"] != true {
            warnings.push(format!(
                "{name}: its API listens on {target} (loopback), which Prometheus on another host cannot scrape; give it a LAN --api-addr (and api_read_token) to scrape it"
            ));
        }
        let text = |key: &str| n[key].as_str().unwrap_or("").to_owned();
        let mut labels = json!({"node": name, "role": text("role"), "backend": text("backend")});
        if all {
            labels["liveness"] = json!(liveness);
        }
        groups.push(json!({"targets": [target.to_string()], "labels": labels}));
    }
    (groups, warnings)
}

/// Where to scrape a node: its API address, with an unspecified IP (0.0.0.0, ::) replaced by
/// the host of its gossip address (the address its peers reach it at).
fn scrape_address(n: &Value) -> Option<SocketAddr> {
    let api: SocketAddr = n["api_addr"].as_str()?.parse().ok()?;
    if !api.ip().is_unspecified() {
        return Some(api);
    }
    let gossip: SocketAddr = n["gossip_addr"].as_str()?.parse().ok()?;
    if gossip.ip().is_unspecified() {
        return None;
    }
    Some(SocketAddr::new(gossip.ip(), api.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, liveness: &str, api: &str, gossip: &str) -> Value {
        json!({"node": name, "self": false, "liveness": liveness, "api_addr": api,
               "gossip_addr": gossip, "role": "vm", "backend": "cuda"})
    }

    #[test]
    fn up_nodes_become_targets_with_their_labels() {
        let nodes = [
            node("a", "alive", "10.0.0.1:7371", "10.0.0.1:7370"),
            node("b", "suspect", "0.0.0.0:7371", "10.0.0.2:7370"),
            node("c", "dead", "10.0.0.3:7371", "10.0.0.3:7370"),
            node("d", "left", "10.0.0.4:7371", "10.0.0.4:7370"),
        ];
        let (groups, warnings) = targets(&nodes, false);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            Value::Array(groups),
            json!([
                {"targets": ["10.0.0.1:7371"], "labels": {"node": "a", "role": "vm", "backend": "cuda"}},
                {"targets": ["10.0.0.2:7371"], "labels": {"node": "b", "role": "vm", "backend": "cuda"}},
            ])
        );
        // --all keeps the dead (Prometheus' `up == 0` then alerts on it), never the departed.
        let (groups, _) = targets(&nodes, true);
        let names: Vec<_> = groups.iter().map(|g| g["labels"]["node"].clone()).collect();
        assert_eq!(names, [json!("a"), json!("b"), json!("c")]);
        assert_eq!(groups[2]["labels"]["liveness"], "dead");
    }

    #[test]
    fn unusable_and_loopback_addresses_are_named_in_warnings() {
        let nodes = [
            node("a", "alive", "", "10.0.0.1:7370"),
            node("b", "alive", "127.0.0.1:7371", "10.0.0.2:7370"),
            node("c", "alive", "0.0.0.0:7371", "0.0.0.0:7370"),
        ];
        let (groups, warnings) = targets(&nodes, false);
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[1].contains("loopback"), "{warnings:?}");
    }
}
