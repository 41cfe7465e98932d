//! Durable event files without an index: the temp-fsync-rename-fsync sequence, with one
//! barrier and one fsync per folder for a batch (group commit).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::StoreError;
use crate::durable::{self, PendingFile, Published};
use crate::event::{Event, EventError};
use crate::layout::{self, EVENTS_DIR};

/// Writes event files durably without an index: what `labmesh emit` and batch importers use,
/// so that writing an event costs no scan of the store.
#[derive(Debug, Clone)]
pub struct EventWriter {
    events_dir: PathBuf,
    max_event_bytes: usize,
}

/// What happened to one event handed to a writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored under this path.
    Created(PathBuf),
    /// The same bytes were already stored there.
    Duplicate(PathBuf),
    /// Another file with different content holds the name; nothing was written.
    NameTaken(PathBuf),
}

impl WriteOutcome {
    pub fn path(&self) -> &Path {
        match self {
            WriteOutcome::Created(p) | WriteOutcome::Duplicate(p) | WriteOutcome::NameTaken(p) => p,
        }
    }
}

impl EventWriter {
    pub fn new(data_dir: &Path, max_event_bytes: usize) -> Self {
        EventWriter {
            events_dir: data_dir.join(EVENTS_DIR),
            max_event_bytes,
        }
    }

    pub fn events_dir(&self) -> &Path {
        &self.events_dir
    }

    /// Writes one event durably; returns where it landed.
    pub fn write(&self, event: &Event) -> Result<WriteOutcome, StoreError> {
        let mut out = self.write_batch(std::slice::from_ref(event))?;
        Ok(out.remove(0))
    }

    /// Writes a batch with one durability barrier and one fsync per folder (group commit).
    /// When this returns `Ok`, every event in it is on disk; on `Err`, none was published by
    /// this call unless it failed while publishing (each file is then whole or absent).
    pub fn write_batch(&self, events: &[Event]) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut items = Vec::with_capacity(events.len());
        for event in events {
            event.validate()?;
            let bytes = event.to_file_bytes();
            if bytes.len() > self.max_event_bytes {
                return Err(EventError::TooLarge {
                    size: bytes.len(),
                    limit: self.max_event_bytes,
                }
                .into());
            }
            items.push((layout::relative_path(event), bytes));
        }
        self.write_files(&items)
    }

    /// Publishes pre-serialised event files (`rel` relative to `events/`).
    pub(crate) fn write_files(
        &self,
        items: &[(PathBuf, Vec<u8>)],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut touched = BTreeSet::new();
        let sync_each = !durable::batch_barrier_available(items.len());
        let mut pending: Vec<PendingFile> = Vec::with_capacity(items.len());
        for (rel, bytes) in items {
            let target = self.events_dir.join(rel);
            let folder = target.parent().unwrap_or(&self.events_dir).to_owned();
            let ensure = if touched.contains(&folder) {
                Ok(())
            } else {
                durable::create_dirs(&folder, &mut touched)
            };
            let written = ensure.and_then(|()| durable::write_temp(&target, bytes, sync_each));
            match written {
                Ok(p) => pending.push(p),
                Err(e) => {
                    durable::discard(&pending);
                    return Err(e.into());
                }
            }
            touched.insert(folder);
        }
        if let Err(e) = durable::barrier(&mut pending, &self.events_dir) {
            durable::discard(&pending);
            return Err(e.into());
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for (i, p) in pending.iter().enumerate() {
            match durable::publish(p) {
                Ok(Published::Created) => outcomes.push(WriteOutcome::Created(p.target.clone())),
                Ok(Published::AlreadyExists) => {
                    let same = fs::read(&p.target).is_ok_and(|existing| existing == items[i].1);
                    outcomes.push(if same {
                        WriteOutcome::Duplicate(p.target.clone())
                    } else {
                        WriteOutcome::NameTaken(p.target.clone())
                    });
                }
                Err(e) => {
                    durable::discard(&pending[i..]);
                    return Err(e.into());
                }
            }
        }
        for dir in &touched {
            durable::sync_dir(dir)?;
        }
        Ok(outcomes)
    }
}
