//! How the alerting core talks to the world: the three-method [`Runtime`] a driver implements
//! (foca's shape: write an event, perform a notification, call back later), the [`Timer`]s it
//! calls back with, and the [`Notification`]s it performs. [`AccumulatingRuntime`] collects the
//! requests of one call for a driver to perform afterwards; the discrete simulator and the
//! tests use it as is.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sync::NewEvent;

use crate::message::NotificationMessage;

/// Everything the core asks of its driver. Calls are made in order and the driver must keep
/// that order: in particular a `notification_attempted` event passed to
/// [`Runtime::write_event`] must be durably stored before the [`Runtime::notify`] that follows
/// it is performed. That record is what stops another node from sending the same thing.
pub trait Runtime {
    /// Store this event (through the event store, which stamps id, time and node) and sync it.
    fn write_event(&mut self, event: NewEvent);
    /// Perform this notification (build it with [`crate::notify::build`]), give up at its
    /// `deadline`, and report with [`crate::Engine::on_attempt_delivery`].
    fn notify(&mut self, notification: Notification);
    /// Call [`crate::Engine::on_timer`] with `timer` after `after`. Extra or early calls are
    /// harmless.
    fn submit_after(&mut self, timer: Timer, after: Duration);
}

/// Why the engine wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The membership view will have settled.
    Settle,
    /// An alert leaves pending, an event alert goes quiet, or a periodic job's window ends.
    Alerts,
    /// A group is due, a retry, a mute ending, another node's attempt going stale.
    Notify,
    /// The stored events gathered since the first of a burst are due for one evaluation
    /// (see [`crate::engine::BURST_WINDOW`]).
    Burst,
}

/// One notification to perform.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The ledger id; pass it back to [`crate::Engine::on_attempt_delivery`].
    pub id: String,
    pub attempt: u32,
    pub receiver: String,
    pub message: NotificationMessage,
    /// Abandon the send at this time and report it failed: after it, other nodes may take over.
    pub deadline: DateTime<Utc>,
}

/// A [`Runtime`] that keeps what the core asked for, in order, until the driver takes it.
#[derive(Debug, Default)]
pub struct AccumulatingRuntime {
    /// Events to store, in order. The driver stores them before it performs any notification
    /// of the same call (the engine writes an attempt record before the send it covers).
    pub events: Vec<NewEvent>,
    pub notifications: Vec<Notification>,
    /// Timers to submit, with their delays.
    pub timers: Vec<(Timer, Duration)>,
}

impl AccumulatingRuntime {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.notifications.is_empty() && self.timers.is_empty()
    }
}

impl Runtime for AccumulatingRuntime {
    fn write_event(&mut self, event: NewEvent) {
        self.events.push(event);
    }
    fn notify(&mut self, notification: Notification) {
        self.notifications.push(notification);
    }
    fn submit_after(&mut self, timer: Timer, after: Duration) {
        self.timers.push((timer, after));
    }
}
