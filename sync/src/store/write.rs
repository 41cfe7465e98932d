//! Storing events this node makes (`append`) or receives as bytes (`store_bytes_batch`).

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use super::{AppendOutcome, Appended, EventStore, StoreError, WriteOutcome, content_hash};
use crate::event::{Event, EventError, NewEvent};
use crate::layout;

impl EventStore {
    /// Creates, validates and durably stores an event stamped now on this node.
    pub fn append(&self, new: NewEvent) -> Result<Appended, StoreError> {
        let event = self.hlc.stamp_event(new, &self.cfg.node)?;
        let mut out = self.append_batch(std::slice::from_ref(&event))?;
        Ok(out.remove(0))
    }

    /// Stores a batch of complete events with one group commit, then indexes them.
    pub fn append_batch(&self, events: &[Event]) -> Result<Vec<Appended>, StoreError> {
        let mut items = Vec::with_capacity(events.len());
        for event in events {
            event.validate()?;
            let bytes = event.to_file_bytes();
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
            match Event::from_file_bytes(bytes, self.cfg.max_event_bytes, None) {
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
