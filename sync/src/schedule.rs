//! When to reconcile with whom: the sync policy every driver runs (the agent, the full-stack
//! simulation and the discrete simulator), as a sans-IO state machine next to [`SyncCore`].
//!
//! The driver calls [`Scheduler::tick`] every [`ScheduleConfig::tick`] with the live peers as it
//! sees them (name, mesh generation, gossiped fingerprint), its own fingerprint, a monotonic
//! clock reading, the wall clock and a random source; the scheduler expires stale sessions,
//! decides which peers are due and starts those sessions on the core. Peers whose process
//! restarted or that left are reported by [`Scheduler::departures`], which drops their
//! sessions. Nothing here reads a clock or a random source by itself: the same inputs give the
//! same sessions, on a laptop or in a simulation of a thousand nodes.
//!
//! The rules (see `sync/ALGORITHM.md` for why):
//! - a peer whose fingerprint has differed for [`ScheduleConfig::differ_delay`] is due (the
//!   node with the smaller name; the other waits three times as long in case the first is
//!   already at it), unless a session with it started within that wait;
//! - every [`ScheduleConfig::anti_entropy_interval`] one random live peer is due anyway;
//! - at most [`ScheduleConfig::max_sessions`] sessions run at once, the due ones taken from a
//!   random starting point (else every node's first pick would be the smallest name);
//! - a world snapshot is offered to a peer holding the same events but another world, backing
//!   off from [`ScheduleConfig::world_resend_min`] to [`ScheduleConfig::world_resend_max`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::reconcile::{Runtime, SyncCore, SyncSource};

/// Scheduling settings; each field's doc says what it trades.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    /// How often the driver calls [`Scheduler::tick`]. Shorter notices a difference sooner and
    /// wakes the agent more often. Default 500 ms.
    pub tick: Duration,
    /// Reconcile with a peer whose fingerprint has differed this long. Shorter repairs sooner
    /// but may start sessions for events that eager push is still delivering. Default 2 s.
    pub differ_delay: Duration,
    /// Reconcile with one peer this often even when fingerprints agree (catches hash
    /// collisions of the short gossip fingerprint, costs one small round trip). Default 5 min.
    pub anti_entropy_interval: Duration,
    /// Reconcile only events newer than this (the retention window). Default 30 days.
    pub window: Duration,
    /// A session that has not finished after this long is dropped (the next one redoes what is
    /// missing). Default 60 s.
    pub session_timeout: Duration,
    /// Most reconciliation sessions this node starts at once. After a partition heals every
    /// node differs from every peer across it; without a cap that is ~N²/2 sessions at once
    /// (docs/simulation.md), with one the first few sessions bring this node level and the
    /// matching fingerprints spare the rest. Lower: less burst, slower repair. 0: no cap.
    /// Default 4.
    pub max_sessions: usize,
    /// The first wait before a world snapshot is offered again to a peer whose world still
    /// differs (it may have been lost while the peer was connecting). Default 5 s.
    pub world_resend_min: Duration,
    /// The longest such wait: a snapshot can be large, and a peer that cannot merge it should
    /// not receive it every few seconds. Default 5 min.
    pub world_resend_max: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            tick: Duration::from_millis(500),
            differ_delay: Duration::from_secs(2),
            anti_entropy_interval: Duration::from_secs(300),
            window: Duration::from_secs(30 * 24 * 3600),
            session_timeout: Duration::from_secs(60),
            max_sessions: 4,
            world_resend_min: Duration::from_secs(5),
            world_resend_max: Duration::from_secs(300),
        }
    }
}

/// A live peer as the driver sees it at one moment.
#[derive(Debug, Clone, Copy)]
pub struct PeerSight<'a, F> {
    pub name: &'a str,
    /// Its mesh generation: a new one is a new process.
    pub generation: u64,
    /// Its gossiped event-set fingerprint; `None` until it publishes one.
    pub fingerprint: Option<&'a F>,
}

/// Why a peer's sessions were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// Its mesh generation changed: a new process, which knows nothing of the old sessions.
    Restarted,
    /// It is no longer live (offline, dead or left).
    Gone,
}

impl Departure {
    pub fn as_str(self) -> &'static str {
        match self {
            Departure::Restarted => "restarted",
            Departure::Gone => "not live",
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Sessions dropped because they ran past the timeout.
    pub expired: usize,
    /// Peers a session was started with.
    pub started: Vec<String>,
    /// Peers a session could not be started with, and why.
    pub failed: Vec<(String, String)>,
}

/// The scheduling state of one node.
#[derive(Debug, Clone)]
pub struct Scheduler {
    cfg: ScheduleConfig,
    /// Per peer: since when (monotonic ms) its fingerprint has differed, and the tick that
    /// last saw it live.
    differ_since: BTreeMap<String, (u64, u64)>,
    /// Per peer: when this node last started a session with it.
    last_session: BTreeMap<String, u64>,
    /// Live peers and their generations at the last look.
    generations: BTreeMap<String, u64>,
    last_anti_entropy: u64,
    /// Per peer: when a world snapshot was last offered, and the wait before the next.
    world_sent: BTreeMap<String, (u64, Duration)>,
    ticks: u64,
}

/// Start of the reconciled range: midnight UTC `window` whole days before `now`'s date, the
/// cutoff the retention prune uses, so the range covers exactly the days the store keeps (the
/// fingerprint covers the whole store, and the two must agree, or peers that differ only
/// outside the range would never look equal).
pub fn window_start_ms(now: DateTime<Utc>, window: Duration) -> i64 {
    let days = window.as_secs() / 86_400;
    now.date_naive()
        .checked_sub_days(chrono::Days::new(days))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |t| t.and_utc().timestamp_millis())
}

impl Scheduler {
    /// A node whose process started at monotonic time `now_ms` (the first anti-entropy round
    /// is one interval away).
    pub fn new(cfg: ScheduleConfig, now_ms: u64) -> Scheduler {
        Scheduler {
            cfg,
            differ_since: BTreeMap::new(),
            last_session: BTreeMap::new(),
            generations: BTreeMap::new(),
            last_anti_entropy: now_ms,
            world_sent: BTreeMap::new(),
            ticks: 0,
        }
    }

    pub fn config(&self) -> &ScheduleConfig {
        &self.cfg
    }

    /// When this node last started a session with `peer` (monotonic ms).
    pub fn last_session(&self, peer: &str) -> Option<u64> {
        self.last_session.get(peer).copied()
    }

    /// The start of the reconciled range at wall time `now` (see [`window_start_ms`]).
    pub fn window_start_ms(&self, now: DateTime<Utc>) -> i64 {
        window_start_ms(now, self.cfg.window)
    }

    /// Compares the live peers (name, generation) with the last look and drops the sessions
    /// with a process that is gone: a session opened with a process that restarted or left
    /// the live set is never answered, and until the session timeout it would count against
    /// the cap and stop a new session with that peer. Returns each departed peer with why
    /// and how many sessions were dropped. A peer seen for the first time has none.
    pub fn departures<'a>(
        &mut self,
        core: &mut SyncCore,
        live: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Vec<(String, Departure, usize)> {
        let current: BTreeMap<String, u64> =
            live.into_iter().map(|(n, g)| (n.to_owned(), g)).collect();
        let mut out = Vec::new();
        for (name, generation) in &self.generations {
            let why = match current.get(name) {
                None => Departure::Gone,
                Some(now) if now != generation => Departure::Restarted,
                Some(_) => continue,
            };
            out.push((name.clone(), why, core.abandon(name)));
        }
        self.generations = current;
        out
    }

    /// One scheduling round at monotonic time `now_ms`, wall time `wall` (for the window):
    /// expires stale sessions, picks the due peers and starts a session with each on `core`.
    /// `peers` are the live peers; `own` is this node's fingerprint.
    #[allow(clippy::too_many_arguments)]
    pub fn tick<'a, F: PartialEq + 'a>(
        &mut self,
        core: &mut SyncCore,
        rt: &mut impl Runtime,
        src: &impl SyncSource,
        me: &str,
        own: &F,
        peers: impl Iterator<Item = PeerSight<'a, F>> + Clone,
        now_ms: u64,
        wall: DateTime<Utc>,
        rng: &mut impl Rng,
    ) -> TickReport {
        let mut report = TickReport {
            expired: core.expire(now_ms, millis(self.cfg.session_timeout)),
            ..TickReport::default()
        };
        let due = self.due(core, me, own, peers, now_ms, rng);
        let since = self.window_start_ms(wall);
        for name in due {
            if core.in_session_with(&name) {
                continue;
            }
            match core.start(rt, src, &name, since, now_ms) {
                Ok(_) => {
                    self.last_session.insert(name.clone(), now_ms);
                    report.started.push(name);
                }
                Err(e) => report.failed.push((name, e)),
            }
        }
        report
    }

    /// Starts a session with each of `peers` now (`labmesh sync now`), outside the schedule.
    pub fn start_now<'a>(
        &mut self,
        core: &mut SyncCore,
        rt: &mut impl Runtime,
        src: &impl SyncSource,
        peers: impl IntoIterator<Item = &'a str>,
        now_ms: u64,
        wall: DateTime<Utc>,
    ) -> TickReport {
        let since = self.window_start_ms(wall);
        let mut report = TickReport::default();
        for name in peers {
            if core.in_session_with(name) {
                continue;
            }
            match core.start(rt, src, name, since, now_ms) {
                Ok(_) => {
                    self.last_session.insert(name.to_owned(), now_ms);
                    report.started.push(name.to_owned());
                }
                Err(e) => report.failed.push((name.to_owned(), e)),
            }
        }
        report
    }

    /// The peers due for a session (see the module doc).
    fn due<'a, F: PartialEq + 'a>(
        &mut self,
        core: &SyncCore,
        me: &str,
        own: &F,
        peers: impl Iterator<Item = PeerSight<'a, F>> + Clone,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Vec<String> {
        self.ticks += 1;
        let tick = self.ticks;
        let delay = millis(self.cfg.differ_delay);
        let mut due = Vec::new();
        let mut live = 0;
        for p in peers.clone() {
            live += 1;
            let differs = p.fingerprint.is_some_and(|f| f != own);
            if !differs {
                // The common case, every fingerprint equal: no map work at all.
                if !self.differ_since.is_empty() {
                    self.differ_since.remove(p.name);
                }
                continue;
            }
            let since = match self.differ_since.get_mut(p.name) {
                Some(entry) => {
                    entry.1 = tick;
                    entry.0
                }
                None => {
                    self.differ_since.insert(p.name.to_owned(), (now_ms, tick));
                    now_ms
                }
            };
            // The smaller name starts; the other waits a while in case it is already doing
            // so, then starts too.
            let wait = if me < p.name { delay } else { delay * 3 };
            let recent = self
                .last_session
                .get(p.name)
                .is_some_and(|t| now_ms.saturating_sub(*t) < wait);
            if now_ms.saturating_sub(since) >= wait && !recent {
                due.push(p.name.to_owned());
            }
        }
        // Peers no longer live are forgotten: when they come back, they differ afresh.
        self.differ_since.retain(|_, (_, seen)| *seen == tick);
        if now_ms.saturating_sub(self.last_anti_entropy) >= millis(self.cfg.anti_entropy_interval)
            && live > 0
        {
            self.last_anti_entropy = now_ms;
            let pick = rng.random_range(0..live);
            if let Some(p) = peers.clone().nth(pick) {
                due.push(p.name.to_owned());
            }
        }
        let cap = self.cfg.max_sessions;
        let room = cap.saturating_sub(core.sessions_in_flight());
        if cap > 0 && due.len() > room {
            // A random start, or every node's first pick is the smallest name.
            let skip = rng.random_range(0..due.len());
            due.rotate_left(skip);
            due.truncate(room);
        }
        due
    }

    /// The peers to offer this node's world snapshot to now: those that hold the same events
    /// (equal fingerprints) but gossip another world hash, and whose name is larger (one side
    /// offers; the other answers if it knew more). A peer whose world matches resets its
    /// backoff.
    pub fn world_offers<'a, F: PartialEq + 'a, W: PartialEq + 'a>(
        &mut self,
        me: &str,
        own: &F,
        own_world: &W,
        peers: impl Iterator<Item = (PeerSight<'a, F>, Option<&'a W>)>,
        now_ms: u64,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (p, world) in peers {
            let Some(world) = world else {
                continue;
            };
            if world == own_world {
                self.world_sent.remove(p.name);
                continue;
            }
            let same_events = p.fingerprint.is_some_and(|f| f == own);
            if !same_events || me > p.name {
                continue;
            }
            let wait = match self.world_sent.get(p.name) {
                Some((at, wait)) if now_ms.saturating_sub(*at) < millis(*wait) => continue,
                Some((_, wait)) => (*wait * 2).min(self.cfg.world_resend_max),
                None => self.cfg.world_resend_min,
            };
            self.world_sent.insert(p.name.to_owned(), (now_ms, wait));
            out.push(p.name.to_owned());
        }
        out
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
