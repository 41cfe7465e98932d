//! `labmesh probe`: one host sample taken on the spot (two CPU readings 200 ms apart), as a
//! readable report or, with `--json`, in the format of `GET /v1/host`. Needs no agent.

use std::io::Write;

use anyhow::Context;

use crate::cli::ProbeArgs;
use crate::cli::exit;
use labmesh::config::Settings;
use labmesh::output::{format_size, table};
use labmesh::probes::{HostSample, Probe, Prober};

pub fn run(settings: &Settings, args: &ProbeArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let sample = runtime.block_on(async {
        let prober = Prober::new(&settings.name);
        tokio::time::sleep(labmesh::probes::FIRST_SAMPLE_AFTER).await;
        prober.sample().await
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &sample)?;
        writeln!(out)?;
    } else {
        for line in report(&sample) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(exit::OK)
}

fn pct(v: f64) -> String {
    format!("{v:.1} %")
}

fn duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m {}s", secs % 60),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

/// `absent: why` / `error: why` for a probe without figures.
fn not_ok<T>(p: &Probe<T>) -> String {
    format!("{}: {}", p.status(), p.reason().unwrap_or(""))
}

const INDENT: &str = "          ";

fn line(name: &str, text: String) -> String {
    format!("{name:<10}{text}")
}

/// The human-readable report.
pub fn report(s: &HostSample) -> Vec<String> {
    let mut out = vec![format!("{} ({}), sampled {}", s.node, s.os, s.taken_at)];
    out.push(line(
        "cpu",
        match &s.cpu {
            Probe::Ok(c) => format!(
                "{} busy{} over {} ms, {} cores",
                pct(c.usage_pct),
                c.iowait_pct
                    .map(|w| format!(" (iowait {})", pct(w)))
                    .unwrap_or_default(),
                c.interval_ms,
                c.cores
            ),
            other => not_ok(other),
        },
    ));
    out.push(line(
        "steal",
        s.steal
            .ok()
            .map_or_else(|| not_ok(&s.steal), |st| pct(st.pct)),
    ));
    out.push(line(
        "load",
        s.load.ok().map_or_else(
            || not_ok(&s.load),
            |l| format!("{:.2} {:.2} {:.2} (1, 5, 15 min)", l.one, l.five, l.fifteen),
        ),
    ));
    match &s.memory {
        Probe::Ok(m) => {
            out.push(line(
                "memory",
                format!(
                    "{} available of {}",
                    format_size(m.available_bytes),
                    format_size(m.total_bytes)
                ),
            ));
            let cached = m
                .swap_cached_bytes
                .map(|c| format!("; {} cached (SwapCached)", format_size(c)))
                .unwrap_or_default();
            let swap = if m.swap_total_bytes == 0 {
                "none".to_owned()
            } else {
                format!(
                    "{} used of {}{cached}",
                    format_size(m.swap_used_bytes),
                    format_size(m.swap_total_bytes)
                )
            };
            out.push(line("swap", swap));
        }
        other => out.push(line("memory", not_ok(other))),
    }
    out.push(line(
        "uptime",
        s.uptime
            .ok()
            .map_or_else(|| not_ok(&s.uptime), |u| duration(u.seconds)),
    ));
    match &s.disks {
        Probe::Ok(d) => {
            let mut rows = vec![
                ["MOUNT", "FS", "SIZE", "USED", "AVAIL", "USE%"]
                    .map(String::from)
                    .to_vec(),
            ];
            for m in &d.mounts {
                rows.push(vec![
                    m.mount.clone(),
                    m.fs.clone(),
                    format_size(m.total_bytes),
                    format_size(m.used_bytes),
                    format_size(m.available_bytes),
                    pct(m.used_pct),
                ]);
            }
            let lines = table(INDENT, &rows);
            out.extend(with_label("disks", lines));
        }
        other => out.push(line("disks", not_ok(other))),
    }
    match &s.network {
        Probe::Ok(n) => {
            let rate =
                |r: Option<f64>| r.map_or("-".into(), |r| format!("{}/s", format_size(r as u64)));
            let mut rows = vec![
                [
                    "IFACE", "RX", "TX", "RX RATE", "TX RATE", "ERRORS", "DROPPED",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for i in &n.interfaces {
                rows.push(vec![
                    i.name.clone(),
                    format_size(i.rx_bytes),
                    format_size(i.tx_bytes),
                    rate(i.rx_bytes_per_s),
                    rate(i.tx_bytes_per_s),
                    (i.rx_errors + i.tx_errors).to_string(),
                    (i.rx_dropped + i.tx_dropped).to_string(),
                ]);
            }
            out.extend(with_label("network", table(INDENT, &rows)));
        }
        other => out.push(line("network", not_ok(other))),
    }
    match &s.gpu {
        Probe::Ok(g) => {
            let opt = |v: Option<u64>| v.map_or("?".into(), format_size);
            let mut rows = vec![
                ["GPU", "NAME", "VRAM USED", "VRAM TOTAL", "UTIL", "TEMP"]
                    .map(String::from)
                    .to_vec(),
            ];
            for d in &g.devices {
                rows.push(vec![
                    d.index.to_string(),
                    d.name.clone().unwrap_or_else(|| "?".into()),
                    opt(d.vram_used_bytes),
                    opt(d.vram_total_bytes),
                    d.utilization_pct.map_or("?".into(), |u| format!("{u} %")),
                    d.temperature_c.map_or("?".into(), |t| format!("{t} °C")),
                ]);
            }
            out.extend(with_label("gpu", table(INDENT, &rows)));
        }
        other => out.push(line("gpu", not_ok(other))),
    }
    match &s.docker {
        Probe::Ok(d) => {
            out.push(line(
                "docker",
                format!(
                    "{} containers, {} running, {} unhealthy ({})",
                    d.containers.len(),
                    d.running,
                    d.unhealthy,
                    d.host
                ),
            ));
            if !d.containers.is_empty() {
                let mut rows = vec![
                    ["NAME", "STATE", "HEALTH", "STREAK", "RESTARTS", "UP"]
                        .map(String::from)
                        .to_vec(),
                ];
                for c in &d.containers {
                    let num = |v: Option<i64>| v.map_or("-".into(), |v| v.to_string());
                    rows.push(vec![
                        c.name.clone(),
                        c.state.clone(),
                        c.health.clone().unwrap_or_else(|| "-".into()),
                        num(c.failing_streak),
                        num(c.restart_count),
                        c.uptime_s.map_or("-".into(), duration),
                    ]);
                }
                out.extend(table(INDENT, &rows));
            }
        }
        other => out.push(line("docker", not_ok(other))),
    }
    // The one score, from what this host measures (its cleanups are the agent's to know).
    let summary = labmesh::probes::summary::from_sample(s);
    let card = labmesh::score::card(
        &s.node,
        Some(&summary),
        None,
        alerting::score::Maintenance::Unknown,
        chrono::Utc::now(),
    );
    out.push(line("score", format!("{}/100", card.score)));
    out
}

/// Puts `label` in front of the first line of an indented table.
fn with_label(label: &str, mut lines: Vec<String>) -> Vec<String> {
    if let Some(first) = lines.first_mut() {
        *first = line(label, first.trim_start().to_owned());
    }
    lines
}
