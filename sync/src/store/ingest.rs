//! Adopting one file: checking it, indexing it (and telling the listener), settling two copies
//! of one event, and quarantining what does not belong.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{AppendOutcome, EventStore, Ingest, StoreError, content_hash, lock};
use crate::durable::{self, IoError};
use crate::event::{Event, EventError, NewEvent, Severity};
use crate::index::{ContentHash, IndexEntry, Inserted};
use crate::layout;
use crate::signature;

/// A file that passed: its event, content hash, size, and its bytes when a listener will want
/// them (a cold scan of a million files keeps no bytes: nobody listens yet).
pub(super) type CheckedFile = (Event, ContentHash, usize, Option<Vec<u8>>);

/// One candidate file read and checked off the index lock.
pub(super) struct Checked {
    pub(super) path: PathBuf,
    pub(super) rel: PathBuf,
    pub(super) result: Result<CheckedFile, Refusal>,
}

pub(super) enum Refusal {
    /// Quarantine with this reason.
    Bad(String),
    /// Not yet: a writer may still be at it.
    Unsettled,
}

impl EventStore {
    /// Indexes an entry and reports a conflict if its id was already held by other content.
    /// When its (time, id) slot is held by another copy, the copy with the smaller content
    /// hash keeps the slot and the other moves to quarantine (see [`Self::resolve_conflict`]).
    /// `bytes` are the file's, when the caller holds them (else they are read back for the
    /// listener, if there is one).
    pub(super) fn index_entry(
        &self,
        entry: IndexEntry,
        rel: &Path,
        event: &Event,
        bytes: Option<&[u8]>,
    ) {
        let id = entry.id;
        let hash = entry.hash;
        let fresh = entry.clone();
        let inserted = self.write_index().insert(entry);
        if let Inserted::Occupied(existing) = inserted {
            let path = self.events_dir().join(rel);
            if let Err(e) = self.settle_occupied(fresh, rel, &path, existing, event, bytes) {
                tracing::error!(file = %path.display(), error = %e, "cannot settle a conflict");
            }
            return;
        }
        if !matches!(inserted, Inserted::Duplicate) {
            self.tell_listener(fresh, event, bytes);
        }
        if let Inserted::Conflict(others) = inserted {
            for (millis, other_hash) in others {
                let other_rel = self
                    .read_index()
                    .get(millis, &id)
                    .map(|e| e.relative_path())
                    .unwrap_or_default();
                self.report_conflict(id, other_hash, hash, &[other_rel, rel.to_owned()]);
            }
        }
    }

    /// Two copies of one event (same time and id, different content) compete for one slot:
    /// the smaller content hash wins on every node, whatever the order they arrive in, so the
    /// mesh converges on one set instead of trading the copies forever. The loser is kept in
    /// `quarantine/` (once: a copy already there is not written again) and the conflict is
    /// recorded once as `event_conflict`.
    pub(super) fn resolve_conflict(
        &self,
        event: &Event,
        entry: &IndexEntry,
        rel: &Path,
        bytes: &[u8],
        existing: ContentHash,
        existing_path: &Path,
    ) -> Result<AppendOutcome, StoreError> {
        let hash = entry.hash;
        let reason = |loser: &ContentHash, winner: &ContentHash| {
            format!(
                "conflict: event {} exists with other content; the copy with the smaller sha256 ({}) keeps events/{} and this one (sha256 {}) is kept here",
                event.id,
                hex::encode(winner),
                rel.display(),
                hex::encode(loser)
            )
        };
        if hash < existing {
            // The newcomer wins: the held copy moves out, the newcomer takes its name.
            let to = self.quarantine_file(existing_path, &reason(&existing, &hash))?;
            self.write_index().remove_hash(&existing);
            self.writer
                .write_files(&[(rel.to_owned(), bytes.to_vec())])?;
            self.index_entry(entry.clone(), rel, event, Some(bytes));
            self.report_conflict(
                event.id,
                existing,
                hash,
                &[rel.to_owned(), self.relative_to_data(&to)],
            );
            return Ok(AppendOutcome::Conflict { quarantined_to: to });
        }
        if lock(&self.quarantined).contains(&hash) {
            return Ok(AppendOutcome::Duplicate);
        }
        let to = self.quarantine_bytes(rel, bytes, &reason(&hash, &existing))?;
        self.report_conflict(
            event.id,
            existing,
            hash,
            &[rel.to_owned(), self.relative_to_data(&to)],
        );
        Ok(AppendOutcome::Conflict { quarantined_to: to })
    }

    /// A file already in `events/` (at `rel`) found its slot held by `existing`: the same rule
    /// as [`Self::resolve_conflict`], with both copies on disk.
    fn settle_occupied(
        &self,
        incoming: IndexEntry,
        rel: &Path,
        path: &Path,
        existing: IndexEntry,
        event: &Event,
        bytes: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let existing_rel = existing.relative_path();
        let (winner, loser, loser_path) = if incoming.hash < existing.hash {
            (&incoming, &existing, self.events_dir().join(&existing_rel))
        } else {
            (&existing, &incoming, path.to_owned())
        };
        let reason = format!(
            "conflict: event {} exists with other content; the copy with the smaller sha256 ({}) stays in events/ and this one (sha256 {}) is kept here",
            incoming.id,
            hex::encode(winner.hash),
            hex::encode(loser.hash)
        );
        if lock(&self.quarantined).contains(&loser.hash) {
            // Already kept once: this file is a byte-identical extra copy.
            fs::remove_file(&loser_path)
                .map_err(|e| IoError::new("remove a duplicate", &loser_path, e))?;
        } else {
            self.quarantine_file(&loser_path, &reason)?;
        }
        if loser.hash == existing.hash {
            self.write_index().remove_hash(&existing.hash);
            self.index_entry(incoming.clone(), rel, event, bytes);
        }
        self.report_conflict(
            incoming.id,
            existing.hash,
            incoming.hash,
            &[existing_rel, rel.to_owned()],
        );
        Ok(())
    }

    fn relative_to_data(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.cfg.data_dir)
            .map(Path::to_owned)
            .unwrap_or_else(|_| path.to_owned())
    }

    /// Writes an `event_conflict` event once per (id, pair of contents).
    fn report_conflict(&self, id: Uuid, a: ContentHash, b: ContentHash, files: &[PathBuf]) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        if !lock(&self.reported_conflicts).insert((id, lo, hi)) {
            return;
        }
        let mut payload = Map::new();
        payload.insert("id".into(), json!(id.hyphenated().to_string()));
        payload.insert("sha256".into(), json!([hex::encode(lo), hex::encode(hi)]));
        payload.insert(
            "files".into(),
            json!(
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
            ),
        );
        let new = NewEvent::new("event_conflict", Severity::Warning, "labmesh-store")
            .service("labmesh")
            .payload(payload);
        if let Err(e) = self.append(new) {
            tracing::error!(%id, error = %e, "could not record event_conflict");
        } else {
            tracing::warn!(%id, "two different events share one id; both kept");
        }
    }

    pub(super) fn note_reported_conflict(&self, event: &Event) {
        if event.event_type != "event_conflict" {
            return;
        }
        let id = event
            .payload
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok());
        let hashes: Vec<ContentHash> = event
            .payload
            .get("sha256")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|h| hex::decode(h).ok()?.try_into().ok())
                    .collect()
            })
            .unwrap_or_default();
        if let (Some(id), [lo, hi]) = (id, hashes.as_slice()) {
            lock(&self.reported_conflicts).insert((id, *lo, *hi));
        }
    }

    /// Moves a file out of `events/` into `quarantine/`, writes its `.reason`, and records an
    /// `event_quarantined` event. Returns where it went.
    pub fn quarantine_file(&self, path: &Path, reason: &str) -> Result<PathBuf, StoreError> {
        let rel = path
            .strip_prefix(self.events_dir())
            .map(Path::to_owned)
            .unwrap_or_else(|_| path.to_owned());
        let dest = self.quarantine_destination(path)?;
        fs::rename(path, &dest).map_err(|e| IoError::new("move to quarantine", path, e))?;
        if let Some(dir) = path.parent() {
            durable::sync_dir(dir)?;
        }
        let hash = fs::read(&dest)
            .map(|b| hex::encode(content_hash(&b)))
            .unwrap_or_default();
        self.finish_quarantine(&rel, &dest, reason, &hash)?;
        Ok(dest)
    }

    /// Quarantines bytes that never had a place in `events/` (a conflicting copy from a peer).
    fn quarantine_bytes(
        &self,
        rel: &Path,
        bytes: &[u8],
        reason: &str,
    ) -> Result<PathBuf, StoreError> {
        let dest = self.quarantine_destination(rel)?;
        durable::write_file_atomic(&dest, bytes)?;
        self.finish_quarantine(rel, &dest, reason, &hex::encode(content_hash(bytes)))?;
        Ok(dest)
    }

    fn quarantine_destination(&self, original: &Path) -> Result<PathBuf, StoreError> {
        let name = original
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty() && !layout::is_hidden(n))
            .unwrap_or_else(|| "unnamed".to_owned());
        let mut touched = BTreeSet::new();
        durable::create_dirs(&self.quarantine_dir, &mut touched)?;
        let mut dest = self.quarantine_dir.join(&name);
        let mut n = 1;
        while dest.symlink_metadata().is_ok() || reason_path(&dest).symlink_metadata().is_ok() {
            dest = self.quarantine_dir.join(format!("{name}.{n}"));
            n += 1;
        }
        Ok(dest)
    }

    fn finish_quarantine(
        &self,
        rel: &Path,
        dest: &Path,
        reason: &str,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let now = crate::event::format_timestamp(self.cfg.clock.now());
        let text = format!(
            "file: events/{}\nquarantined_at: {now}\nreason: {reason}\nsha256: {sha256}\n",
            rel.display()
        );
        durable::write_file_atomic(&reason_path(dest), text.as_bytes())?;
        self.quarantined_since_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(raw) = hex::decode(sha256)
            && let Ok(hash) = ContentHash::try_from(raw.as_slice())
        {
            lock(&self.quarantined).insert(hash);
        }
        tracing::warn!(file = %rel.display(), to = %dest.display(), %reason, "quarantined an event file");
        let mut payload = Map::new();
        payload.insert("file".into(), json!(format!("events/{}", rel.display())));
        payload.insert(
            "quarantined_to".into(),
            json!(self.relative_to_data(dest).display().to_string()),
        );
        payload.insert("reason".into(), json!(reason));
        payload.insert("sha256".into(), json!(sha256));
        let new = NewEvent::new("event_quarantined", Severity::Warning, "labmesh-store")
            .service("labmesh")
            .payload(payload);
        if let Err(e) = self.append(new) {
            tracing::error!(error = %e, "could not record event_quarantined");
        }
        Ok(())
    }

    /// Reads and checks one candidate file without touching the index.
    pub(super) fn check_file(&self, path: &Path) -> Checked {
        let rel = path
            .strip_prefix(self.events_dir())
            .map(Path::to_owned)
            .unwrap_or_else(|_| path.to_owned());
        let result = self.check_file_inner(path, &rel);
        Checked {
            path: path.to_owned(),
            rel,
            result,
        }
    }

    fn check_file_inner(&self, path: &Path, rel: &Path) -> Result<CheckedFile, Refusal> {
        let meta = path
            .symlink_metadata()
            .map_err(|e| Refusal::Bad(format!("cannot stat: {e}")))?;
        if meta.file_type().is_symlink() {
            return Err(Refusal::Bad(
                "is a symbolic link; event files must be regular files (a link could point outside the data dir or change under the store)".into(),
            ));
        }
        if !meta.is_file() {
            return Err(Refusal::Bad("is not a regular file".into()));
        }
        let recent = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_none_or(|age| age < self.cfg.settle);
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed_name = layout::parse_file_name(&name);
        let max = self.cfg.max_event_bytes;
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(max + 1));
        let read =
            fs::File::open(path).and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes));
        if let Err(e) = read {
            return Err(Refusal::Bad(format!("cannot read: {e}")));
        }
        if bytes.len() > max {
            return Err(Refusal::Bad(
                EventError::TooLarge {
                    size: usize::try_from(meta.len()).unwrap_or(usize::MAX),
                    limit: max,
                }
                .to_string(),
            ));
        }
        let event =
            match Event::from_file_bytes(&bytes, max, parsed_name.as_ref().ok().map(|n| n.id)) {
                Ok(ev) => ev,
                Err(_) if recent => return Err(Refusal::Unsettled),
                Err(e) => return Err(Refusal::Bad(e.to_string())),
            };
        if let Err(e) = parsed_name {
            return Err(Refusal::Bad(e.to_string()));
        }
        layout::check_placement(rel, &event).map_err(Refusal::Bad)?;
        if !self.cfg.read_only && !has_id_field(&bytes) {
            // Tools written before labmesh (the seed's scripts) leave the id to the file name.
            // Peers receive bytes, not names, so the id goes into the file: inserted as the
            // first field, every other byte unchanged.
            bytes = with_id_field(&bytes, event.id);
            durable::write_file_atomic(path, &bytes)
                .map_err(|e| Refusal::Bad(format!("cannot add the id field: {e}")))?;
            tracing::info!(file = %rel.display(), "added the id from the file name to an event file");
        }
        let (bytes, event) = self.adopt_signature(path, rel, bytes, event)?;
        let hash = content_hash(&bytes);
        let size = bytes.len();
        let kept = self.has_listener().then_some(bytes);
        Ok((event, hash, size, kept))
    }

    /// With [`StoreConfig::trust`](super::StoreConfig): a file on disk is either signed (its
    /// `sig` well formed: the signature itself was checked when it came in, and `labmesh fsck
    /// --verify` checks it again), or this node's own and signed now (a script dropped it in:
    /// the field is added before the closing brace, every other byte unchanged). An unsigned
    /// event of another node has no way in: only its origin can sign it.
    fn adopt_signature(
        &self,
        path: &Path,
        rel: &Path,
        bytes: Vec<u8>,
        mut event: Event,
    ) -> Result<(Vec<u8>, Event), Refusal> {
        let Some(trust) = self.cfg.trust.as_ref().filter(|_| !self.cfg.read_only) else {
            return Ok((bytes, event));
        };
        match event.extra.get(signature::SIG_FIELD) {
            Some(Value::String(text)) => {
                let field = match signature::split(&bytes) {
                    Some((_, found)) if found == text => signature::SigField::parse(found),
                    _ => Err(signature::SignatureError::Malformed(
                        "`sig` must be the last field, right before the closing brace".into(),
                    )),
                };
                field.map_err(|e| Refusal::Bad(EventError::from(e).to_string()))?;
                Ok((bytes, event))
            }
            Some(_) => Err(Refusal::Bad(
                "field `sig`: expected a string; it is the origin signature labmesh adds (remove it and let the agent sign the event)".into(),
            )),
            None if event.node != self.cfg.node => Err(Refusal::Bad(format!(
                "unsigned event of node {}: only {} can sign it (its events reach this node signed, over sync); events dropped in here must name this node, {}",
                event.node, event.node, self.cfg.node
            ))),
            None => {
                let Some(signer) = &trust.signer else {
                    return Ok((bytes, event));
                };
                let mut signed =
                    signature::sign_files(&**signer, &self.cfg.node, std::slice::from_ref(&bytes))
                        .map_err(|e| Refusal::Bad(format!("cannot sign: {e}")))?;
                let Some((signed, text)) = signed.pop() else {
                    return Ok((bytes, event));
                };
                durable::write_file_atomic(path, &signed)
                    .map_err(|e| Refusal::Bad(format!("cannot add the signature: {e}")))?;
                tracing::debug!(file = %rel.display(), "signed an event file dropped in by another tool");
                event
                    .extra
                    .insert(signature::SIG_FIELD.into(), Value::String(text));
                Ok((signed, event))
            }
        }
    }

    /// Applies the verdict on one checked file.
    pub(super) fn settle(&self, checked: Checked) -> Result<Ingest, StoreError> {
        match checked.result {
            Ok((event, hash, size, bytes)) => {
                lock(&self.unsettled).remove(&checked.path);
                self.note_reported_conflict(&event);
                let entry = self.write_index().entry_for(&event, hash, size);
                let before = self.len();
                self.index_entry(entry.clone(), &checked.rel, &event, bytes.as_deref());
                Ok(if self.len() > before {
                    Ingest::Added(entry)
                } else {
                    Ingest::Known
                })
            }
            Err(Refusal::Unsettled) if self.cfg.read_only => Ok(Ingest::Refused(
                "does not parse (still being written?)".into(),
            )),
            Err(Refusal::Bad(reason)) if self.cfg.read_only => Ok(Ingest::Refused(reason)),
            Err(Refusal::Unsettled) => {
                lock(&self.unsettled)
                    .entry(checked.path)
                    .or_insert_with(Instant::now);
                Ok(Ingest::Unsettled)
            }
            Err(Refusal::Bad(reason)) => {
                lock(&self.unsettled).remove(&checked.path);
                let to = self.quarantine_file(&checked.path, &reason)?;
                Ok(Ingest::Quarantined { to, reason })
            }
        }
    }

    /// Picks up one path under `events/` (from a file-system notification or a scan).
    pub fn ingest_path(&self, path: &Path) -> Result<Ingest, StoreError> {
        let Ok(rel) = path.strip_prefix(self.events_dir()) else {
            return Ok(Ingest::Ignored);
        };
        let name = match path.file_name() {
            Some(n) => n.to_string_lossy().into_owned(),
            None => return Ok(Ingest::Ignored),
        };
        if layout::is_hidden(&name) {
            return Ok(Ingest::Ignored);
        }
        let Ok(meta) = path.symlink_metadata() else {
            lock(&self.unsettled).remove(path);
            return Ok(Ingest::Ignored);
        };
        if meta.is_dir() {
            return Ok(Ingest::Ignored);
        }
        if let Some(link) = linked_folder(self.events_dir(), rel) {
            // The file is reached through a symbolic link: moving it to quarantine would move
            // the link's target, somewhere outside the store. The next scan quarantines the
            // link itself.
            let reason = format!(
                "{} is a symbolic link; date and node folders must be real folders inside the data dir",
                link.display()
            );
            tracing::warn!(file = %path.display(), %reason, "left a file alone");
            return Ok(Ingest::Refused(reason));
        }
        if rel.components().count() == 3
            && let Ok(parsed) = layout::parse_file_name(&name)
            && let Some(entry) = self.read_index().get(parsed.millis, &parsed.id)
            && entry.relative_path() == rel
        {
            return Ok(Ingest::Known);
        }
        let checked = self.check_file(path);
        self.settle(checked)
    }

    /// Files that did not parse while they may still have been written, to retry.
    pub fn unsettled(&self) -> Vec<PathBuf> {
        lock(&self.unsettled).keys().cloned().collect()
    }
}

/// The first folder between `events_dir` and the file at `rel` that is a symbolic link.
fn linked_folder(events_dir: &Path, rel: &Path) -> Option<PathBuf> {
    let mut at = events_dir.to_owned();
    let parents = rel.parent()?;
    for part in parents.components() {
        at.push(part);
        if at
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return Some(at);
        }
    }
    None
}

pub(super) fn reason_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".reason");
    PathBuf::from(s)
}

/// Whether a JSON object has a top-level `id` key (values are skipped, not built).
fn has_id_field(bytes: &[u8]) -> bool {
    serde_json::from_slice::<HashMap<std::borrow::Cow<'_, str>, serde::de::IgnoredAny>>(bytes)
        .map(|m| m.contains_key("id"))
        .unwrap_or(true)
}

/// `bytes` (a JSON object) with `"id":"<id>",` inserted right after its opening brace.
fn with_id_field(bytes: &[u8], id: Uuid) -> Vec<u8> {
    let Some(brace) = bytes.iter().position(|b| *b == b'{') else {
        return bytes.to_vec();
    };
    // A valid event is never an empty object, so a comma always follows.
    let mut out = Vec::with_capacity(bytes.len() + 48);
    out.extend_from_slice(&bytes[..=brace]);
    out.extend_from_slice(format!("\"id\":\"{}\",", id.hyphenated()).as_bytes());
    out.extend_from_slice(&bytes[brace + 1..]);
    out
}
