//! A minimal HTTP/1.1 client for talking to the local agent's API (plain HTTP on loopback by
//! default). Client commands need a GET and a POST with JSON; a full client library would cost
//! more build time than it saves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::AgentUnreachable;

pub struct Response {
    pub status: u16,
    pub body: String,
}

/// The agent answered, but not with JSON.
#[derive(Debug, thiserror::Error)]
#[error("the agent answered with invalid JSON ({reason}): {start}")]
pub struct BadAnswer {
    reason: String,
    /// The first 200 characters of the body.
    start: String,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value, BadAnswer> {
        serde_json::from_str(&self.body).map_err(|e| BadAnswer {
            reason: e.to_string(),
            start: self.body.chars().take(200).collect(),
        })
    }
}

/// Resolves `HOST:PORT` (or `IP:PORT`) to one address.
pub fn resolve(target: &str) -> Result<SocketAddr, AgentUnreachable> {
    target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            AgentUnreachable(format!(
                "cannot resolve {target}; use HOST:PORT, e.g. 127.0.0.1:7371"
            ))
        })
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Response, AgentUnreachable> {
    let unreachable = |e: std::io::Error| {
        AgentUnreachable(format!(
            "cannot reach the labmesh agent at {addr}: {e} (is `labmesh agent` running? point to it with --api-addr or LABMESH_API_ADDR)"
        ))
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(unreachable)?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(unreachable)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(unreachable)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| AgentUnreachable(format!("{addr} did not answer with HTTP")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| AgentUnreachable(format!("{addr} did not answer with HTTP")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok(Response { status, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
