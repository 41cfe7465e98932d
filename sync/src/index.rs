//! The in-memory index of stored events and the query API over it.
//!
//! Entries are ordered by (timestamp in ms, id), so time ranges are B-tree ranges. Repeated
//! strings (node, type, service, source) are interned: an entry costs about 100 bytes, so a
//! million events fit in about 100 MB. The path of an entry is derived from its fields (the
//! store only indexes files that sit exactly where their content says).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::event::{Event, Severity};
use crate::layout;

/// SHA-256 of an event file's bytes: with the id, the event's identity across peers.
pub type ContentHash = [u8; 32];

/// One indexed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub millis: i64,
    pub id: Uuid,
    pub node: Arc<str>,
    pub event_type: Arc<str>,
    pub severity: Severity,
    pub service: Arc<str>,
    pub source: Arc<str>,
    pub correlation_id: Box<str>,
    pub hash: ContentHash,
    pub size: u32,
}

impl IndexEntry {
    pub fn timestamp(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.millis)
            .single()
            .unwrap_or_default()
    }

    /// The path relative to `events/`.
    pub fn relative_path(&self) -> PathBuf {
        let at = self.timestamp();
        let mut path = PathBuf::from(layout::date_folder(at));
        path.push(&*self.node);
        path.push(format!(
            "{}_{}_{}.json",
            layout::name_time(at),
            self.event_type,
            self.id.hyphenated()
        ));
        path
    }
}

/// Result order of a query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// A filter over the index. Empty lists match everything; `limit` applies after ordering.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Inclusive lower bound.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub until: Option<DateTime<Utc>>,
    pub nodes: Vec<String>,
    pub types: Vec<String>,
    pub severities: Vec<Severity>,
    pub min_severity: Option<Severity>,
    pub services: Vec<String>,
    pub sources: Vec<String>,
    pub correlation_id: Option<String>,
    pub limit: Option<usize>,
    pub order: Order,
}

impl Query {
    pub fn matches(&self, e: &IndexEntry) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        any(&self.nodes, &e.node)
            && any(&self.types, &e.event_type)
            && any(&self.services, &e.service)
            && any(&self.sources, &e.source)
            && (self.severities.is_empty() || self.severities.contains(&e.severity))
            && self.min_severity.is_none_or(|m| e.severity >= m)
            && self
                .correlation_id
                .as_deref()
                .is_none_or(|c| *e.correlation_id == *c)
    }

    /// The date folders a scan must read to answer this query (None: all of them).
    pub fn date_range(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        (self.since, self.until)
    }
}

/// An order-independent fingerprint of a set of content hashes: their count and their sum
/// modulo 2^256 (the accumulator negentropy uses). Adding is O(1), so the store keeps it current.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetFingerprint {
    pub count: u64,
    sum: [u8; 32],
}

impl SetFingerprint {
    pub fn add(&mut self, hash: &ContentHash) {
        let mut carry = 0u16;
        for (sum, byte) in self.sum.iter_mut().zip(hash) {
            let v = u16::from(*sum) + u16::from(*byte) + carry;
            *sum = (v & 0xff) as u8;
            carry = v >> 8;
        }
        self.count += 1;
    }

    pub fn remove(&mut self, hash: &ContentHash) {
        let mut borrow = 0i16;
        for (sum, byte) in self.sum.iter_mut().zip(hash) {
            let mut v = i16::from(*sum) - i16::from(*byte) - borrow;
            borrow = 0;
            if v < 0 {
                v += 256;
                borrow = 1;
            }
            *sum = v as u8;
        }
        self.count = self.count.saturating_sub(1);
    }

    /// Short text for gossip: `<count>:<first 16 bytes of the sum, hex>`.
    pub fn to_gossip(&self) -> String {
        format!("{}:{}", self.count, hex::encode(&self.sum[..16]))
    }
}

#[derive(Debug, Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.0.get(s) {
            return found.clone();
        }
        let arc: Arc<str> = Arc::from(s);
        self.0.insert(arc.clone());
        arc
    }
}

/// What inserting an entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// Same id and same content already indexed: nothing changed.
    Duplicate,
    /// Same id, different content: both are kept; these are the other copies' hashes.
    Conflict(Vec<(i64, ContentHash)>),
    /// Same (time, id) slot already held by other content: nothing was inserted; the caller
    /// decides which copy keeps the slot.
    Occupied(IndexEntry),
}

#[derive(Debug, Default)]
pub struct Index {
    by_time: BTreeMap<(i64, Uuid), IndexEntry>,
    by_id: HashMap<Uuid, Vec<i64>>,
    by_hash: HashMap<ContentHash, (i64, Uuid)>,
    fingerprint: SetFingerprint,
    strings: Interner,
    bytes: u64,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }

    /// Total bytes of indexed event files.
    pub fn total_bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes an entry for an event, interning its strings.
    pub fn entry_for(&mut self, event: &Event, hash: ContentHash, size: usize) -> IndexEntry {
        IndexEntry {
            millis: event.timestamp.timestamp_millis(),
            id: event.id,
            node: self.strings.get(&event.node),
            event_type: self.strings.get(&event.event_type),
            severity: event.severity,
            service: self.strings.get(&event.service),
            source: self.strings.get(&event.source),
            correlation_id: event.correlation_id.clone().into_boxed_str(),
            hash,
            size: u32::try_from(size).unwrap_or(u32::MAX),
        }
    }

    /// The entry whose file has this content hash.
    pub fn by_hash(&self, hash: &ContentHash) -> Option<&IndexEntry> {
        self.by_hash.get(hash).and_then(|k| self.by_time.get(k))
    }

    /// A fingerprint of the whole set of event files: equal on two nodes exactly when (with
    /// overwhelming probability) they hold the same events.
    pub fn fingerprint(&self) -> SetFingerprint {
        self.fingerprint.clone()
    }

    /// `(timestamp ms, content hash)` of every entry at or after `since_ms`, in time order:
    /// the items set reconciliation runs over.
    pub fn sync_items(&self, since_ms: i64) -> Vec<(u64, ContentHash)> {
        self.by_time
            .range((since_ms, Uuid::nil())..)
            .map(|(_, e)| (u64::try_from(e.millis).unwrap_or(0), e.hash))
            .collect()
    }

    /// The entry stored at exactly this (time, id), if any.
    pub fn get(&self, millis: i64, id: &Uuid) -> Option<&IndexEntry> {
        self.by_time.get(&(millis, *id))
    }

    /// Every entry with this id (more than one only after a conflict).
    pub fn by_id(&self, id: &Uuid) -> Vec<&IndexEntry> {
        self.by_id
            .get(id)
            .map(|times| {
                times
                    .iter()
                    .filter_map(|t| self.by_time.get(&(*t, *id)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn insert(&mut self, entry: IndexEntry) -> Inserted {
        let key = (entry.millis, entry.id);
        if let Some(existing) = self.by_time.get(&key) {
            return if existing.hash == entry.hash {
                Inserted::Duplicate
            } else {
                Inserted::Occupied(existing.clone())
            };
        }
        let others: Vec<(i64, ContentHash)> = self
            .by_id(&entry.id)
            .into_iter()
            .map(|e| (e.millis, e.hash))
            .collect();
        self.by_id.entry(entry.id).or_default().push(entry.millis);
        self.by_hash.insert(entry.hash, key);
        self.fingerprint.add(&entry.hash);
        self.bytes += u64::from(entry.size);
        self.by_time.insert(key, entry);
        if others.is_empty() {
            Inserted::New
        } else {
            Inserted::Conflict(others)
        }
    }

    /// Removes every entry older than `before_ms` (retention); returns how many.
    pub fn remove_before(&mut self, before_ms: i64) -> usize {
        let keep = self.by_time.split_off(&(before_ms, Uuid::nil()));
        let gone = std::mem::replace(&mut self.by_time, keep);
        for (key, e) in &gone {
            self.forget(*key, e);
        }
        gone.len()
    }

    /// Removes the entry with this content hash, if indexed (its copy lost a conflict).
    pub fn remove_hash(&mut self, hash: &ContentHash) -> Option<IndexEntry> {
        let key = *self.by_hash.get(hash)?;
        let entry = self.by_time.remove(&key)?;
        self.forget(key, &entry);
        Some(entry)
    }

    /// Drops an entry already taken out of `by_time` from the other maps.
    fn forget(&mut self, key: (i64, Uuid), e: &IndexEntry) {
        self.by_hash.remove(&e.hash);
        self.fingerprint.remove(&e.hash);
        self.bytes = self.bytes.saturating_sub(u64::from(e.size));
        if let Some(times) = self.by_id.get_mut(&key.1) {
            times.retain(|t| *t != key.0);
            if times.is_empty() {
                self.by_id.remove(&key.1);
            }
        }
    }

    /// Entries matching `query`, in its order, up to its limit.
    pub fn query(&self, query: &Query) -> Vec<IndexEntry> {
        let lower = match query.since {
            Some(t) => Bound::Included((t.timestamp_millis(), Uuid::nil())),
            None => Bound::Unbounded,
        };
        let upper = match query.until {
            Some(t) => Bound::Excluded((t.timestamp_millis(), Uuid::nil())),
            None => Bound::Unbounded,
        };
        let range = self.by_time.range((lower, upper)).map(|(_, e)| e);
        let limit = query.limit.unwrap_or(usize::MAX);
        let filtered = |it: &mut dyn Iterator<Item = &IndexEntry>| {
            it.filter(|e| query.matches(e))
                .take(limit)
                .cloned()
                .collect::<Vec<_>>()
        };
        match query.order {
            Order::Asc => filtered(&mut range.into_iter()),
            Order::Desc => filtered(&mut range.rev()),
        }
    }

    /// All entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &IndexEntry> {
        self.by_time.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NewEvent, parse_timestamp};

    fn ev(at: &str, ty: &str, sev: Severity, service: &str) -> Event {
        NewEvent::new(ty, sev, "test")
            .service(service)
            .into_event("n1", parse_timestamp(at).unwrap())
            .unwrap()
    }

    #[test]
    fn query_filters_orders_and_limits() {
        let mut index = Index::new();
        let events = [
            ev("2026-05-12T10:00:00Z", "a", Severity::Info, "x"),
            ev("2026-05-12T11:00:00Z", "b", Severity::Error, "y"),
            ev("2026-05-12T12:00:00Z", "a", Severity::Critical, "x"),
        ];
        for e in &events {
            let entry = index.entry_for(e, [0; 32], 10);
            assert_eq!(index.insert(entry), Inserted::New);
        }
        let q = Query {
            types: vec!["a".into()],
            ..Query::default()
        };
        assert_eq!(index.query(&q).len(), 2);
        let q = Query {
            min_severity: Some(Severity::Error),
            order: Order::Desc,
            limit: Some(1),
            ..Query::default()
        };
        assert_eq!(index.query(&q)[0].id, events[2].id);
        let q = Query {
            since: Some(parse_timestamp("2026-05-12T11:00:00Z").unwrap()),
            until: Some(parse_timestamp("2026-05-12T12:00:00Z").unwrap()),
            ..Query::default()
        };
        let got = index.query(&q);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, events[1].id);
        assert_eq!(
            got[0].relative_path(),
            crate::layout::relative_path(&events[1])
        );
    }

    #[test]
    fn fingerprint_add_and_remove_are_inverse() {
        let mut f = SetFingerprint::default();
        let empty = f.clone();
        let a = [0xff; 32];
        let b = [0x01; 32];
        f.add(&a);
        f.add(&b);
        let both = f.clone();
        f.remove(&a);
        let mut only_b = SetFingerprint::default();
        only_b.add(&b);
        assert_eq!(f, only_b);
        f.remove(&b);
        assert_eq!(f, empty);
        assert_ne!(both, empty);
    }

    #[test]
    fn duplicates_and_conflicts() {
        let mut index = Index::new();
        let e = ev("2026-05-12T10:00:00Z", "a", Severity::Info, "x");
        let entry = index.entry_for(&e, [1; 32], 10);
        assert_eq!(index.insert(entry.clone()), Inserted::New);
        assert_eq!(index.insert(entry.clone()), Inserted::Duplicate);
        let mut other = entry.clone();
        other.hash = [2; 32];
        assert!(matches!(index.insert(other.clone()), Inserted::Occupied(_)));
        other.millis += 5;
        assert!(matches!(index.insert(other), Inserted::Conflict(_)));
        assert_eq!(index.by_id(&e.id).len(), 2);
    }
}
