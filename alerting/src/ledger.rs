//! The notification ledger: what was attempted, sent and given up, by any node.
//!
//! It is built only from events (`notification_attempted`, `notification_sent`,
//! `notification_failed`), which sync to every node like all events, so every node that has
//! the same events knows the same history. A notification covers *items*: (alert episode,
//! stage), where the stage is `firing:<severity>`, `repeat:<n>` or `resolved`. The pipeline
//! sends an item to a receiver only if no `notification_sent` covers it, and waits while
//! another live node holds a fresh attempt for it. The state of one notification is a function
//! of the *set* of its events, so arrival order does not matter.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sync::event::format_timestamp;
use sync::{Event, NewEvent, Severity};

use crate::util::{after, payload_str, payload_time};
use crate::{EVENT_SERVICE, EVENT_SOURCE};

pub const NOTIFICATION_ATTEMPTED: &str = "notification_attempted";
pub const NOTIFICATION_SENT: &str = "notification_sent";
pub const NOTIFICATION_FAILED: &str = "notification_failed";

/// Ledger entries older than this are dropped (the events themselves are gone by then).
const KEEP: Duration = Duration::from_secs(40 * 86400);

/// What a notification tells about an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// It fires, at this severity (a later escalation is a new stage).
    Firing(Severity),
    /// The n-th reminder that it still fires (n counts every earlier firing or repeat sent).
    Repeat(u32),
    Resolved,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Firing(s) => write!(f, "firing:{s}"),
            Stage::Repeat(n) => write!(f, "repeat:{n}"),
            Stage::Resolved => f.write_str("resolved"),
        }
    }
}

impl FromStr for Stage {
    type Err = ();
    fn from_str(s: &str) -> Result<Stage, ()> {
        match s.split_once(':') {
            Some(("firing", sev)) => sev.parse().map(Stage::Firing).map_err(|_| ()),
            Some(("repeat", n)) => n.parse().map(Stage::Repeat).map_err(|_| ()),
            None if s == "resolved" => Ok(Stage::Resolved),
            _ => Err(()),
        }
    }
}

/// One (episode, stage) a notification covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    pub episode: String,
    pub fingerprint: String,
    pub stage: Stage,
}

/// What the ledger knows about one notification (all its attempts).
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub node: String,
    pub receiver: String,
    pub group: String,
    pub items: Vec<Item>,
    pub first_at: DateTime<Utc>,
    /// The highest attempt number seen, and when it started.
    pub attempt: u32,
    pub attempt_at: DateTime<Utc>,
    /// Attempt number → (retry at, final, handed over) of its failure.
    pub failed: BTreeMap<u32, (Option<DateTime<Utc>>, bool, bool)>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Builds the payload shared by the three ledger events.
pub fn payload(
    id: &str,
    receiver: &str,
    group: &str,
    attempt: u32,
    items: &[Item],
) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("notification".into(), json!(id));
    p.insert("receiver".into(), json!(receiver));
    p.insert("group".into(), json!(group));
    p.insert("attempt".into(), json!(attempt));
    p.insert(
        "items".into(),
        Value::Array(
            items
                .iter()
                .map(|i| json!({"episode": i.episode, "fingerprint": i.fingerprint, "stage": i.stage.to_string()}))
                .collect(),
        ),
    );
    p
}

/// A ledger event of `event_type` with `payload`.
pub fn event(
    event_type: &str,
    severity: Severity,
    id: &str,
    payload: Map<String, Value>,
) -> NewEvent {
    NewEvent::new(event_type, severity, EVENT_SOURCE)
        .service(EVENT_SERVICE)
        .correlation_id(id)
        .payload(payload)
}

/// Adds a failure's fields to a payload.
pub fn with_failure(
    mut p: Map<String, Value>,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
    final_: bool,
    handed_over: bool,
) -> Map<String, Value> {
    p.insert("error".into(), json!(error));
    p.insert("retry_at".into(), json!(retry_at.map(format_timestamp)));
    p.insert("final".into(), json!(final_));
    p.insert("handed_over".into(), json!(handed_over));
    p
}

fn items_of(p: &Map<String, Value>) -> Vec<Item> {
    p.get("items")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    let i = i.as_object()?;
                    Some(Item {
                        episode: payload_str(i, "episode")?.to_owned(),
                        fingerprint: payload_str(i, "fingerprint").unwrap_or_default().to_owned(),
                        stage: payload_str(i, "stage")?.parse().ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The ledger.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    notes: BTreeMap<String, Note>,
    /// (episode, receiver) → stages sent, with when.
    sent: BTreeMap<(String, String), BTreeMap<Stage, DateTime<Utc>>>,
    /// (episode, receiver, stage) given up after the retry budget.
    given_up: BTreeSet<(String, String, Stage)>,
    /// (receiver, group) → last sent.
    group_last: BTreeMap<(String, String), DateTime<Utc>>,
    /// (episode, receiver) → when a firing of it was last attempted, sent or not.
    tried_firing: BTreeMap<(String, String), DateTime<Utc>>,
}

impl Ledger {
    /// Learns one ledger event (any node's, this node's own echoes included). Idempotent.
    pub fn on_event(&mut self, e: &Event) {
        self.apply(&e.event_type, &e.node, e.timestamp, &e.payload);
    }

    /// Applies a ledger record given by its parts: [`Ledger::on_event`] for stored events, and
    /// the pipeline for its own records at once, before their echo comes back from the store.
    pub fn apply(&mut self, kind: &str, node: &str, at: DateTime<Utc>, p: &Map<String, Value>) {
        if ![
            NOTIFICATION_ATTEMPTED,
            NOTIFICATION_SENT,
            NOTIFICATION_FAILED,
        ]
        .contains(&kind)
        {
            return;
        }
        let (Some(id), Some(receiver)) =
            (payload_str(p, "notification"), payload_str(p, "receiver"))
        else {
            return;
        };
        let attempt = p.get("attempt").and_then(Value::as_u64).unwrap_or(1) as u32;
        let items = items_of(p);
        let note = self.notes.entry(id.to_owned()).or_insert_with(|| Note {
            node: node.to_owned(),
            receiver: receiver.to_owned(),
            group: payload_str(p, "group").unwrap_or_default().to_owned(),
            items: items.clone(),
            first_at: at,
            attempt,
            attempt_at: at,
            failed: BTreeMap::new(),
            sent_at: None,
        });
        note.first_at = note.first_at.min(at);
        if attempt > note.attempt || (attempt == note.attempt && kind == NOTIFICATION_ATTEMPTED) {
            note.attempt = attempt;
            note.attempt_at = at;
        }
        if kind == NOTIFICATION_ATTEMPTED {
            for i in items.iter().filter(|i| matches!(i.stage, Stage::Firing(_))) {
                let t = self
                    .tried_firing
                    .entry((i.episode.clone(), note.receiver.clone()))
                    .or_insert(at);
                *t = (*t).max(at);
            }
        }
        match kind {
            NOTIFICATION_SENT => {
                note.sent_at = Some(note.sent_at.map_or(at, |t| t.min(at)));
                let (receiver, group) = (note.receiver.clone(), note.group.clone());
                for i in &items {
                    self.sent
                        .entry((i.episode.clone(), receiver.clone()))
                        .or_default()
                        .entry(i.stage)
                        .or_insert(at);
                }
                let last = self.group_last.entry((receiver, group)).or_insert(at);
                *last = (*last).max(at);
            }
            NOTIFICATION_FAILED => {
                let final_ = p.get("final").and_then(Value::as_bool).unwrap_or(false);
                let handed = p
                    .get("handed_over")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                note.failed
                    .insert(attempt, (payload_time(p, "retry_at"), final_, handed));
                if final_ {
                    for i in &items {
                        self.given_up
                            .insert((i.episode.clone(), note.receiver.clone(), i.stage));
                    }
                }
            }
            _ => {}
        }
    }

    /// Has a `notification_sent` told `receiver` this stage of `episode`? A firing stage is
    /// covered by any firing sent at that severity or above.
    pub fn is_sent(&self, episode: &str, receiver: &str, stage: Stage) -> bool {
        let Some(stages) = self.sent.get(&(episode.to_owned(), receiver.to_owned())) else {
            return false;
        };
        match stage {
            Stage::Firing(sev) => stages
                .keys()
                .any(|s| matches!(s, Stage::Firing(x) if *x >= sev)),
            other => stages.contains_key(&other),
        }
    }

    /// Was this item given up (retry budget spent)?
    pub fn given_up(&self, episode: &str, receiver: &str, stage: Stage) -> bool {
        self.given_up
            .contains(&(episode.to_owned(), receiver.to_owned(), stage))
    }

    /// Has this receiver heard that the episode fires (so its resolution is news to it)?
    pub fn told_firing(&self, episode: &str, receiver: &str) -> bool {
        self.sent
            .get(&(episode.to_owned(), receiver.to_owned()))
            .is_some_and(|s| s.keys().any(|st| matches!(st, Stage::Firing(_))))
    }

    /// Has any node tried to tell `receiver` that the episode fires (sent or not)? Its
    /// resolution is then owed even if the firing never got through: a receiver that was down
    /// while the episode fired and ended would otherwise never hear of it once the attempt's
    /// retries stop with its node (a crash, or a hand-over to a new alerter).
    pub fn tried_firing(&self, episode: &str, receiver: &str) -> bool {
        self.tried_firing
            .contains_key(&(episode.to_owned(), receiver.to_owned()))
    }

    /// How many firing or repeat notifications about the episode reached the receiver, and the
    /// last time one did.
    pub fn sends(&self, episode: &str, receiver: &str) -> (u32, Option<DateTime<Utc>>) {
        let Some(stages) = self.sent.get(&(episode.to_owned(), receiver.to_owned())) else {
            return (0, None);
        };
        let fired = stages.iter().filter(|(s, _)| !matches!(s, Stage::Resolved));
        let n = fired.clone().count() as u32;
        (n, fired.map(|(_, t)| *t).max())
    }

    /// When this group last reached this receiver (any node's send).
    pub fn group_last(&self, receiver: &str, group: &str) -> Option<DateTime<Utc>> {
        self.group_last
            .get(&(receiver.to_owned(), group.to_owned()))
            .copied()
    }

    /// If a notification other than `except` is still working on this item — in flight, or
    /// failed with a retry scheduled — by a node that is live: until when to wait for it. An
    /// attempt counts for `stale` after it started (or after its retry time), then it is
    /// presumed dead and the item may be sent again: we prefer a duplicate to a miss.
    pub fn busy_until(
        &self,
        episode: &str,
        receiver: &str,
        stage: Stage,
        stale: Duration,
        is_live: &dyn Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.pending_until(episode, receiver, &|s| s == stage, stale, is_live, now)
    }

    /// As [`Ledger::busy_until`], for any firing stage of the episode: a live node is still
    /// retrying to tell that it fires.
    pub fn firing_pending(
        &self,
        episode: &str,
        receiver: &str,
        stale: Duration,
        is_live: &dyn Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> bool {
        let firing = |s: Stage| matches!(s, Stage::Firing(_));
        self.pending_until(episode, receiver, &firing, stale, is_live, now)
            .is_some()
    }

    fn pending_until(
        &self,
        episode: &str,
        receiver: &str,
        stage: &dyn Fn(Stage) -> bool,
        stale: Duration,
        is_live: &dyn Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.notes
            .values()
            .filter(|n| n.receiver == receiver && n.sent_at.is_none() && is_live(&n.node))
            .filter(|n| {
                n.items
                    .iter()
                    .any(|i| i.episode == episode && stage(i.stage))
            })
            .filter_map(|n| {
                let until = match n.failed.get(&n.attempt) {
                    None => after(n.attempt_at, stale),
                    Some((Some(retry_at), false, false)) => after(*retry_at, stale),
                    Some(_) => return None,
                };
                (until > now).then_some(until)
            })
            .max()
    }

    pub fn note(&self, id: &str) -> Option<&Note> {
        self.notes.get(id)
    }

    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.notes.retain(|_, n| after(n.first_at, KEEP) > now);
        for stages in self.sent.values_mut() {
            stages.retain(|_, t| after(*t, KEEP) > now);
        }
        self.sent.retain(|_, s| !s.is_empty());
        self.group_last.retain(|_, t| after(*t, KEEP) > now);
        self.tried_firing.retain(|_, t| after(*t, KEEP) > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
    }

    fn item(stage: Stage) -> Item {
        Item {
            episode: "ep1".into(),
            fingerprint: "fp".into(),
            stage,
        }
    }

    fn ev(
        kind: &str,
        node: &str,
        at: i64,
        attempt: u32,
        extra: Option<(Option<DateTime<Utc>>, bool)>,
    ) -> Event {
        let mut p = payload(
            "n1",
            "phone",
            "g",
            attempt,
            &[item(Stage::Firing(Severity::Warning))],
        );
        if let Some((retry, fin)) = extra {
            p = with_failure(p, "503", retry, fin, false);
        }
        event(kind, Severity::Info, "n1", p)
            .into_event(node, t(at))
            .unwrap()
    }

    #[test]
    fn stages_round_trip() {
        for s in [
            Stage::Firing(Severity::Critical),
            Stage::Repeat(3),
            Stage::Resolved,
        ] {
            assert_eq!(s.to_string().parse::<Stage>(), Ok(s));
        }
        assert!("firing:loud".parse::<Stage>().is_err());
    }

    #[test]
    fn sent_covers_lower_severities_and_any_order_gives_one_state() {
        let events = [
            ev(NOTIFICATION_ATTEMPTED, "vm1", 0, 1, None),
            ev(NOTIFICATION_FAILED, "vm1", 1, 1, Some((Some(t(11)), false))),
            ev(NOTIFICATION_ATTEMPTED, "vm1", 11, 2, None),
            ev(NOTIFICATION_SENT, "vm1", 12, 2, None),
        ];
        let mut forward = Ledger::default();
        let mut backward = Ledger::default();
        for e in &events {
            forward.on_event(e);
        }
        for e in events.iter().rev() {
            backward.on_event(e);
            backward.on_event(e);
        }
        assert_eq!(forward.note("n1"), backward.note("n1"));
        assert!(forward.is_sent("ep1", "phone", Stage::Firing(Severity::Warning)));
        assert!(!forward.is_sent("ep1", "phone", Stage::Firing(Severity::Critical)));
        assert!(!forward.is_sent("ep1", "other", Stage::Firing(Severity::Warning)));
        assert_eq!(forward.sends("ep1", "phone"), (1, Some(t(12))));
        assert_eq!(forward.group_last("phone", "g"), Some(t(12)));
    }

    #[test]
    fn a_live_nodes_fresh_attempt_blocks_until_stale() {
        let stale = Duration::from_secs(120);
        let mut l = Ledger::default();
        l.on_event(&ev(NOTIFICATION_ATTEMPTED, "vm1", 0, 1, None));
        let st = Stage::Firing(Severity::Warning);
        let live = |_: &str| true;
        let dead = |_: &str| false;
        assert_eq!(
            l.busy_until("ep1", "phone", st, stale, &live, t(10)),
            Some(t(120))
        );
        assert_eq!(
            l.busy_until("ep1", "phone", st, stale, &dead, t(10)),
            None,
            "owner dead"
        );
        assert_eq!(
            l.busy_until("ep1", "phone", st, stale, &live, t(120)),
            None,
            "stale"
        );
        // A failure with a retry scheduled keeps it busy until the retry (plus stale).
        l.on_event(&ev(
            NOTIFICATION_FAILED,
            "vm1",
            5,
            1,
            Some((Some(t(60)), false)),
        ));
        assert_eq!(
            l.busy_until("ep1", "phone", st, stale, &live, t(130)),
            Some(t(180))
        );
        // Given up: free, and marked.
        l.on_event(&ev(NOTIFICATION_FAILED, "vm1", 6, 1, Some((None, true))));
        assert_eq!(l.busy_until("ep1", "phone", st, stale, &live, t(130)), None);
        assert!(l.given_up("ep1", "phone", st));
    }
}
