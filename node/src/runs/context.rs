//! What a run is about, read from the machine when it starts: the git checkout it runs in and
//! the host. Every probe here is best effort: a run outside a repository, or on a host without
//! `git`, records what it can and still runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::redact_url;

/// The git facts of a checkout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitFacts {
    /// The repository's top folder.
    pub top: Option<PathBuf>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub dirty: Option<bool>,
    /// The `origin` remote, credentials and query removed.
    pub remote: Option<String>,
}

/// One line of `git -C dir ARGS` output; `None` when git is missing or says no.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Some(text)
}

/// The checkout `dir` is in, if any.
pub fn git_facts(dir: &Path) -> GitFacts {
    let Some(top) = git(dir, &["rev-parse", "--show-toplevel"]) else {
        return GitFacts::default();
    };
    let branch = git(dir, &["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD");
    GitFacts {
        top: Some(PathBuf::from(top)),
        commit: git(dir, &["rev-parse", "HEAD"]).filter(|c| !c.is_empty()),
        branch,
        dirty: git(dir, &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        remote: git(dir, &["remote", "get-url", "origin"])
            .filter(|r| !r.is_empty())
            .map(|r| redact_url(&r)),
    }
}

/// The size in bytes of a repository's object store (`git count-objects -v`: loose plus
/// packed), to tell how much a pull fetched.
pub fn git_object_bytes(dir: &Path) -> Option<u64> {
    let text = git(dir, &["count-objects", "-v"])?;
    let kib: u64 = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "size" | "size-pack").then(|| v.trim().parse::<u64>().ok())?
        })
        .sum();
    Some(kib * 1024)
}

/// The operating system's name and version as a person would say it: `PRETTY_NAME` of
/// `/etc/os-release` on Linux, `sw_vers` on a Mac ("macOS 14.5 (23F79)").
pub fn os_version() -> Option<String> {
    if cfg!(target_os = "macos") {
        return crate::probes::macos::os_version_now()
            .map_err(|e| tracing::debug!(error = %e, "OS version"))
            .ok();
    }
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    os_release_pretty_name(&text)
}

/// `PRETTY_NAME` from an os-release file's text.
pub fn os_release_pretty_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// The GPU the run can use, in one line: NVIDIA's model, driver and CUDA version through NVML,
/// or on a Mac the model and Metal family `system_profiler` gives ("Apple M2 Pro (19-core GPU),
/// Metal 3, unified memory"; plain "Apple Metal" when it gives nothing). `None` elsewhere.
pub fn gpu_line() -> Option<String> {
    if cfg!(target_os = "macos") {
        return Some(crate::probes::macos::gpu_line_now().unwrap_or_else(|e| {
            tracing::debug!(error = %e, "GPU line");
            "Apple Metal".to_owned()
        }));
    }
    let nvml = nvml_wrapper::Nvml::init().ok()?;
    let count = nvml.device_count().ok()?;
    if count == 0 {
        return None;
    }
    let model = nvml
        .device_by_index(0)
        .ok()
        .and_then(|d| d.name().ok())
        .unwrap_or_else(|| "NVIDIA GPU".to_owned());
    let driver = nvml.sys_driver_version().ok();
    let cuda = nvml
        .sys_cuda_driver_version()
        .ok()
        .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
    let mut line = if count > 1 {
        format!("{count}× {model}")
    } else {
        model
    };
    if let Some(d) = driver {
        line.push_str(&format!(", driver {d}"));
    }
    if let Some(c) = cuda {
        line.push_str(&format!(", CUDA {c}"));
    }
    Some(line)
}

/// Whether process `pid` of this host is alive: `None` when there is no pid to ask about or
/// the kernel does not say.
pub fn process_alive(pid: u32) -> Option<bool> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)?;
    match rustix::process::test_kill_process(pid) {
        Ok(()) => Some(true),
        // It exists, and belongs to someone else.
        Err(rustix::io::Errno::PERM) => Some(true),
        Err(rustix::io::Errno::SRCH) => Some(false),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn os_release_names_the_distribution() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            os_release_pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_release_pretty_name("ID=x\n"), None);
        assert_eq!(os_release_pretty_name("PRETTY_NAME=\"\"\n"), None);
    }

    #[test]
    fn outside_a_repository_there_are_no_git_facts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(git_facts(dir.path()), GitFacts::default());
    }
}
