//! The one status model: what `labmesh status` prints and the web page shows, built once from
//! the `GET /v1/status` document. Both render the same tables, rows and cells; each cell carries
//! a [`Tone`] (good, warn, bad) that the terminal paints with colour and the page with a class.
//! Only the presentation differs (upper-case titles and `none` lines in a terminal, headings and
//! cards on a phone).

mod cells;

use serde_json::Value;

pub use cells::{age, summary_cells, text};

/// How a cell reads at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
}

impl Tone {
    /// The CSS class of the web page (empty for plain cells).
    pub fn class(self) -> &'static str {
        match self {
            Tone::Plain => "",
            Tone::Good => "good",
            Tone::Warn => "warn",
            Tone::Bad => "bad",
        }
    }

    /// The terminal's SGR colour code.
    pub fn ansi(self) -> Option<&'static str> {
        match self {
            Tone::Plain => None,
            Tone::Good => Some("32"),
            Tone::Warn => Some("33"),
            Tone::Bad => Some("31"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

impl Cell {
    fn plain(text: String) -> Cell {
        Cell {
            text,
            tone: Tone::Plain,
        }
    }

    fn toned(text: String, tone: Tone) -> Cell {
        Cell { text, tone }
    }
}

/// One table of the screen.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The page's element id (`nodes`, `services`, `incidents`, `deployments`).
    pub id: &'static str,
    pub title: &'static str,
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
}

/// The whole screen.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusModel {
    pub mesh: String,
    /// The node that answered.
    pub node: String,
    pub version: String,
    pub events: String,
    /// Every node of the mesh, then unhealthy services, open incidents, recent deployments.
    pub nodes: Table,
    pub sections: Vec<Table>,
    /// Refused peers and messages by reason (`bad_certificate 2, ...`), or `none`.
    pub refused: String,
}

/// Column titles of the host figures, in [`summary_cells`] order.
pub const SUMMARY_HEADER: [&str; 7] = ["CPU", "Steal", "Mem", "Swap", "Disk", "VRAM", "Score"];

fn list<'a>(status: &'a Value, key: &str) -> &'a [Value] {
    status[key].as_array().map_or(&[], Vec::as_slice)
}

/// How a score reads: good ≥ 80, fair ≥ 50, else poor.
pub fn score_tone(summary: &Value) -> Tone {
    match summary["score"].as_u64() {
        None => Tone::Plain,
        Some(80..) => Tone::Good,
        Some(50..=79) => Tone::Warn,
        Some(_) => Tone::Bad,
    }
}

fn liveness_tone(liveness: &str) -> Tone {
    match liveness {
        "alive" => Tone::Good,
        "suspect" => Tone::Warn,
        "dead" | "offline" => Tone::Bad,
        _ => Tone::Plain,
    }
}

fn severity_tone(severity: &str) -> Tone {
    match severity {
        "warning" => Tone::Warn,
        "error" | "critical" => Tone::Bad,
        _ => Tone::Plain,
    }
}

fn deployment_tone(status: &str) -> Tone {
    match status {
        "completed" => Tone::Good,
        "failed" => Tone::Bad,
        _ => Tone::Warn,
    }
}

/// The node's marks: `*` for the alerter, `here` for the node that answered, `transient`.
fn marks(n: &Value) -> String {
    let mut out = Vec::new();
    if n["alerter"] == Value::Bool(true) {
        out.push("*");
    }
    if n["self"] == Value::Bool(true) {
        out.push("here");
    }
    if n["transient"] == Value::Bool(true) {
        out.push("transient");
    }
    out.join(" ")
}

fn nodes(status: &Value) -> Table {
    let mut header = vec!["Node", "Marks", "Liveness", "Heartbeat", "Role", "Version"];
    header.extend(SUMMARY_HEADER);
    header.extend(["Gossip", "API"]);
    let rows = list(status, "nodes")
        .iter()
        .map(|n| {
            let liveness = text(n, "liveness");
            let mut row = vec![
                Cell::plain(text(n, "node")),
                Cell::plain(marks(n)),
                Cell::toned(liveness.clone(), liveness_tone(&liveness)),
                Cell::plain(
                    n["last_heartbeat_age_ms"]
                        .as_u64()
                        .map(age)
                        .unwrap_or_default(),
                ),
                Cell::plain(text(n, "role")),
                Cell::plain(text(n, "version")),
            ];
            let figures = summary_cells(&n["summary"]);
            let last = figures.len() - 1;
            for (i, figure) in figures.into_iter().enumerate() {
                let tone = if i == last {
                    score_tone(&n["summary"])
                } else {
                    Tone::Plain
                };
                row.push(Cell::toned(figure, tone));
            }
            row.push(Cell::plain(text(n, "gossip_addr")));
            row.push(Cell::plain(text(n, "api_addr")));
            row
        })
        .collect();
    Table {
        id: "nodes",
        title: "Nodes",
        header,
        rows,
    }
}

/// A section's rows: `keys` of each entry, the first cell toned by `tone`.
fn rows(entries: &[Value], keys: &[&str], tone: impl Fn(&Value) -> Tone) -> Vec<Vec<Cell>> {
    entries
        .iter()
        .map(|e| {
            keys.iter()
                .enumerate()
                .map(|(i, k)| {
                    let t = if i == 0 { tone(e) } else { Tone::Plain };
                    Cell::toned(text(e, k), t)
                })
                .collect()
        })
        .collect()
}

/// The model of the `/v1/status` document.
pub fn model(status: &Value) -> StatusModel {
    let services = Table {
        id: "services",
        title: "Unhealthy services",
        header: vec!["Service", "Node", "Since", "Last event"],
        rows: rows(
            list(status, "services_unhealthy"),
            &["service", "node", "since", "last_event_type"],
            |_| Tone::Bad,
        ),
    };
    let incidents = Table {
        id: "incidents",
        title: "Open incidents",
        header: vec![
            "Severity", "Service", "Node", "Count", "Started", "Last", "Id",
        ],
        rows: rows(
            list(status, "incidents_open"),
            &[
                "severity",
                "service",
                "node",
                "occurrence_count",
                "started_at",
                "last_occurrence",
                "id",
            ],
            |i| severity_tone(i["severity"].as_str().unwrap_or_default()),
        ),
    };
    let deployments = Table {
        id: "deployments",
        title: "Recent deployments",
        header: vec!["Status", "Service", "Node", "Started", "Correlation id"],
        rows: rows(
            list(status, "deployments_recent"),
            &["status", "service", "node", "started_at", "correlation_id"],
            |d| deployment_tone(d["status"].as_str().unwrap_or_default()),
        ),
    };
    let refused = status["rejections"]
        .as_object()
        .filter(|r| !r.is_empty())
        .map_or_else(
            || "none".to_owned(),
            |r| {
                r.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
    StatusModel {
        mesh: text(status, "mesh"),
        node: text(status, "node"),
        version: text(status, "version"),
        events: text(status, "events"),
        nodes: nodes(status),
        sections: vec![services, incidents, deployments],
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_model_for_the_screen_and_the_page() {
        let status = json!({
            "mesh": "home", "node": "alpha", "version": "0.1.0",
            "rejections": {"bad_certificate": 2},
            "nodes": [
                {"node": "alpha", "self": true, "liveness": "alive", "alerter": true,
                 "version": "0.1.0", "gossip_addr": "10.0.0.1:7370",
                 "last_heartbeat_age_ms": 0, "summary": {"cpu": 5.0, "gpus": 0, "score": 97}},
                {"node": "bravo", "liveness": "suspect", "transient": true, "summary": null},
            ],
            "incidents_open": [{"service": "nas", "node": "bravo", "severity": "error",
                                "started_at": "2026-01-01T00:00:00Z",
                                "occurrence_count": 2, "id": "inc-1-bravo-nas"}],
        });
        let m = model(&status);
        assert_eq!(m.refused, "bad_certificate 2");
        let alpha = &m.nodes.rows[0];
        assert_eq!(alpha.len(), m.nodes.header.len());
        assert_eq!(alpha[1].text, "* here");
        assert_eq!(alpha[2].tone, Tone::Good);
        assert_eq!(alpha[5].text, "0.1.0");
        let score = m.nodes.header.iter().position(|h| *h == "Score").unwrap();
        assert_eq!(
            (alpha[score].text.as_str(), alpha[score].tone),
            ("97", Tone::Good)
        );
        assert_eq!(m.nodes.rows[1][1].text, "transient");
        assert_eq!(m.nodes.rows[1][2].tone, Tone::Warn);
        let incidents = &m.sections[1];
        assert_eq!(incidents.rows[0][0].tone, Tone::Bad);
        let started = incidents
            .header
            .iter()
            .position(|h| *h == "Started")
            .unwrap();
        assert_eq!(incidents.rows[0][started].text, "2026-01-01T00:00:00Z");
        assert!(m.sections[0].rows.is_empty() && m.sections[2].rows.is_empty());
    }
}
