//! The five world files, computed from a [`WorldState`] and nothing else.
//!
//! Every view is a pure function of the state: no generation time, no host name, no hash-map
//! order. Two nodes with the same state write the same bytes, and a world rebuilt from the
//! events after deleting the checkpoint writes the same bytes again. Only `nodes.json` may carry
//! the writer's own live mesh view, and only through [`WorldState::views_with_live`].
//!
//! Incidents and deployments are folds over the state's records in [`OrderKey`] order (the
//! record set iterates in that order already): a late event lands where its time puts it, so
//! the views are those the events would have produced had they arrived on time.
//!
//! [`OrderKey`]: super::order::OrderKey

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::WorldError;
use super::state::{Availability, Kind, Record, ServiceStatus, WorldState};
use crate::durable::{IoError, write_file_atomic};
use crate::event::Severity;

/// How the views print a time: RFC 3339 UTC with `Z`, and only the sub-second digits the event
/// had (`2026-05-12T12:05:00Z`, `2026-05-12T12:05:00.123Z`), as in the seed's example.
pub fn format_view_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The five world files' contents, as JSON values whose objects are in key order.
#[derive(Debug, Clone, PartialEq)]
pub struct Views {
    pub nodes: Value,
    pub services: Value,
    pub deployments: Value,
    pub incidents: Value,
    pub runtime_summary: Value,
}

impl Views {
    /// The file names under `<data>/world/`, in the order [`Views::files`] lists them.
    pub const FILE_NAMES: [&'static str; 5] = [
        "nodes.json",
        "services.json",
        "deployments.json",
        "incidents.json",
        "runtime-summary.json",
    ];

    /// Each file name with its content.
    pub fn files(&self) -> [(&'static str, &Value); 5] {
        [
            (Self::FILE_NAMES[0], &self.nodes),
            (Self::FILE_NAMES[1], &self.services),
            (Self::FILE_NAMES[2], &self.deployments),
            (Self::FILE_NAMES[3], &self.incidents),
            (Self::FILE_NAMES[4], &self.runtime_summary),
        ]
    }

    /// A file's bytes: pretty JSON and a trailing newline.
    pub fn to_bytes(value: &Value) -> Vec<u8> {
        // A `Value` always serialises.
        let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Writes the files into `world_dir` (created if missing), each atomically, skipping those
    /// whose bytes are already there: readers watching the folder see only real changes, and an
    /// idle agent does not wear the disk. Returns the paths it rewrote.
    pub fn write(&self, world_dir: &Path) -> Result<Vec<PathBuf>, WorldError> {
        std::fs::create_dir_all(world_dir)
            .map_err(|e| IoError::new("create folder", world_dir, e))?;
        let mut written = Vec::new();
        for (name, value) in self.files() {
            let path = world_dir.join(name);
            let bytes = Self::to_bytes(value);
            match std::fs::read(&path) {
                Ok(old) if old == bytes => continue,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(IoError::new("read", &path, e).into()),
            }
            write_file_atomic(&path, &bytes)?;
            written.push(path);
        }
        Ok(written)
    }
}

impl WorldState {
    /// The five views of this state.
    pub fn views(&self) -> Views {
        self.build_views(None)
    }

    /// The views with each node's current mesh liveness (as the caller's mesh sees it) added to
    /// `nodes.json` under `live`. Nodes known only to the mesh are listed too. The other four
    /// files are the same as [`WorldState::views`]'.
    pub fn views_with_live(&self, live: &BTreeMap<String, Value>) -> Views {
        self.build_views(Some(live))
    }

    fn build_views(&self, live: Option<&BTreeMap<String, Value>>) -> Views {
        let records = self.records.read();
        let fold = fold_services(&records);
        let deployments = fold_deployments(&records);
        let nodes = self.node_views(None);
        let services = self.service_views(&fold);
        let summary = summary(self, &nodes, &services, &fold, &deployments);
        // The summary stays pure: it counts the nodes the events know, whatever the mesh says.
        let nodes = match live {
            Some(_) => to_value(&self.node_views(live)),
            None => to_value(&nodes),
        };
        Views {
            nodes,
            services: to_value(&services),
            deployments: to_value(&deployments),
            incidents: to_value(&fold.incidents),
            runtime_summary: to_value(&summary),
        }
    }

    fn node_views(&self, live: Option<&BTreeMap<String, Value>>) -> BTreeMap<String, NodeView> {
        // availability_since: the first report of the current state after a different one.
        let mut since: BTreeMap<&str, (Availability, DateTime<Utc>)> = BTreeMap::new();
        let presence = self.presence.read();
        for p in &presence {
            match since.get_mut(p.peer.as_str()) {
                Some((state, _)) if *state == p.state => {}
                Some(entry) => *entry = (p.state, p.timestamp),
                None => {
                    since.insert(p.peer.as_str(), (p.state, p.timestamp));
                }
            }
        }
        let mut names: BTreeSet<&str> = self.last_seen.iter().map(|(k, _)| k.as_str()).collect();
        names.extend(self.availability.iter().map(|(k, _)| k.as_str()));
        if let Some(live) = live {
            names.extend(live.keys().map(String::as_str));
        }
        names
            .into_iter()
            .map(|name| {
                let seen = self.last_seen.get(name).map(|reg| &reg.val);
                let availability = self.availability.get(name).map(|reg| reg.val);
                let view = NodeView {
                    node: name.to_owned(),
                    availability: availability.map_or("unknown", Availability::as_str),
                    availability_since: since.get(name).map(|(_, at)| format_view_time(*at)),
                    last_seen: seen.map(|s| format_view_time(s.timestamp)),
                    last_event_type: seen.map(|s| s.event_type.clone()),
                    live: live.map(|l| l.get(name).cloned().unwrap_or(Value::Null)),
                };
                (name.to_owned(), view)
            })
            .collect()
    }

    fn service_views(&self, fold: &ServiceFold<'_>) -> BTreeMap<String, ServiceView> {
        self.health
            .iter()
            .map(|((node, service), reg)| {
                let track = fold.tracks.get(&(node.as_str(), service.as_str()));
                let view = ServiceView {
                    node: node.clone(),
                    service: service.clone(),
                    status: reg.val.status.as_str(),
                    since: track.map(|t| format_view_time(t.since)),
                    last_event_type: reg.val.event_type.as_str(),
                    incident: track.and_then(|t| t.active).map(|i| fold.order[i].clone()),
                };
                (format!("{node}/{service}"), view)
            })
            .collect()
    }
}

fn to_value<T: Serialize>(value: &T) -> Value {
    // Our view types have string keys only, so this cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[derive(Serialize)]
struct NodeView {
    node: String,
    availability: &'static str,
    availability_since: Option<String>,
    last_seen: Option<String>,
    last_event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<Value>,
}

#[derive(Serialize)]
struct ServiceView {
    node: String,
    service: String,
    status: &'static str,
    since: Option<String>,
    last_event_type: &'static str,
    incident: Option<String>,
}

/// One incident, fields in the seed's order.
#[derive(Serialize)]
struct IncidentView {
    id: String,
    node: String,
    service: String,
    status: &'static str,
    severity: Severity,
    started_at: String,
    last_occurrence: String,
    occurrence_count: u64,
    events: Vec<String>,
    correlation_id: String,
    resolved_at: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    diagnostics: Vec<Value>,
}

/// Where a (node, service) stands at the end of the fold.
struct Track {
    status: ServiceStatus,
    /// When `status` began: the first event of the current run of that status.
    since: DateTime<Utc>,
    /// Index into `ServiceFold::order` of the active incident.
    active: Option<usize>,
}

struct ServiceFold<'a> {
    incidents: BTreeMap<String, IncidentView>,
    /// Incident ids in the order they opened (event order).
    order: Vec<String>,
    tracks: BTreeMap<(&'a str, &'a str), Track>,
}

/// The seed's incident lifecycle, per (node, service), in event order: a failure opens an
/// incident or collapses into the active one; `deployment_failed` attaches its diagnostics to
/// the active one or opens one (then it is an occurrence); `service_recovered` resolves.
fn fold_services(records: &BTreeSet<Record>) -> ServiceFold<'_> {
    let mut incidents: BTreeMap<String, IncidentView> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut tracks: BTreeMap<(&str, &str), Track> = BTreeMap::new();
    for rec in records {
        let Some(status) = rec.kind.health() else {
            continue;
        };
        let track = tracks
            .entry((rec.node.as_str(), rec.service.as_str()))
            .or_insert(Track {
                status,
                since: rec.timestamp,
                active: None,
            });
        if track.status != status {
            track.status = status;
            track.since = rec.timestamp;
        }
        let active = track.active.and_then(|i| incidents.get_mut(&order[i]));
        match (rec.kind, active) {
            (Kind::ServiceRecovered, Some(inc)) => {
                inc.status = "resolved";
                inc.resolved_at = Some(format_view_time(rec.timestamp));
                track.active = None;
            }
            (Kind::ServiceRecovered, None) => {}
            (Kind::DeploymentFailed, Some(inc)) => {
                inc.severity = inc.severity.max(rec.severity);
                inc.diagnostics.push(diagnostic(rec));
            }
            (_, Some(inc)) => {
                let at = format_view_time(rec.timestamp);
                inc.severity = inc.severity.max(rec.severity);
                inc.occurrence_count += 1;
                inc.last_occurrence = at.clone();
                inc.events.push(at);
            }
            (kind, None) => {
                let id = unique_id(&incidents, rec);
                let at = format_view_time(rec.timestamp);
                let diagnostics = if kind == Kind::DeploymentFailed {
                    vec![diagnostic(rec)]
                } else {
                    Vec::new()
                };
                incidents.insert(
                    id.clone(),
                    IncidentView {
                        id: id.clone(),
                        node: rec.node.clone(),
                        service: rec.service.clone(),
                        status: "open",
                        severity: rec.severity,
                        started_at: at.clone(),
                        last_occurrence: at.clone(),
                        occurrence_count: 1,
                        events: vec![at],
                        correlation_id: rec.correlation_id.clone(),
                        resolved_at: None,
                        diagnostics,
                    },
                );
                track.active = Some(order.len());
                order.push(id);
            }
        }
    }
    ServiceFold {
        incidents,
        order,
        tracks,
    }
}

/// `inc-<unix seconds of started_at>-<node>-<service>`, with `-2`, `-3`… when a second incident
/// of the same service starts within the same second (the fold is ordered, so the suffixes are
/// the same on every node).
fn unique_id(incidents: &BTreeMap<String, IncidentView>, rec: &Record) -> String {
    let base = format!(
        "inc-{}-{}-{}",
        rec.timestamp.timestamp(),
        rec.node,
        rec.service
    );
    if !incidents.contains_key(&base) {
        return base;
    }
    (2u64..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| !incidents.contains_key(id))
        .unwrap_or(base)
}

/// What a failed deployment attaches to an incident: when, which run, and its payload extract.
fn diagnostic(rec: &Record) -> Value {
    let mut entry = Map::new();
    entry.insert("at".into(), format_view_time(rec.timestamp).into());
    entry.insert("correlation_id".into(), rec.correlation_id.clone().into());
    entry.extend(rec.details());
    Value::Object(entry)
}

#[derive(Serialize)]
struct DeploymentView {
    correlation_id: String,
    node: String,
    service: String,
    status: &'static str,
    started_at: Option<String>,
    finished_at: Option<String>,
    stage: Option<Value>,
    error: Option<Value>,
    events: Vec<Value>,
    /// Key of the run's first deployment event, for "latest deployment".
    #[serde(skip)]
    first: super::order::OrderKey,
}

/// Deployments by correlation id. The status, `finished_at`, `stage` and `error` come from the
/// run's latest deployment event (started: running, completed, failed), so a later success
/// under the same id completes a failed run; the failure stays in `events` with its stage and
/// error. Remediation events under the id are listed in `events` but do not change the status;
/// an id with only remediation events is not a deployment. Events without a correlation id
/// cannot be tied to a run and are left out.
fn fold_deployments(records: &BTreeSet<Record>) -> BTreeMap<String, DeploymentView> {
    let mut runs: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for rec in records {
        let relevant = rec.kind.is_deployment()
            || matches!(
                rec.kind,
                Kind::RemediationStarted | Kind::RemediationCompleted
            );
        if relevant && !rec.correlation_id.is_empty() {
            runs.entry(rec.correlation_id.as_str())
                .or_default()
                .push(rec);
        }
    }
    let mut out = BTreeMap::new();
    for (cid, recs) in runs {
        let mut deploy_events = recs.iter().copied().filter(|r| r.kind.is_deployment());
        let Some(first) = deploy_events.next() else {
            continue;
        };
        let last = deploy_events.next_back().unwrap_or(first);
        out.insert(cid.to_owned(), deployment_view(cid, &recs, first, last));
    }
    out
}

fn deployment_view(cid: &str, recs: &[&Record], first: &Record, last: &Record) -> DeploymentView {
    let details = last.details();
    let (status, finished) = match last.kind {
        Kind::DeploymentCompleted => ("completed", true),
        Kind::DeploymentFailed => ("failed", true),
        _ => ("running", false),
    };
    let events = recs
        .iter()
        .map(|r| {
            let mut entry = Map::new();
            entry.insert("at".into(), format_view_time(r.timestamp).into());
            entry.insert("type".into(), r.kind.as_str().into());
            entry.insert("node".into(), r.node.clone().into());
            entry.extend(r.details());
            Value::Object(entry)
        })
        .collect();
    DeploymentView {
        correlation_id: cid.to_owned(),
        node: first.node.clone(),
        service: first.service.clone(),
        status,
        started_at: recs
            .iter()
            .find(|r| r.kind == Kind::DeploymentStarted)
            .map(|r| format_view_time(r.timestamp)),
        finished_at: finished.then(|| format_view_time(last.timestamp)),
        stage: details.get("stage").cloned(),
        error: (last.kind == Kind::DeploymentFailed)
            .then(|| details.get("error").cloned())
            .flatten(),
        events,
        first: first.key,
    }
}

#[derive(Serialize)]
struct Summary {
    nodes: NodeCounts,
    services: ServiceCounts,
    incidents: IncidentCounts,
    deployments: DeploymentCounts,
    last_event_at: Option<String>,
}

#[derive(Serialize, Default)]
struct NodeCounts {
    total: usize,
    online: usize,
    offline: usize,
    left: usize,
    unknown: usize,
}

#[derive(Serialize)]
struct ServiceCounts {
    total: usize,
    healthy: usize,
    unhealthy: usize,
    unhealthy_services: Vec<String>,
}

#[derive(Serialize)]
struct IncidentCounts {
    total: usize,
    open: usize,
    resolved: usize,
    open_ids: Vec<String>,
}

#[derive(Serialize)]
struct DeploymentCounts {
    total: usize,
    running: usize,
    completed: usize,
    failed: usize,
    latest: Option<LatestDeployment>,
}

#[derive(Serialize)]
struct LatestDeployment {
    correlation_id: String,
    node: String,
    service: String,
    status: &'static str,
    started_at: Option<String>,
    finished_at: Option<String>,
}

fn summary(
    world: &WorldState,
    nodes: &BTreeMap<String, NodeView>,
    services: &BTreeMap<String, ServiceView>,
    fold: &ServiceFold<'_>,
    deployments: &BTreeMap<String, DeploymentView>,
) -> Summary {
    let mut node_counts = NodeCounts {
        total: nodes.len(),
        ..NodeCounts::default()
    };
    for n in nodes.values() {
        match n.availability {
            "online" => node_counts.online += 1,
            "offline" => node_counts.offline += 1,
            "left" => node_counts.left += 1,
            _ => node_counts.unknown += 1,
        }
    }
    let unhealthy_services: Vec<String> = services
        .iter()
        .filter(|(_, s)| s.status == ServiceStatus::Unhealthy.as_str())
        .map(|(k, _)| k.clone())
        .collect();
    let open_ids: Vec<String> = fold
        .incidents
        .values()
        .filter(|i| i.status == "open")
        .map(|i| i.id.clone())
        .collect();
    let count = |status: &str| deployments.values().filter(|d| d.status == status).count();
    let latest = deployments
        .values()
        .max_by_key(|d| d.first)
        .map(|d| LatestDeployment {
            correlation_id: d.correlation_id.clone(),
            node: d.node.clone(),
            service: d.service.clone(),
            status: d.status,
            started_at: d.started_at.clone(),
            finished_at: d.finished_at.clone(),
        });
    Summary {
        nodes: node_counts,
        services: ServiceCounts {
            total: services.len(),
            healthy: services.len() - unhealthy_services.len(),
            unhealthy: unhealthy_services.len(),
            unhealthy_services,
        },
        incidents: IncidentCounts {
            total: fold.incidents.len(),
            open: open_ids.len(),
            resolved: fold.incidents.len() - open_ids.len(),
            open_ids,
        },
        deployments: DeploymentCounts {
            total: deployments.len(),
            running: count("running"),
            completed: count("completed"),
            failed: count("failed"),
            latest,
        },
        last_event_at: world.latest().map(|(_, at)| format_view_time(*at)),
    }
}
