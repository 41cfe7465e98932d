//! The probes that touch the outside world: HTTP (reqwest, rustls with the ring provider the
//! agent installs at start), TCP connect, Docker health (the engine's socket, through bollard),
//! and the command runner in `command.rs`. Each returns a [`ProbeResult`] and never fails: an
//! error is a critical result whose output says what went wrong.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, HealthStatusEnum};

use super::config::{CheckDef, Probe};
use super::machine::Status;

/// Output kept per result (and per event): enough for an error message and a stack trace's
/// head; an event stays small.
pub const OUTPUT_CAP: usize = 4096;
/// How much of an HTTP body is read to look for `body_contains`.
const BODY_READ_CAP: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub status: Status,
    pub output: String,
    pub latency_ms: u64,
}

impl ProbeResult {
    pub fn new(status: Status, output: impl Into<String>, took: Duration) -> Self {
        ProbeResult {
            status,
            output: cap(&output.into(), OUTPUT_CAP),
            latency_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn cap(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What a check keeps between probes: its HTTP client or Docker connection.
pub struct Prober {
    http: Option<Result<reqwest::Client, String>>,
    docker: Option<Result<Docker, String>>,
}

impl Prober {
    pub fn new(def: &CheckDef) -> Prober {
        let http = match &def.probe {
            Probe::Http { ca_file, .. } => Some(http_client(def, ca_file.as_deref())),
            _ => None,
        };
        let docker = matches!(def.probe, Probe::Docker { .. }).then(|| {
            Docker::connect_with_local_defaults().map_err(|e| {
                format!("cannot set up the Docker client: {e} (is DOCKER_HOST right?)")
            })
        });
        Prober { http, docker }
    }

    /// Runs the check's probe once. Ttl checks have no probe (their results arrive by API).
    pub async fn probe(&self, def: &CheckDef) -> ProbeResult {
        let started = Instant::now();
        let found = match &def.probe {
            Probe::Http {
                url,
                expect,
                body_contains,
                ..
            } => self.http(url, expect, body_contains.as_deref()).await,
            Probe::Tcp { address } => tcp(address, def.timeout).await,
            Probe::Command { argv, pass_env } => {
                return super::command::run(argv, pass_env, def.timeout).await;
            }
            Probe::Docker { container } => self.docker(container, def.timeout).await,
            Probe::Ttl { .. } => (Status::Ok, String::new()),
        };
        ProbeResult::new(found.0, found.1, started.elapsed())
    }

    async fn http(
        &self,
        url: &str,
        expect: &[(u16, u16)],
        body_contains: Option<&str>,
    ) -> (Status, String) {
        let client = match &self.http {
            Some(Ok(c)) => c,
            Some(Err(e)) => return (Status::Critical, e.clone()),
            None => return (Status::Critical, "no HTTP client".into()),
        };
        let mut resp = match client.get(url).send().await {
            Ok(r) => r,
            // reqwest names the URL in its errors, credentials and query included.
            Err(e) => return (Status::Critical, describe_reqwest(&e.without_url())),
        };
        let code = resp.status();
        let line = format!(
            "HTTP {} {}",
            code.as_u16(),
            code.canonical_reason().unwrap_or("")
        );
        let status_ok = expect
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&code.as_u16()));
        let wants_body = body_contains.is_some() || !status_ok;
        let mut body = Vec::new();
        while wants_body && body.len() < BODY_READ_CAP {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return (
                        Status::Critical,
                        format!("{line}; {}", describe_reqwest(&e.without_url())),
                    );
                }
            }
        }
        let body = String::from_utf8_lossy(&body);
        if !status_ok {
            let want = expect
                .iter()
                .map(|(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}..{hi}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            return (
                Status::Critical,
                format!("{line} (expected {want}): {}", body.trim()),
            );
        }
        match body_contains {
            Some(needle) if !body.contains(needle) => (
                Status::Critical,
                format!(
                    "{line}, but the body does not contain {needle:?}: {}",
                    body.trim()
                ),
            ),
            _ => (Status::Ok, line),
        }
    }

    async fn docker(&self, container: &str, timeout: Duration) -> (Status, String) {
        let docker = match &self.docker {
            Some(Ok(d)) => d,
            Some(Err(e)) => return (Status::Critical, e.clone()),
            None => return (Status::Critical, "no Docker client".into()),
        };
        let inspect = docker.inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        );
        match tokio::time::timeout(timeout, inspect).await {
            Err(_) => (
                Status::Critical,
                format!(
                    "the Docker engine did not answer within {}s",
                    timeout.as_secs_f64()
                ),
            ),
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => (
                Status::Critical,
                format!("no container named {container:?}"),
            ),
            Ok(Err(e)) => (
                Status::Critical,
                format!(
                    "cannot ask the Docker engine about {container:?}: {e} (can this user read /var/run/docker.sock?)"
                ),
            ),
            Ok(Ok(found)) => docker_status(&found),
        }
    }
}

/// The status of a container as the engine reports it: not running is critical; with a
/// healthcheck, the engine's verdict (`starting` counts as ok until the engine decides);
/// without one, running is ok.
pub fn docker_status(found: &ContainerInspectResponse) -> (Status, String) {
    let Some(state) = &found.state else {
        return (Status::Critical, "the engine reported no state".into());
    };
    if state.running != Some(true) {
        let status = state.status.map_or("unknown".to_owned(), |s| s.to_string());
        let code = state
            .exit_code
            .map_or(String::new(), |c| format!(", exit code {c}"));
        return (
            Status::Critical,
            format!("not running (status {status}{code})"),
        );
    }
    let Some(health) = &state.health else {
        return (Status::Ok, "running (no healthcheck)".into());
    };
    let last_output = health
        .log
        .as_ref()
        .and_then(|log| log.last())
        .and_then(|r| r.output.as_deref())
        .map(str::trim)
        .unwrap_or("");
    match health.status {
        Some(HealthStatusEnum::HEALTHY) => (Status::Ok, "healthy".into()),
        Some(HealthStatusEnum::STARTING) => (Status::Ok, "running, health starting".into()),
        Some(HealthStatusEnum::UNHEALTHY) => (
            Status::Critical,
            format!(
                "unhealthy (failing streak {}): {last_output}",
                health.failing_streak.unwrap_or(0)
            ),
        ),
        _ => (Status::Ok, "running (no healthcheck)".into()),
    }
}

async fn tcp(address: &str, timeout: Duration) -> (Status, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(stream)) => {
            let peer = stream
                .peer_addr()
                .map_or(address.to_owned(), |a| a.to_string());
            (Status::Ok, format!("connected to {peer}"))
        }
        Ok(Err(e)) => (
            Status::Critical,
            format!("cannot connect to {address}: {e}"),
        ),
        Err(_) => (
            Status::Critical,
            format!(
                "no connection to {address} within {}s",
                timeout.as_secs_f64()
            ),
        ),
    }
}

/// The check's HTTP client; with a `ca_file`, only that file's CAs are trusted (a homelab
/// service behind its own CA or a self-signed certificate).
fn http_client(
    def: &CheckDef,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(def.timeout)
        .connect_timeout(def.timeout)
        // A health check talks to the service itself, never through a proxy.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("labmesh/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let mut roots = rustls::RootCertStore::empty();
        for cert in super::fields::load_ca_file(path)? {
            roots.add(cert).map_err(|e| {
                format!(
                    "{}: a certificate is unusable as a CA ({e})",
                    path.display()
                )
            })?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// reqwest's error with its causes (the useful part, e.g. "connection refused", is a cause).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerState, ContainerStateStatusEnum, Health, HealthcheckResult};

    #[test]
    fn cap_respects_char_boundaries() {
        assert_eq!(cap("héllo", 2), "h");
        assert_eq!(cap("abc", 10), "abc");
    }

    fn container(state: ContainerState) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(state),
            ..Default::default()
        }
    }

    #[test]
    fn docker_states() {
        let exited = container(ContainerState {
            running: Some(false),
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(137),
            ..Default::default()
        });
        assert_eq!(
            docker_status(&exited),
            (
                Status::Critical,
                "not running (status exited, exit code 137)".into()
            )
        );
        let plain = container(ContainerState {
            running: Some(true),
            ..Default::default()
        });
        assert_eq!(docker_status(&plain).0, Status::Ok);
        let sick = container(ContainerState {
            running: Some(true),
            health: Some(Health {
                status: Some(HealthStatusEnum::UNHEALTHY),
                failing_streak: Some(4),
                log: Some(vec![HealthcheckResult {
                    output: Some("curl: (7) refused\n".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        assert_eq!(
            docker_status(&sick),
            (
                Status::Critical,
                "unhealthy (failing streak 4): curl: (7) refused".into()
            )
        );
    }

    #[tokio::test]
    async fn tcp_refused_is_critical() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let (status, out) = tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).await;
        assert_eq!(status, Status::Critical);
        assert!(out.contains("cannot connect"), "{out}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert_eq!(tcp(&addr, Duration::from_secs(2)).await.0, Status::Ok);
    }
}
