//! Archives of pruned days: before retention deletes `events/YYYY-MM-DD/`, the folder can be
//! kept as `events-archive/YYYY-MM-DD.tar.zst` (a plain tar of `YYYY-MM-DD/<node>/<file>`,
//! zstd-compressed; `tar --zstd -xf` restores it, and dropping the files back into `events/`
//! makes the store adopt them again).
//!
//! The archive is written whole to a temporary file, synced, and renamed into place before the
//! folder is deleted: a crash or a full disk leaves the folder where it was.

use std::path::{Path, PathBuf};

use ruzstd::encoding::{CompressionLevel, compress_to_vec};

use crate::durable;
use crate::durable::IoError;

/// The archive folder beside `events/`.
pub const ARCHIVE_DIR: &str = "events-archive";

/// Writes `<archive_dir>/<day>.tar.zst` from the date folder `day_dir` and returns its path.
/// An archive already there (a prune that crashed after writing it) is replaced.
pub fn archive_day(day_dir: &Path, archive_dir: &Path) -> Result<PathBuf, IoError> {
    let day = day_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    // A link is archived as a link, never as what it points to (outside the data dir).
    builder.follow_symlinks(false);
    builder
        .append_dir_all(&day, day_dir)
        .map_err(|e| IoError::new("archive", day_dir, e))?;
    let tar_bytes = builder
        .into_inner()
        .map_err(|e| IoError::new("archive", day_dir, e))?;
    let compressed = compress_to_vec(tar_bytes.as_slice(), CompressionLevel::Fastest);
    let mut touched = std::collections::BTreeSet::new();
    durable::create_dirs(archive_dir, &mut touched)?;
    for dir in &touched {
        durable::sync_dir(dir)?;
    }
    let dest = archive_dir.join(format!("{day}.tar.zst"));
    durable::write_file_atomic(&dest, &compressed)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_day_round_trips_through_its_archive() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let day = dir.path().join("events/2026-05-12");
        fs::create_dir_all(day.join("saturn")).unwrap_or_else(|e| panic!("{e}"));
        fs::write(day.join("saturn/a.json"), b"{\"n\":1}\n").unwrap_or_else(|e| panic!("{e}"));
        fs::write(day.join("saturn/b.json"), b"{\"n\":2}\n").unwrap_or_else(|e| panic!("{e}"));
        let out =
            archive_day(&day, &dir.path().join(ARCHIVE_DIR)).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.ends_with("events-archive/2026-05-12.tar.zst"));
        let bytes = fs::read(&out).unwrap_or_else(|e| panic!("{e}"));
        let decoder = ruzstd::decoding::StreamingDecoder::new(bytes.as_slice())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut archive = tar::Archive::new(decoder);
        let mut names: Vec<(String, Vec<u8>)> = Vec::new();
        for entry in archive.entries().unwrap_or_else(|e| panic!("{e}")) {
            let mut entry = entry.unwrap_or_else(|e| panic!("{e}"));
            let name = entry
                .path()
                .unwrap_or_else(|e| panic!("{e}"))
                .display()
                .to_string();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap_or_else(|e| panic!("{e}"));
            if !content.is_empty() {
                names.push((name, content));
            }
        }
        names.sort();
        assert_eq!(
            names,
            vec![
                (
                    "2026-05-12/saturn/a.json".to_owned(),
                    b"{\"n\":1}\n".to_vec()
                ),
                (
                    "2026-05-12/saturn/b.json".to_owned(),
                    b"{\"n\":2}\n".to_vec()
                ),
            ]
        );
    }
}
