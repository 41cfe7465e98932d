//! Small helpers every part of the agent uses.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, taking the data of a poisoned one: a panic elsewhere must not take the
/// agent's bookkeeping down with it (the data is counters and views, valid at every step).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs blocking work (a store write, a file read) from async code. On the agent's
/// multi-thread runtime the worker hands its other tasks off meanwhile; on a current-thread
/// runtime (the turmoil simulation, where every host is one) it runs in place, which keeps
/// the simulation deterministic.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A URL fit for status output, logs and events (which every peer keeps): the user and
/// password (`https://user:pw@host/`) and the query (`?token=...`) are replaced by `…`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => authority.to_owned(),
    };
    let path = match path.find(['?', '#']) {
        Some(i) if path[i..].starts_with('?') => format!("{}?…", &path[..i]),
        Some(i) => path[..i].to_owned(),
        None => path.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{path}"),
        None => format!("{authority}{path}"),
    }
}

/// Replaces `path` with `bytes` so that a reader (Prometheus watching a file, node_exporter's
/// textfile collector) sees the old file or the new one, never half of one: a temp file in the
/// same folder, fsynced, given `mode`, renamed over `path`.
pub fn replace_file(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let name = path.file_name().map_or_else(
        || std::ffi::OsString::from("file"),
        std::ffi::OsStr::to_os_string,
    );
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_and_queries_never_leave_a_url() {
        for (url, shown) in [
            (
                "http://127.0.0.1:8080/health",
                "http://127.0.0.1:8080/health",
            ),
            (
                "https://user:s3cret@nas1/api/ping?token=abc#x",
                "https://…@nas1/api/ping?…",
            ),
            ("https://nas1?key=1", "https://nas1?…"),
            ("https://a@b@nas1/p", "https://…@nas1/p"),
            ("nas1:9000/x?y", "nas1:9000/x?…"),
            ("https://nas1/p#frag", "https://nas1/p"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
