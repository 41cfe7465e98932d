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
