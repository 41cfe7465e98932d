//! Storing events this node makes (`append`) or receives as bytes (`store_bytes_batch`).

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use super::{AppendOutcome, Appended, EventStore, StoreError, WriteOutcome, content_hash};
use crate::event::{Event, EventError, NewEvent};
use crate::layout;
use crate::signature::{self, SignatureError};

impl EventStore {
    /// Creates, validates and durably stores an event stamped now on this node.
    pub fn append(&self, new: NewEvent) -> Result<Appended, StoreError> {
        let event = self.hlc.stamp_event(new, &self.cfg.node)?;
        let mut out = self.append_batch(std::slice::from_ref(&event))?;
        Ok(out.remove(0))
    }

    /// Stores a batch of complete events with one group commit, then indexes them. With
    /// [`StoreConfig::trust`](super::StoreConfig) the batch is signed first (one signature per
    /// [`signature::MAX_BATCH_LEAVES`] events), and every event must be this node's own.
    pub fn append_batch(&self, events: &[Event]) -> Result<Vec<Appended>, StoreError> {
        let signer = self.cfg.trust.as_ref().and_then(|t| t.signer.clone());
        let mut owned = Vec::with_capacity(events.len());
        let mut unsigned = Vec::with_capacity(events.len());
        for event in events {
            event.validate()?;
            let mut event = event.clone();
            if signer.is_some() {
                if event.node != self.cfg.node {
                    return Err(EventError::Signature(SignatureError::WrongNode {
                        signer: self.cfg.node.clone(),
                        node: event.node.clone(),
                    })
                    .into());
                }
                // A signature is always made here, over what the event says now.
                event.extra.shift_remove(signature::SIG_FIELD);
            }
            unsigned.push(event.to_file_bytes());
            owned.push(event);
        }
        let files = match &signer {
            Some(signer) => {
                // An event already stored as it is now keeps its signed copy, so appending it
                // again stays a duplicate (signatures are randomised: a new one would make a
                // second copy of the same event).
                let mut files: Vec<Option<Vec<u8>>> = owned
                    .iter()
                    .zip(&unsigned)
                    .map(|(event, u)| self.signed_copy(event, u))
                    .collect();
                let fresh: Vec<Vec<u8>> = files
                    .iter()
                    .zip(&unsigned)
                    .filter(|(f, _)| f.is_none())
                    .map(|(_, u)| u.clone())
                    .collect();
                let mut signed = signature::sign_files(&**signer, &self.cfg.node, &fresh)
                    .map_err(EventError::from)?
                    .into_iter();
                for (event, slot) in owned.iter_mut().zip(files.iter_mut()) {
                    let text = match slot {
                        None => signed.next().map(|(bytes, text)| {
                            *slot = Some(bytes);
                            text
                        }),
                        Some(bytes) => signature::split(bytes).map(|(_, t)| t.to_owned()),
                    };
                    if let Some(text) = text {
                        event
                            .extra
                            .insert(signature::SIG_FIELD.into(), Value::String(text));
                    }
                }
                files.into_iter().map(Option::unwrap_or_default).collect()
            }
            None => unsigned,
        };
        let mut items = Vec::with_capacity(owned.len());
        for (event, bytes) in owned.iter().zip(files) {
            if bytes.len() > self.cfg.max_event_bytes {
                return Err(EventError::TooLarge {
                    size: bytes.len(),
                    limit: self.cfg.max_event_bytes,
                }
                .into());
            }
            items.push((event, layout::relative_path(event), bytes));
        }
        let out = self.store_items(items)?;
        // Own stamps can run ahead of the last hint (after following a fast peer), so the hint
        // must cover them too for the next start.
        self.save_hlc_hint();
        Ok(out)
    }

    /// Stores event files received as bytes (from a peer or an import): validated exactly like
    /// files found on disk, kept byte for byte.
    pub fn store_bytes_batch(
        &self,
        files: &[Vec<u8>],
    ) -> Result<Vec<Result<Appended, EventError>>, StoreError> {
        let mut parsed = Vec::with_capacity(files.len());
        let mut results: Vec<Option<Result<Appended, EventError>>> =
            Vec::with_capacity(files.len());
        for bytes in files {
            let checked = Event::from_file_bytes(bytes, self.cfg.max_event_bytes, None)
                .and_then(|event| self.check_clock(event))
                .and_then(|event| self.check_origin(bytes, event));
            match checked {
                Ok(event) => {
                    if let Some(Value::String(hlc)) = event.extra.get("hlc") {
                        self.hlc.observe(hlc);
                    }
                    parsed.push(event);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut items = Vec::with_capacity(parsed.len());
        let mut parsed_iter = parsed.iter();
        for (bytes, r) in files.iter().zip(&results) {
            if r.is_none()
                && let Some(event) = parsed_iter.next()
            {
                items.push((event, layout::relative_path(event), bytes.clone()));
            }
        }
        let mut stored = self.store_items(items)?.into_iter();
        self.save_hlc_hint();
        Ok(results
            .into_iter()
            .map(|r| match r {
                Some(err) => err,
                None => stored.next().ok_or(EventError::Empty),
            })
            .collect())
    }

    /// An event from a peer may not be dated further ahead of this node's clock than
    /// [`StoreConfig::max_clock_ahead`](super::StoreConfig).
    fn check_clock(&self, event: Event) -> Result<Event, EventError> {
        let now = self.cfg.clock.now();
        let ahead =
            chrono::Duration::from_std(self.cfg.max_clock_ahead).unwrap_or(chrono::Duration::MAX);
        let limit = now.checked_add_signed(ahead).unwrap_or(now);
        let fix = format!(
            "the writer's clock runs ahead: fix it (NTP), or raise store.max_clock_ahead (now {}s)",
            self.cfg.max_clock_ahead.as_secs()
        );
        if event.timestamp > limit {
            return Err(EventError::Invalid {
                field: "timestamp",
                problem: format!(
                    "{} is {} s ahead of this node's clock",
                    crate::event::format_timestamp(event.timestamp),
                    (event.timestamp - now).num_seconds()
                ),
                fix,
            });
        }
        if let Some(Value::String(hlc)) = event.extra.get("hlc")
            && let Some(time) = crate::world::order::parse_hlc(hlc)
            && crate::world::order::datetime_from_ntp64(time) > limit
        {
            return Err(EventError::Invalid {
                field: "hlc",
                problem: format!("{hlc} is more than the allowed skew ahead of this node's clock"),
                fix,
            });
        }
        Ok(event)
    }

    /// With [`StoreConfig::trust`](super::StoreConfig): the event's origin signed these bytes.
    fn check_origin(&self, bytes: &[u8], event: Event) -> Result<Event, EventError> {
        let Some(trust) = &self.cfg.trust else {
            return Ok(event);
        };
        let sig = event
            .extra
            .get(signature::SIG_FIELD)
            .and_then(Value::as_str);
        signature::verify(bytes, &event.node, sig, &*trust.directory, &trust.roots)?;
        Ok(event)
    }

    /// Checks certificates a peer sent along with event files and remembers the good ones;
    /// returns why each bad one was refused.
    pub fn learn_signers(&self, certificates: &[Vec<u8>]) -> Vec<String> {
        let Some(trust) = &self.cfg.trust else {
            return Vec::new();
        };
        certificates
            .iter()
            .filter_map(|der| trust.directory.learn(der).err())
            .collect()
    }

    /// The stored signed file of `event` when its unsigned content is `unsigned`.
    fn signed_copy(&self, event: &Event, unsigned: &[u8]) -> Option<Vec<u8>> {
        let rel = self
            .read_index()
            .get(event.timestamp.timestamp_millis(), &event.id)?
            .relative_path();
        let bytes = fs::read(self.events_dir().join(rel)).ok()?;
        let (stored_unsigned, _) = signature::split(&bytes)?;
        (stored_unsigned == unsigned).then_some(bytes)
    }

    fn store_items(
        &self,
        items: Vec<(&Event, PathBuf, Vec<u8>)>,
    ) -> Result<Vec<Appended>, StoreError> {
        let files: Vec<(PathBuf, Vec<u8>)> = items
            .iter()
            .map(|(_, rel, bytes)| (rel.clone(), bytes.clone()))
            .collect();
        let outcomes = self.writer.write_files(&files)?;
        let mut appended = Vec::with_capacity(outcomes.len());
        for ((event, rel, bytes), outcome) in items.into_iter().zip(outcomes) {
            let hash = content_hash(&bytes);
            let entry = self.write_index().entry_for(event, hash, bytes.len());
            let outcome = match outcome {
                WriteOutcome::Created(_) | WriteOutcome::Duplicate(_) => {
                    self.index_entry(entry.clone(), &rel, event, Some(&bytes));
                    if matches!(outcome, WriteOutcome::Created(_)) {
                        AppendOutcome::Created
                    } else {
                        AppendOutcome::Duplicate
                    }
                }
                WriteOutcome::NameTaken(path) => {
                    let existing = fs::read(&path)
                        .map(|b| content_hash(&b))
                        .unwrap_or_default();
                    self.resolve_conflict(event, &entry, &rel, &bytes, existing, &path)?
                }
            };
            appended.push(Appended {
                path: self.events_dir().join(&rel),
                entry,
                outcome,
            });
        }
        Ok(appended)
    }
}
