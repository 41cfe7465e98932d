//! Read-only check of every event file: `labmesh fsck`.
//!
//! Classifies each file under `events/` as ok, torn (empty or cut short: an interrupted write
//! that bypassed the temp-and-rename path), invalid (parses but breaks the contract), or
//! misplaced (valid, but its folder or name does not match its content). Leftover temp files and
//! duplicate ids with different content are reported too. Nothing is changed: the agent's scan
//! is what quarantines.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use crate::event::{Event, EventError};
use crate::layout::{self, EVENTS_DIR};
use crate::signature::{SignerDirectory, VerifiedRoots};
use crate::store::content_hash;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    Torn,
    Invalid,
    Misplaced,
    /// Two different files claim one id (both are valid; reported, not fatal).
    Conflict,
    /// A dot-file ending in `.tmp` left by a writer that died before renaming (harmless).
    TempFile,
    /// A folder where none belongs.
    UnexpectedFolder,
    /// `--verify`: no origin signature, or one that does not hold.
    Signature,
}

impl Problem {
    /// Problems that make `fsck` exit non-zero.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Problem::Torn | Problem::Invalid | Problem::Misplaced | Problem::Signature
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub problem: Problem,
    /// Relative to the data dir.
    pub path: PathBuf,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    pub files_checked: usize,
    pub ok: usize,
    pub torn: usize,
    pub invalid: usize,
    pub misplaced: usize,
    pub conflicts: usize,
    pub temp_files: usize,
    /// Signatures checked (`--verify`), and how many failed.
    pub signatures_checked: usize,
    pub bad_signatures: usize,
    pub findings: Vec<Finding>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.torn == 0 && self.invalid == 0 && self.misplaced == 0 && self.bad_signatures == 0
    }

    fn add(&mut self, problem: Problem, path: PathBuf, detail: String) {
        match problem {
            Problem::Torn => self.torn += 1,
            Problem::Invalid => self.invalid += 1,
            Problem::Misplaced => self.misplaced += 1,
            Problem::Conflict => self.conflicts += 1,
            Problem::TempFile => self.temp_files += 1,
            Problem::Signature => self.bad_signatures += 1,
            Problem::UnexpectedFolder => {}
        }
        self.findings.push(Finding {
            problem,
            path,
            detail,
        });
    }
}

/// Checks every file under `<data_dir>/events`. `progress` is called every 1000 files with the
/// count so far (for a progress line on long runs). With `signers`, every file's origin
/// signature is checked too (`labmesh fsck --verify`).
pub fn check(
    data_dir: &Path,
    max_event_bytes: usize,
    signers: Option<&dyn SignerDirectory>,
    mut progress: impl FnMut(usize),
) -> std::io::Result<FsckReport> {
    let roots = VerifiedRoots::default();
    let events = data_dir.join(EVENTS_DIR);
    let mut report = FsckReport::default();
    let mut ids: HashMap<Uuid, (PathBuf, [u8; 32])> = HashMap::new();
    let mut stack = vec![(events.clone(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let mut entries: Vec<_> = match fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && depth == 0 => return Ok(report),
            Err(e) => return Err(e),
        };
        entries.sort();
        for path in entries {
            let rel_data = path.strip_prefix(data_dir).unwrap_or(&path).to_owned();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let meta = match path.symlink_metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            if meta.is_dir() {
                if depth < 2 && !layout::is_hidden(&name) {
                    stack.push((path, depth + 1));
                } else {
                    report.add(
                        Problem::UnexpectedFolder,
                        rel_data,
                        "a folder where event files belong".into(),
                    );
                }
                continue;
            }
            if layout::is_hidden(&name) {
                if name.ends_with(".tmp") {
                    report.add(Problem::TempFile, rel_data, "temp file of an unfinished write (safe to delete; never an acknowledged event)".into());
                }
                continue;
            }
            report.files_checked += 1;
            if report.files_checked % 1000 == 0 {
                progress(report.files_checked);
            }
            if meta.file_type().is_symlink() {
                report.add(
                    Problem::Invalid,
                    rel_data,
                    "is a symbolic link, not an event file".into(),
                );
                continue;
            }
            let rel = path.strip_prefix(&events).unwrap_or(&path).to_owned();
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    report.add(Problem::Invalid, rel_data, format!("cannot read: {e}"));
                    continue;
                }
            };
            let parsed_name = layout::parse_file_name(&name);
            let event = match Event::from_file_bytes(
                &bytes,
                max_event_bytes,
                parsed_name.as_ref().ok().map(|n| n.id),
            ) {
                Ok(ev) => ev,
                Err(e) => {
                    let problem = if e.is_torn()
                        || matches!(e, EventError::Json { .. } if bytes.last() != Some(&b'\n') && looks_cut(&bytes))
                    {
                        Problem::Torn
                    } else {
                        Problem::Invalid
                    };
                    report.add(problem, rel_data, e.to_string());
                    continue;
                }
            };
            if let Err(e) = parsed_name {
                report.add(Problem::Misplaced, rel_data, e.to_string());
                continue;
            }
            if let Err(msg) = layout::check_placement(&rel, &event) {
                report.add(Problem::Misplaced, rel_data, msg);
                continue;
            }
            if let Some(directory) = signers {
                report.signatures_checked += 1;
                let sig = event
                    .extra
                    .get(crate::signature::SIG_FIELD)
                    .and_then(serde_json::Value::as_str);
                if let Err(e) =
                    crate::signature::verify(&bytes, &event.node, sig, directory, &roots)
                {
                    report.add(Problem::Signature, rel_data, e.to_string());
                    continue;
                }
            }
            let hash = content_hash(&bytes);
            if let Some((other, other_hash)) = ids.get(&event.id) {
                if *other_hash != hash {
                    report.add(
                        Problem::Conflict,
                        rel_data,
                        format!(
                            "same id {} as {} with different content",
                            event.id,
                            other.display()
                        ),
                    );
                }
            } else {
                ids.insert(event.id, (rel_data, hash));
            }
            report.ok += 1;
        }
    }
    Ok(report)
}

/// A JSON error on a file that stops mid-token looks like a cut write rather than a bad one.
fn looks_cut(bytes: &[u8]) -> bool {
    !bytes.trim_ascii_end().ends_with(b"}")
}
