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
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| AgentUnreachable(format!("{addr} did not answer with HTTP")))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let rest = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| AgentUnreachable(format!("{addr} did not answer with HTTP")))?;
    // Chunks are cut in bytes, which may fall inside a UTF-8 character: join them first, then
    // decode.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        String::from_utf8_lossy(&dechunk(rest)).into_owned()
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    Ok(Response { status, body })
}

/// The body of a chunked response. Stops at the last chunk, or at the first one that is cut
/// short or malformed (what arrived so far is kept).
fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = s.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&s[..line_end]).unwrap_or("");
        // Chunk extensions (";name=value") are allowed after the size.
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        let rest = &s[line_end + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = &rest[n..];
        s = s.strip_prefix(b"\r\n").unwrap_or(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn chunks_cut_inside_a_character_are_joined_before_decoding() {
        // "é" is two bytes; the server cut the body between them.
        let mut raw = b"3\r\nab\xc3\r\n2\r\n\xa9!\r\n0\r\n\r\n".to_vec();
        assert_eq!(String::from_utf8(dechunk(&raw)).unwrap(), "ab\u{e9}!");
        // Cut short, garbage sizes, a size past the end, extensions: no panic.
        for bad in [&b"ff\r\nab"[..], b"zz\r\nab\r\n", b"\r\n", b""] {
            let _ = dechunk(bad);
        }
        // A chunk cut short is dropped, what came before it kept.
        raw.truncate(5);
        assert_eq!(dechunk(&raw), b"");
        assert_eq!(dechunk(b"2;x=y\r\nok\r\n0\r\n\r\n"), b"ok");
    }
}
