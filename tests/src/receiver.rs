//! Stand-ins for third-party HTTP services (webhooks, chat APIs) and for a service a check
//! watches: plain HTTP/1.1 over std sockets, recording what they receive.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request a receiver got: path and body.
pub type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// The JSON bodies received, on `path` only when given.
pub fn json_bodies(seen: &Seen, path: Option<&str>) -> Vec<serde_json::Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| path.is_none_or(|want| p == want))
        .filter_map(|(_, b)| serde_json::from_str(b).ok())
        .collect()
}

/// Webhook notifications (on `path` when given) with `status` about an alert of `rule`.
pub fn alert_bodies(
    seen: &Seen,
    path: Option<&str>,
    status: &str,
    rule: &str,
) -> Vec<serde_json::Value> {
    json_bodies(seen, path)
        .into_iter()
        .filter(|b| {
            b["status"] == status
                && b["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["rule"] == rule))
        })
        .collect()
}

/// Reads one HTTP/1.1 request (headers, then `Content-Length` bytes of body).
pub fn read_request(stream: &mut std::net::TcpStream) -> Option<(String, String)> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + len {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    let body = String::from_utf8_lossy(&data[head_end..]).into_owned();
    Some((path, body))
}

/// A receiver on loopback that records every request and answers 200.
pub fn recording_server() -> (SocketAddr, Seen) {
    recording_server_on("127.0.0.1")
}

/// [`recording_server`] on `ip` (any free port): agents in network namespaces reach the root
/// namespace only through the bridge address, not loopback.
pub fn recording_server_on(ip: &str) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let out = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if let Some(req) = read_request(&mut stream) {
                out.lock().unwrap().push(req);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (addr, seen)
}

/// A service that answers 200 on `port` (the check's target coming back).
pub fn healthy_service(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = read_request(&mut stream);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
}
