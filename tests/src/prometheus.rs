//! A real Prometheus (Debian's `prometheus`, which scripts/test installs) for tests: started
//! on a free port with a test's own scrape config and storage, queried over its HTTP API, and
//! killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::{free_port, http};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping the agent at `target` every second.
    pub fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        Self::start_scraping(
            dir,
            &format!("    static_configs:\n      - targets: [\"{target}\"]\n"),
        )
    }

    /// Starts Prometheus with one job, `labmesh`, scraping every second the targets that
    /// `targets_yaml` gives (the job's `static_configs:` or `file_sd_configs:` lines, indented
    /// by four spaces).
    pub fn start_scraping(dir: &Path, targets_yaml: &str) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install Debian's `prometheus` package (scripts/test installs it)"
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: labmesh\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    honor_labels: true\n{targets_yaml}"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("spawn prometheus");
        let prom = Prometheus { child, addr, log };
        prom.wait_ready();
        prom
    }

    /// Waits until Prometheus answers `/-/ready` (20 s at most).
    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !matches!(http(self.addr, "GET", "/-/ready", None), Ok((200, _))) {
            assert!(
                std::time::Instant::now() < deadline,
                "Prometheus not ready in 20 s; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/query` for `expr`: the result vector (panics unless the status is success).
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let (status, body) = http(self.addr, "GET", &path, None).expect("query Prometheus");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{expr}: {e}: {body}"));
        assert!(
            status == 200 && v["status"] == "success",
            "{expr}: HTTP {status}: {body}"
        );
        match &v["data"]["result"] {
            Value::Array(a) => a.clone(),
            // A scalar result (`resultType: scalar`) is one value.
            other => vec![other.clone()],
        }
    }

    /// The value of a one-element instant vector, when there is exactly one.
    pub fn value(&self, expr: &str) -> Option<f64> {
        match self.query(expr).as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
