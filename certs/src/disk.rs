//! File helpers: atomic writes (keys get mode 0600 from the moment the file exists) and reads
//! that turn "not there" into `None` and every other failure into an error naming the file.
//!
//! A write goes to a temporary file in the same folder, is fsynced, then renamed (or hard-linked,
//! when the caller must not replace an existing file) over the target, and the folder is fsynced,
//! so a crash leaves either the old file or the new one, never half a key.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{CertError, Result};

/// Mode of private keys and join bundles (they hold a private key).
pub(crate) const SECRET_MODE: u32 = 0o600;
/// Mode of certificates and other public files.
pub(crate) const PUBLIC_MODE: u32 = 0o644;
/// Mode of folders we create: the certs dir holds keys, so only the owner may list it.
const DIR_MODE: u32 = 0o700;

/// What to do when the target already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    Replace,
    /// Fail with `AlreadyExists` (the check and the write are one atomic step).
    Keep,
}

/// Creates `dir` (and parents) with mode 0700 where it does not exist yet.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| CertError::io("create the folder", dir, e))
}

/// Atomically writes `bytes` to `path` with `mode`; `what` names the file in errors ("the node
/// key"). The parent folder must exist.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    existing: Existing,
    what: &str,
) -> Result<()> {
    let dir = parent_of(path);
    let tmp = temp_path(path);
    let result = write_temp(&tmp, bytes, mode)
        .map_err(|e| CertError::io(format!("write {what} (temporary file)"), &tmp, e))
        .and_then(|()| publish(&tmp, path, existing, what));
    if result.is_err() {
        // Best effort: a leftover temp file is harmless but untidy; the original error matters.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(dir).map_err(|e| CertError::io("sync the folder", dir, e))
}

fn write_temp(tmp: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    // `mode` applies at creation, so a key is never readable by others, not even briefly.
    // `create_new` refuses to follow a planted symlink or reuse a stale temp file.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    // The umask may have removed bits from `mode`; public files should still be readable.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn publish(tmp: &Path, path: &Path, existing: Existing, what: &str) -> Result<()> {
    match existing {
        Existing::Replace => {
            fs::rename(tmp, path).map_err(|e| CertError::io(format!("write {what}"), path, e))
        }
        Existing::Keep => {
            // link(2) fails if the target exists, which makes check-and-create atomic.
            match fs::hard_link(tmp, path) {
                Ok(()) => {
                    let _ = fs::remove_file(tmp);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(CertError::AlreadyExists {
                        what: what.to_string(),
                        path: path.to_path_buf(),
                        hint: "remove it first, choose another path, or ask to overwrite it"
                            .to_string(),
                    })
                }
                Err(e) => Err(CertError::io(format!("write {what}"), path, e)),
            }
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    // Unique within the process (counter) and across processes (pid); `create_new` catches the
    // rest.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    parent_of(path).join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Reads a text file; `Ok(None)` when it does not exist.
pub(crate) fn read_optional(path: &Path, what: &str) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CertError::io(format!("read {what}"), path, e)),
    }
}

/// Reads a text file that must exist; `missing_hint` says what to do when it does not.
pub(crate) fn read_required(path: &Path, what: &str, missing_hint: &str) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CertError::Io {
            action: format!("read {what}"),
            path: path.to_path_buf(),
            source: e,
            hint: format!("; {missing_hint}"),
        }),
        Err(e) => Err(CertError::io(format!("read {what}"), path, e)),
    }
}

/// The permission bits of `path` (e.g. 0o600).
pub(crate) fn mode_of(path: &Path, what: &str) -> Result<u32> {
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| CertError::io(format!("inspect {what}"), path, e))
}
