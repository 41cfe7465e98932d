//! Docker containers through the engine's API (bollard): for each container its state, health
//! status, failing streak, restart count and uptime. The engine is `DOCKER_HOST` when set, else
//! `/var/run/docker.sock`; no engine is `absent`, an engine that refuses or does not answer is
//! `error`, and neither stops the other probes.

use std::path::Path;
use std::time::Duration;

use bollard::Docker as Client;
use bollard::query_parameters::ListContainersOptionsBuilder;

use super::{Container, Docker, Probe};

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where the engine is: `DOCKER_HOST`, else the default socket when it exists.
fn engine() -> Result<String, Probe<Docker>> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.trim().is_empty() => Ok(h.trim().to_owned()),
        _ if Path::new(DEFAULT_SOCKET).exists() => Ok(format!("unix://{DEFAULT_SOCKET}")),
        _ => Err(Probe::absent(format!(
            "no Docker: {DEFAULT_SOCKET} not found and DOCKER_HOST is not set"
        ))),
    }
}

/// A hint for the usual causes of a refused connection.
fn explain(host: &str, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let hint = if text.contains("Permission denied") || text.contains("permission denied") {
        " (add the user running labmesh to the `docker` group)"
    } else if text.contains("Connection refused") || text.contains("No such file") {
        " (is the Docker engine running?)"
    } else {
        ""
    };
    format!("cannot reach Docker at {host}: {text}{hint}")
}

/// Restarts `container` (the engine stops it with SIGTERM, then SIGKILL after `grace`, and
/// starts it again), within `grace` plus `limit`. The error names the engine and the cause.
pub async fn restart(container: &str, grace: Duration, limit: Duration) -> Result<(), String> {
    let host = engine().map_err(|absent| absent.reason().unwrap_or("no Docker").to_owned())?;
    let client = Client::connect_with_host(&host)
        .map_err(|e| explain(&host, &e))?
        .with_timeout(grace + limit);
    let options = bollard::query_parameters::RestartContainerOptionsBuilder::default()
        .t(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX))
        .build();
    match tokio::time::timeout(
        grace + limit,
        client.restart_container(container, Some(options)),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(explain(&host, &e)),
        Err(_) => Err(format!(
            "Docker at {host} did not restart {container} within {} s",
            (grace + limit).as_secs()
        )),
    }
}

/// Samples every container, within `limit` in all.
pub async fn sample(limit: Duration) -> Probe<Docker> {
    let host = match engine() {
        Ok(h) => h,
        Err(absent) => return absent,
    };
    let client = match Client::connect_with_host(&host) {
        Ok(c) => c.with_timeout(limit),
        Err(e) => return Probe::error(explain(&host, &e)),
    };
    match tokio::time::timeout(limit, containers(&client, &host)).await {
        Ok(p) => p,
        Err(_) => Probe::error(format!(
            "Docker at {host} did not answer within {} s",
            limit.as_secs()
        )),
    }
}

async fn containers(client: &Client, host: &str) -> Probe<Docker> {
    let options = ListContainersOptionsBuilder::new().all(true).build();
    let list = match client.list_containers(Some(options)).await {
        Ok(l) => l,
        Err(e) => return Probe::error(explain(host, &e)),
    };
    let now = chrono::Utc::now();
    let mut out = Vec::with_capacity(list.len());
    for summary in list {
        let name = summary
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_owned())
            .or_else(|| summary.id.clone())
            .unwrap_or_default();
        let mut c = Container {
            name: name.clone(),
            image: summary.image.clone(),
            state: summary
                .state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            health: None,
            failing_streak: None,
            restart_count: None,
            started_at: None,
            uptime_s: None,
            exit_code: None,
            oom_killed: None,
            error: None,
            restart_on_unhealthy: summary
                .labels
                .as_ref()
                .and_then(|l| l.get(super::RESTART_LABEL.0))
                .is_some_and(|v| v == super::RESTART_LABEL.1),
            health_log: Vec::new(),
        };
        let id = summary.id.as_deref().unwrap_or(&name);
        match client.inspect_container(id, None).await {
            Ok(info) => {
                c.restart_count = info.restart_count;
                if let Some(state) = info.state {
                    if let Some(s) = state.status {
                        c.state = s.to_string();
                    }
                    let running = state.running.unwrap_or(false);
                    c.exit_code = state.exit_code.filter(|_| !running);
                    c.oom_killed = state.oom_killed;
                    c.started_at = state.started_at.filter(|s| !s.starts_with("0001-"));
                    if running {
                        c.uptime_s = c
                            .started_at
                            .as_deref()
                            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                            .map(|t| {
                                (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64
                            });
                    }
                    // The engine keeps the last health status of a stopped container: stale,
                    // and not a sick service (it was stopped), so only a running one has one.
                    if let Some(h) = state.health.filter(|_| running) {
                        c.health = h
                            .status
                            .map(|s| s.to_string())
                            .filter(|s| !s.is_empty() && s != "none");
                        c.failing_streak = h.failing_streak.filter(|_| c.health.is_some());
                        c.health_log = health_lines(h.log.as_deref().unwrap_or_default());
                    }
                }
            }
            // Removed between the list and the inspect, or the engine hiccuped: keep what the
            // list said.
            Err(e) => c.error = Some(e.to_string()),
        }
        out.push(c);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let running = out.iter().filter(|c| c.state == "running").count() as u32;
    let unhealthy = out
        .iter()
        .filter(|c| c.health.as_deref() == Some("unhealthy"))
        .count() as u32;
    Probe::Ok(Docker {
        host: host.to_owned(),
        running,
        unhealthy,
        containers: out,
    })
}

/// How many health-check outputs to keep, and how long each may be: enough to say why.
const HEALTH_LINES: usize = 3;
const HEALTH_LINE_CHARS: usize = 200;

/// The last [`HEALTH_LINES`] health-check outputs, each its first non-empty line, shortened.
fn health_lines(log: &[bollard::models::HealthcheckResult]) -> Vec<String> {
    let start = log.len().saturating_sub(HEALTH_LINES);
    log[start..]
        .iter()
        .map(|r| {
            let line = r
                .output
                .as_deref()
                .and_then(|o| o.lines().map(str::trim).find(|l| !l.is_empty()))
                .unwrap_or("");
            let line: String = line.chars().take(HEALTH_LINE_CHARS).collect();
            match r.exit_code {
                Some(code) if line.is_empty() => format!("exit {code}"),
                Some(code) => format!("exit {code}: {line}"),
                None => line,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_lines_keep_the_last_three_outputs_first_line_each() {
        let r = |code: i64, out: &str| bollard::models::HealthcheckResult {
            exit_code: Some(code),
            output: Some(out.to_owned()),
            ..Default::default()
        };
        let log = [
            r(0, "ok"),
            r(1, "\n  curl: (7) Failed to connect\nmore"),
            r(1, ""),
            r(1, &"x".repeat(500)),
        ];
        let lines = health_lines(&log);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "exit 1: curl: (7) Failed to connect");
        assert_eq!(lines[1], "exit 1");
        assert_eq!(lines[2].len(), "exit 1: ".len() + HEALTH_LINE_CHARS);
        assert!(health_lines(&[]).is_empty());
    }

    #[test]
    fn refusal_messages_carry_a_hint() {
        let m = explain(
            "unix:///var/run/docker.sock",
            &"Permission denied (os error 13)",
        );
        assert!(m.contains("docker` group"), "{m}");
        let m = explain("unix:///x.sock", &"Connection refused (os error 111)");
        assert!(m.contains("engine running"), "{m}");
    }

    /// A DOCKER_HOST with nothing behind it is an error value, quickly; never a panic.
    #[tokio::test]
    async fn a_dead_engine_is_an_error_value() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        // A socket file nobody listens on: connect() is refused.
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let host = format!("unix://{}", sock.display());
        let client = Client::connect_with_host(&host).unwrap();
        let p = containers(&client, &host).await;
        assert_eq!(p.status(), "error", "{p:?}");
        assert!(p.reason().unwrap().contains("cannot reach Docker"), "{p:?}");
    }
}
