//! The replicated world state: what the views need to know about the events, as a product of
//! join-semilattices, so that applying events in any order, any number of times, and merging
//! states from peers all land on the same value.
//!
//! Two kinds of parts:
//! - grow-only sets of compact records for the events whose *history* matters (incident and
//!   deployment lifecycles, node availability). The views sort them by [`OrderKey`] (a
//!   `BTreeSet` already is) and fold; a late event simply lands at its place in the fold.
//! - last-writer-wins registers for what only the *latest* event decides (last seen per node,
//!   availability per peer, health per service), and a max register for the latest event.
//!
//! There are no counters: a counter bumped by `apply` would count an event twice when it comes
//! back through another peer. Every count in the views is the size of a set.

use std::convert::Infallible;
use std::path::Path;

use chrono::{DateTime, Utc};
use crdts::{CvRDT, GSet};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::WorldError;
use super::lww_map::{LwwMap, MaxReg};
use super::order::{OrderKey, order_key};
use crate::durable::{IoError, write_file_atomic};
use crate::event::{Event, Severity};

/// The event types whose history the incident and deployment views fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ServiceUnhealthy,
    HealthcheckFailed,
    ServiceRecovered,
    DeploymentStarted,
    DeploymentCompleted,
    DeploymentFailed,
    RemediationStarted,
    RemediationCompleted,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::ServiceUnhealthy,
        Kind::HealthcheckFailed,
        Kind::ServiceRecovered,
        Kind::DeploymentStarted,
        Kind::DeploymentCompleted,
        Kind::DeploymentFailed,
        Kind::RemediationStarted,
        Kind::RemediationCompleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ServiceUnhealthy => "service_unhealthy",
            Kind::HealthcheckFailed => "healthcheck_failed",
            Kind::ServiceRecovered => "service_recovered",
            Kind::DeploymentStarted => "deployment_started",
            Kind::DeploymentCompleted => "deployment_completed",
            Kind::DeploymentFailed => "deployment_failed",
            Kind::RemediationStarted => "remediation_started",
            Kind::RemediationCompleted => "remediation_completed",
        }
    }

    pub fn from_type(event_type: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == event_type)
    }

    /// The health a service event reports for its (node, service), if any. A failed deployment
    /// counts as unhealthy because it opens (or joins) an incident; keeping health and incidents
    /// on the same events is what makes "unhealthy" and "has an active incident" the same thing.
    pub fn health(self) -> Option<ServiceStatus> {
        match self {
            Kind::ServiceUnhealthy | Kind::HealthcheckFailed | Kind::DeploymentFailed => {
                Some(ServiceStatus::Unhealthy)
            }
            Kind::ServiceRecovered => Some(ServiceStatus::Healthy),
            _ => None,
        }
    }

    pub fn is_deployment(self) -> bool {
        matches!(
            self,
            Kind::DeploymentStarted | Kind::DeploymentCompleted | Kind::DeploymentFailed
        )
    }
}

/// One incident- or deployment-relevant event, reduced to what the views print. Ordered by
/// `key` first, so the set iterates in event order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Record {
    pub key: OrderKey,
    pub node: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub service: String,
    #[serde(with = "severity_text")]
    pub severity: Severity,
    pub correlation_id: String,
    pub timestamp: DateTime<Utc>,
    /// For deployment events: the payload fields the views show (`stage`; for failures also
    /// `error` and any diagnostics or log references), as canonical JSON text (keys sorted) so
    /// the record stays `Ord` and hashes the same on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl Record {
    /// The `details` as a JSON object (empty when there are none).
    pub fn details(&self) -> Map<String, Value> {
        match self.details.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(map))) => map,
            _ => Map::new(),
        }
    }
}

/// Payload fields of a failed deployment worth attaching to an incident.
const FAILURE_FIELDS: [&str; 6] = [
    "stage",
    "error",
    "diagnostics",
    "diagnostic_files",
    "log",
    "logs",
];

fn extract_details(kind: Kind, payload: &Map<String, Value>) -> Option<String> {
    let fields: &[&str] = match kind {
        Kind::DeploymentFailed => &FAILURE_FIELDS,
        Kind::DeploymentStarted | Kind::DeploymentCompleted => &FAILURE_FIELDS[..1],
        _ => return None,
    };
    let picked: Vec<(&str, &Value)> = fields
        .iter()
        .filter_map(|f| payload.get(*f).map(|v| (*f, v)))
        .collect();
    if picked.is_empty() {
        return None;
    }
    let mut sorted = std::collections::BTreeMap::new();
    for (name, value) in picked {
        sorted.insert(name, canonical(value));
    }
    serde_json::to_string(&sorted).ok()
}

/// A copy of `value` with every object's keys in sorted order: the same payload written with
/// another field order gives the same text.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// What a peer's availability events say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Online,
    Offline,
    Left,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Online => "online",
            Availability::Offline => "offline",
            Availability::Left => "left",
        }
    }

    pub fn from_type(event_type: &str) -> Option<Availability> {
        match event_type {
            "node_joined" | "node_online" => Some(Availability::Online),
            "node_offline" => Some(Availability::Offline),
            "node_left" => Some(Availability::Left),
            _ => None,
        }
    }
}

/// One availability event, kept so that `availability_since` can be the first report of the
/// current state (several observers report the same peer going offline, at different times).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Presence {
    pub key: OrderKey,
    pub peer: String,
    pub state: Availability,
    pub timestamp: DateTime<Utc>,
}

/// The latest event seen from a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Seen {
    pub timestamp: DateTime<Utc>,
    pub event_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceStatus {
    Healthy,
    Unhealthy,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Healthy => "healthy",
            ServiceStatus::Unhealthy => "unhealthy",
        }
    }
}

/// The latest health event of a (node, service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Health {
    pub status: ServiceStatus,
    pub event_type: Kind,
}

/// The world as the events describe it. A state-based CRDT (`crdts::CvRDT`): see the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldState {
    pub(super) records: GSet<Record>,
    pub(super) presence: GSet<Presence>,
    pub(super) last_seen: LwwMap<String, Seen>,
    pub(super) availability: LwwMap<String, Availability>,
    pub(super) health: LwwMap<(String, String), Health>,
    pub(super) latest: MaxReg<(OrderKey, DateTime<Utc>)>,
}

/// The checkpoint file's envelope: a version, so that a future layout is refused (and the world
/// rebuilt from the events) instead of misread.
#[derive(Serialize, Deserialize)]
struct Checkpoint<S> {
    format: String,
    version: u32,
    state: S,
}

const CHECKPOINT_FORMAT: &str = "labmesh-world";
const CHECKPOINT_VERSION: u32 = 1;

impl WorldState {
    /// The latest order-key time (NTP64) of any register: how far in the future a snapshot
    /// reaches. A snapshot from a peer is refused when this is past the allowed clock skew
    /// (its registers would win against every real event for good).
    pub fn latest_marker_time(&self) -> Option<u64> {
        let lww = self
            .last_seen
            .iter()
            .map(|(_, r)| r.marker.time)
            .chain(self.availability.iter().map(|(_, r)| r.marker.time))
            .chain(self.health.iter().map(|(_, r)| r.marker.time));
        lww.chain(self.latest.get().map(|(k, _)| k.time)).max()
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// The world of exactly these events.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut world = WorldState::new();
        world.apply_all(events);
        world
    }

    pub fn apply_all<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for event in events {
            self.apply(event);
        }
    }

    /// Folds one event in. Equivalent to merging the world of that single event, hence
    /// idempotent and order-independent. Events of a type the world does not know only move
    /// `last_seen` and the latest-event register; they cost two map lookups.
    pub fn apply(&mut self, event: &Event) {
        let key = order_key(event);
        self.latest.observe((key, event.timestamp));
        self.last_seen
            .update_ref(event.node.as_str(), key, || Seen {
                timestamp: event.timestamp,
                event_type: event.event_type.clone(),
            });
        if let Some(kind) = Kind::from_type(&event.event_type) {
            if let Some(status) = kind.health() {
                self.health
                    .update_with((event.node.clone(), event.service.clone()), key, || {
                        Health {
                            status,
                            event_type: kind,
                        }
                    });
            }
            self.records.insert(Record {
                key,
                node: event.node.clone(),
                kind,
                service: event.service.clone(),
                severity: event.severity,
                correlation_id: event.correlation_id.clone(),
                timestamp: event.timestamp,
                details: extract_details(kind, &event.payload),
            });
        } else if let Some(state) = Availability::from_type(&event.event_type) {
            // The subject is the peer named in the payload (the mesh reports on others); a
            // seed-style event without one is the node speaking about itself.
            let peer = match event.payload.get("peer") {
                Some(Value::String(p)) if !p.is_empty() => p.as_str(),
                _ => event.node.as_str(),
            };
            self.availability.update_ref(peer, key, || state);
            self.presence.insert(Presence {
                key,
                peer: peer.to_owned(),
                state,
                timestamp: event.timestamp,
            });
        }
    }

    /// Incident- and deployment-relevant records, in event order.
    pub fn records(&self) -> Vec<Record> {
        self.records.read().into_iter().collect()
    }

    /// The latest event's key and timestamp.
    pub fn latest(&self) -> Option<&(OrderKey, DateTime<Utc>)> {
        self.latest.get()
    }

    /// The canonical serialisation the hash and the checkpoint use: every part is a `BTreeMap`
    /// or `BTreeSet` and every payload extract is key-sorted text, so equal states give equal
    /// bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Plain data with string keys everywhere: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-256 of [`WorldState::canonical_bytes`]: equal on two nodes iff their worlds are.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// Writes the checkpoint atomically (temp file, fsync, rename), creating its folder.
    pub fn save(&self, path: &Path) -> Result<(), WorldError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| IoError::new("create folder", dir, e))?;
        }
        let checkpoint = Checkpoint {
            format: CHECKPOINT_FORMAT.to_owned(),
            version: CHECKPOINT_VERSION,
            state: self,
        };
        // Cannot fail for this plain data, but an empty checkpoint must never be written.
        let mut bytes = serde_json::to_vec(&checkpoint).map_err(|e| WorldError::Checkpoint {
            path: path.to_owned(),
            problem: format!("cannot serialise the world: {e}"),
        })?;
        bytes.push(b'\n');
        write_file_atomic(path, &bytes)?;
        Ok(())
    }

    /// Reads a checkpoint written by [`WorldState::save`]. `Ok(None)` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<WorldState>, WorldError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IoError::new("read", path, e).into()),
        };
        let bad = |problem: String| WorldError::Checkpoint {
            path: path.to_owned(),
            problem,
        };
        // The envelope first, so a newer version is named as such rather than as bad JSON.
        let envelope: Checkpoint<serde::de::IgnoredAny> =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if envelope.format != CHECKPOINT_FORMAT || envelope.version != CHECKPOINT_VERSION {
            return Err(bad(format!(
                "format {:?} version {}, expected {CHECKPOINT_FORMAT:?} version {CHECKPOINT_VERSION}",
                envelope.format, envelope.version
            )));
        }
        let checkpoint: Checkpoint<WorldState> =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        Ok(Some(checkpoint.state))
    }
}

impl CvRDT for WorldState {
    /// Every part resolves its conflicts deterministically, so no merge is refused.
    type Validation = Infallible;

    fn validate_merge(&self, _other: &Self) -> Result<(), Infallible> {
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        self.records.merge(other.records);
        self.presence.merge(other.presence);
        self.last_seen.merge(other.last_seen);
        self.availability.merge(other.availability);
        self.health.merge(other.health);
        self.latest.merge(other.latest);
    }
}

/// `Severity` serialises as its name but has no `Deserialize` (the event parser reads it by
/// hand); the checkpoint reads it back through `FromStr`.
mod severity_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::event::Severity;

    pub fn serialize<S: Serializer>(sev: &Severity, s: S) -> Result<S::Ok, S::Error> {
        sev.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Severity, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
