//! Two small helpers every part of the agent uses.

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
