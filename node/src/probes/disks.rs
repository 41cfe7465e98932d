//! Disk space per mounted filesystem: the mount list from sysinfo, the figures from statvfs (as
//! `df` computes them). Pseudo filesystems (proc, tmpfs, cgroup, overlay layers, snaps, ...) are
//! left out, and a device mounted at several places (bind mounts) is shown once. Network
//! filesystems (NFS, CIFS) are not listed, as sysinfo decides: statvfs on a hard-mounted share
//! whose server went away hangs. `--path` in admission still measures any path given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sysinfo::DiskRefreshKind;

use super::{Disk, Disks, Probe};

/// Filesystem types that hold no user data, or mirror another filesystem.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fuse.snapfuse",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nfsd",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Whether a mount is worth reporting. `overlay` at `/` stays: that is a container's own disk.
pub fn is_real(fs: &str, mount: &str) -> bool {
    if fs == "overlay" && mount == "/" {
        return true;
    }
    if PSEUDO.contains(&fs) {
        return false;
    }
    // macOS system volumes other than the data volume: sealed, or the OS's own scratch.
    !(mount.starts_with("/System/Volumes/") && mount != "/System/Volumes/Data")
}

/// Space on the filesystem holding `path`, from statvfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    pub used: u64,
    pub available: u64,
}

impl Space {
    pub fn used_pct(&self) -> f64 {
        let denom = self.used + self.available;
        if denom == 0 {
            0.0
        } else {
            super::host::round2(self.used as f64 * 100.0 / denom as f64)
        }
    }
}

pub fn statvfs(path: &Path) -> Result<Space, String> {
    let st = rustix::fs::statvfs(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let unit = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    let bytes = |blocks: u64| blocks.saturating_mul(unit);
    Ok(Space {
        total: bytes(st.f_blocks),
        used: bytes(st.f_blocks.saturating_sub(st.f_bfree)),
        available: bytes(st.f_bavail),
    })
}

/// Space on the filesystem that would hold `path`: the path itself, or its nearest existing
/// ancestor when it does not exist yet (a download folder to be created). Returns the path
/// actually measured.
pub fn space_for(path: &Path) -> Result<(PathBuf, Space), String> {
    if !path.is_absolute() {
        return Err(format!(
            "{}: give an absolute path (the agent does not share the client's working directory)",
            path.display()
        ));
    }
    let mut at = path;
    loop {
        match statvfs(at) {
            Ok(space) => return Ok((at.to_owned(), space)),
            Err(e) => match at.parent() {
                Some(parent) if !at.exists() => at = parent,
                _ => return Err(e),
            },
        }
    }
}

pub struct DiskProbe {
    disks: Result<sysinfo::Disks, String>,
}

impl Default for DiskProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl DiskProbe {
    pub fn new() -> DiskProbe {
        DiskProbe {
            disks: sysinfo::Disks::new().map_err(|e| format!("cannot list mounts: {e}")),
        }
    }

    pub fn sample(&mut self) -> Probe<Disks> {
        let disks = match &mut self.disks {
            Ok(d) => d,
            Err(e) => return Probe::error(&*e),
        };
        // Re-read the mount list each time: a USB disk or an NFS share may come and go.
        disks.refresh_specifics(true, DiskRefreshKind::nothing());
        let mut by_device: BTreeMap<String, Disk> = BTreeMap::new();
        let mut errors = Vec::new();
        for d in disks.iter() {
            let fs = d.file_system().to_string_lossy().into_owned();
            let mount = d.mount_point().to_string_lossy().into_owned();
            if !is_real(&fs, &mount) {
                continue;
            }
            let space = match statvfs(d.mount_point()) {
                Ok(s) if s.total > 0 => s,
                Ok(_) => continue,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let device = d.name().to_string_lossy().into_owned();
            let disk = Disk {
                mount: mount.clone(),
                device: device.clone(),
                fs,
                total_bytes: space.total,
                used_bytes: space.used,
                available_bytes: space.available,
                used_pct: space.used_pct(),
            };
            // One entry per device: the shortest mount point (`/` over `/var/lib/docker`).
            let key = if device.is_empty() { mount } else { device };
            match by_device.get(&key) {
                Some(kept) if kept.mount.len() <= disk.mount.len() => {}
                _ => {
                    by_device.insert(key, disk);
                }
            }
        }
        let mut mounts: Vec<Disk> = by_device.into_values().collect();
        mounts.sort_by(|a, b| a.mount.cmp(&b.mount));
        if mounts.is_empty() && !errors.is_empty() {
            return Probe::error(errors.join("; "));
        }
        if !errors.is_empty() {
            tracing::debug!(errors = ?errors, "some mounts could not be measured");
        }
        Probe::Ok(Disks { mounts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_filesystems_are_skipped() {
        assert!(is_real("ext4", "/"));
        assert!(is_real("xfs", "/srv"));
        assert!(is_real("overlay", "/"), "a container's root");
        assert!(!is_real("overlay", "/var/lib/docker/overlay2/abc/merged"));
        assert!(!is_real("tmpfs", "/run"));
        assert!(!is_real("squashfs", "/snap/core/1"));
        assert!(!is_real("cgroup2", "/sys/fs/cgroup"));
        assert!(is_real("apfs", "/System/Volumes/Data"));
        assert!(!is_real("apfs", "/System/Volumes/VM"));
    }

    #[test]
    fn root_has_space_and_missing_folders_use_their_parent() {
        let (at, space) = space_for(Path::new("/")).unwrap();
        assert_eq!(at, Path::new("/"));
        assert!(space.total > 0 && space.available <= space.total);
        assert!((0.0..=100.0).contains(&space.used_pct()));
        let tmp = tempfile::tempdir().unwrap();
        let future = tmp.path().join("models/llama/weights");
        let (at, _) = space_for(&future).unwrap();
        assert_eq!(at, tmp.path());
        let err = space_for(Path::new("relative/dir")).unwrap_err();
        assert!(err.contains("absolute path"), "{err}");
    }

    #[test]
    fn the_root_filesystem_is_listed() {
        let mut probe = DiskProbe::new();
        let disks = probe.sample();
        let mounts = &disks.ok().expect("disks").mounts;
        assert!(
            mounts.iter().any(|d| d.mount == "/"),
            "{mounts:?} has no `/`"
        );
        assert!(mounts.iter().all(|d| d.fs != "proc" && d.fs != "tmpfs"));
    }
}
