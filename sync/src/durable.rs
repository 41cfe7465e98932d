//! Atomic, durable file publication: temp file in the same folder, fsync, rename, fsync folder.
//!
//! A reader never sees a half-written event because the final name appears only through a
//! rename of a complete, synced file. A batch writes all its temp files first, then pays one
//! durability barrier (`syncfs` on Linux: one call flushes every temp file of the batch; one
//! `fsync` per file elsewhere), then publishes every file, then fsyncs each folder once. That is
//! the group commit behind `EventStore::append_batch`.
//!
//! Publishing never replaces: an existing file under the same name is someone else's event (the
//! same one, or a conflict to report), so we link the temp file to the final name, which fails
//! when the name exists, instead of renaming over it.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::layout::temp_name;

/// One file of a batch, written to its temp name and waiting to be published.
pub(crate) struct PendingFile {
    pub temp: PathBuf,
    pub target: PathBuf,
    /// False until a barrier (or its own fsync) has made the content durable.
    synced: bool,
}

/// Whether a batch can make all its files durable with one `syncfs` call instead of one fsync
/// each. Then temp files are closed right after writing: a batch never holds a descriptor per
/// event (a 1000-event batch would otherwise meet the usual 1024-descriptor limit).
pub(crate) fn batch_barrier_available(batch_len: usize) -> bool {
    cfg!(target_os = "linux") && batch_len > 1
}

/// What publishing found at the final name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    Created,
    /// The name was taken; the temp file was removed and nothing changed.
    AlreadyExists,
}

/// Which I/O step failed and on what path: every store error names both.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl IoError {
    pub(crate) fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        IoError {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// A hint for the operator on the usual causes.
    pub fn hint(&self) -> Option<&'static str> {
        match self.source.raw_os_error() {
            Some(28) => Some("the disk is full: free space or move the data dir (--data-dir)"),
            Some(30) => Some(
                "the file system is read-only: remount it read-write or choose another --data-dir",
            ),
            Some(13) | Some(1) => {
                Some("permission denied: run as the data dir's owner or choose another --data-dir")
            }
            Some(122) => Some("disk quota exceeded"),
            _ => None,
        }
    }
}

fn nonce() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// Creates `dir` and its missing parents, recording in `touched` every folder whose entry list
/// changed (the parent of each folder created), so the caller can fsync them.
pub(crate) fn create_dirs(dir: &Path, touched: &mut BTreeSet<PathBuf>) -> Result<(), IoError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.is_dir() {
        missing.push(cur.to_owned());
        match cur.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => cur = parent,
            _ => break,
        }
    }
    for path in missing.iter().rev() {
        match fs::create_dir(path) {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    touched.insert(parent.to_owned());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(IoError::new("create folder", path, e)),
        }
    }
    Ok(())
}

/// Writes `bytes` to a fresh temp file beside `target`. With `sync`, the file is fsynced before
/// returning; without, the caller owes a [`barrier`]. On failure nothing is left.
pub(crate) fn write_temp(target: &Path, bytes: &[u8], sync: bool) -> Result<PendingFile, IoError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(temp_name(&name, nonce()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| IoError::new("create a file in", dir, e))?;
        file.write_all(bytes)
            .map_err(|e| IoError::new("write", &temp, e))?;
        if sync {
            file.sync_all()
                .map_err(|e| IoError::new("fsync", &temp, e))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(PendingFile {
            temp,
            target: target.to_owned(),
            synced: sync,
        }),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Makes the content of every pending file durable. `root` is any path on the same file system.
pub(crate) fn barrier(pending: &mut [PendingFile], root: &Path) -> Result<(), IoError> {
    if pending.iter().all(|p| p.synced) {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        // One syscall flushes the whole batch: far cheaper than one journal commit per file.
        let dir = File::open(root).map_err(|e| IoError::new("open", root, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| IoError::new("syncfs", root, e.into()))?;
    }
    #[cfg(not(target_os = "linux"))]
    for p in pending.iter() {
        if !p.synced {
            File::open(&p.temp)
                .and_then(|f| f.sync_all())
                .map_err(|e| IoError::new("fsync", &p.temp, e))?;
        }
    }
    let _ = root;
    for p in pending.iter_mut() {
        p.synced = true;
    }
    Ok(())
}

/// Publishes a durable temp file under its final name without ever replacing an existing file.
pub(crate) fn publish(pending: &PendingFile) -> Result<Published, IoError> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        match renameat_with(
            CWD,
            &pending.temp,
            CWD,
            &pending.target,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(Published::Created),
            Err(rustix::io::Errno::EXIST) => {
                let _ = fs::remove_file(&pending.temp);
                return Ok(Published::AlreadyExists);
            }
            // The file system does not know RENAME_NOREPLACE: fall through to a hard link.
            Err(
                rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::NOTSUP,
            ) => {}
            Err(e) => {
                let _ = fs::remove_file(&pending.temp);
                return Err(IoError::new("rename", &pending.target, e.into()));
            }
        }
    }
    let result = match fs::hard_link(&pending.temp, &pending.target) {
        Ok(()) => Ok(Published::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Published::AlreadyExists),
        // File systems without hard links (some network shares): check, then rename.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
            ) || e.raw_os_error() == Some(95) =>
        {
            if pending.target.symlink_metadata().is_ok() {
                Ok(Published::AlreadyExists)
            } else {
                fs::rename(&pending.temp, &pending.target)
                    .map(|()| Published::Created)
                    .map_err(|e| IoError::new("rename", &pending.target, e))
            }
        }
        Err(e) => Err(IoError::new("link", &pending.target, e)),
    };
    let _ = fs::remove_file(&pending.temp);
    result
}

/// Removes the temp files of a batch that will not be published.
pub(crate) fn discard(pending: &[PendingFile]) {
    for p in pending {
        let _ = fs::remove_file(&p.temp);
    }
}

/// fsyncs a folder so that the names created in it survive a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IoError> {
    let handle = File::open(dir).map_err(|e| IoError::new("open folder", dir, e))?;
    handle
        .sync_all()
        .map_err(|e| IoError::new("fsync folder", dir, e))
}

/// Writes a whole small file durably and atomically (used for `.reason` files, tokens, views).
pub fn write_file_atomic(target: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let pending = write_temp(target, bytes, true)?;
    fs::rename(&pending.temp, target).map_err(|e| {
        let _ = fs::remove_file(&pending.temp);
        IoError::new("rename", target, e)
    })?;
    sync_dir(target.parent().unwrap_or(Path::new(".")))
}
