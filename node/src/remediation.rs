//! The unhealthy-container watchdog's decisions, without I/O: which containers to restart now,
//! given the latest Docker sample and the restarts already made. The driver
//! (`drivers::remediation`) feeds it samples and the clock, restarts what it says, and records
//! the events; tests feed it directly.
//!
//! A container is restarted only when all of these hold:
//! - it opted in: label `labmesh.restart=on-unhealthy`, or its name in `[remediation] containers`;
//! - it is running (a container stopped on purpose, paused or restarting is never touched) and
//!   has a health check that the engine reports `unhealthy` with at least `unhealthy_streak`
//!   consecutive failures;
//! - its last restart by this watchdog is at least `cooldown` ago, and fewer than
//!   `max_per_hour` restarts happened in the last hour (a container that a restart does not
//!   cure is not restarted in a loop: it stays unhealthy and its alert says so).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::probes::Container;

/// `[remediation]`: each field's doc says what it trades.
#[derive(Debug, Clone, PartialEq)]
pub struct RemediationSettings {
    /// Off turns the watchdog off entirely (labels are then ignored). Default on: nothing is
    /// restarted without an opt-in anyway.
    pub enabled: bool,
    /// Consecutive failed health checks before a restart. Lower cures sooner and restarts on a
    /// passing hiccup; higher waits longer on a service that is really down. Default 3.
    pub unhealthy_streak: i64,
    /// Least time between two restarts of one container. Shorter retries sooner; longer gives a
    /// slow service time to warm up (and its health check time to pass). Default 10 min.
    pub cooldown: Duration,
    /// Most restarts of one container in any hour. Default 3.
    pub max_per_hour: u32,
    /// Containers opted in by name, besides those with the label.
    pub containers: Vec<String>,
}

impl Default for RemediationSettings {
    fn default() -> Self {
        RemediationSettings {
            enabled: true,
            unhealthy_streak: 3,
            cooldown: Duration::from_secs(600),
            max_per_hour: 3,
            containers: Vec::new(),
        }
    }
}

/// A restart to make now.
#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    pub container: String,
    pub image: Option<String>,
    pub streak: i64,
    pub health_log: Vec<String>,
    /// `label` or `config`: how it opted in.
    pub opted_in_by: &'static str,
}

/// Why an unhealthy, opted-in container was left alone this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Restarted less than the cooldown ago; may restart at `until`.
    Cooldown { until: DateTime<Utc> },
    /// The hourly cap is used up; the oldest restart of the hour ages out at `until`.
    HourlyCap { until: DateTime<Utc> },
}

/// The decisions of one step.
#[derive(Debug, Default, PartialEq)]
pub struct Decisions {
    pub restart: Vec<Restart>,
    /// Opted-in unhealthy containers held back, with why (logged once per hold by the driver).
    pub held: Vec<(String, Held)>,
}

/// Restarts made per container, newest last, kept for an hour.
#[derive(Debug, Default)]
pub struct Watchdog {
    settings: RemediationSettings,
    restarts: BTreeMap<String, VecDeque<DateTime<Utc>>>,
}

const HOUR: chrono::Duration = chrono::Duration::hours(1);

impl Watchdog {
    pub fn new(settings: RemediationSettings) -> Watchdog {
        Watchdog {
            settings,
            restarts: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &RemediationSettings {
        &self.settings
    }

    /// Remembers a restart (made now, or read back from the events at start, so that a
    /// restarted agent keeps its cooldowns and caps).
    pub fn record(&mut self, container: &str, at: DateTime<Utc>) {
        let q = self.restarts.entry(container.to_owned()).or_default();
        q.push_back(at);
        q.make_contiguous().sort();
    }

    /// The last restart of `container` this watchdog made or learned of.
    pub fn last_restart(&self, container: &str) -> Option<DateTime<Utc>> {
        self.restarts.get(container).and_then(|q| q.back().copied())
    }

    fn opted_in(&self, c: &Container) -> Option<&'static str> {
        if c.restart_on_unhealthy {
            Some("label")
        } else if self.settings.containers.iter().any(|n| n == &c.name) {
            Some("config")
        } else {
            None
        }
    }

    /// What to do with this sample at `now`. Restarts it returns are recorded as made.
    pub fn step(&mut self, now: DateTime<Utc>, containers: &[Container]) -> Decisions {
        let mut out = Decisions::default();
        for q in self.restarts.values_mut() {
            while q.front().is_some_and(|t| now - *t >= HOUR) {
                q.pop_front();
            }
        }
        self.restarts.retain(|_, q| !q.is_empty());
        if !self.settings.enabled {
            return out;
        }
        for c in containers {
            let Some(by) = self.opted_in(c) else { continue };
            let streak = c.failing_streak.unwrap_or(0);
            if c.state != "running"
                || c.health.as_deref() != Some("unhealthy")
                || streak < self.settings.unhealthy_streak
            {
                continue;
            }
            if let Some(held) = self.hold(&c.name, now) {
                out.held.push((c.name.clone(), held));
                continue;
            }
            self.record(&c.name, now);
            out.restart.push(Restart {
                container: c.name.clone(),
                image: c.image.clone(),
                streak,
                health_log: c.health_log.clone(),
                opted_in_by: by,
            });
        }
        out
    }

    fn hold(&self, container: &str, now: DateTime<Utc>) -> Option<Held> {
        let q = self.restarts.get(container)?;
        let cooldown = chrono::Duration::from_std(self.settings.cooldown).unwrap_or(HOUR);
        if let Some(last) = q.back()
            && now - *last < cooldown
        {
            return Some(Held::Cooldown {
                until: *last + cooldown,
            });
        }
        if q.len() >= self.settings.max_per_hour as usize
            && let Some(oldest) = q.front()
        {
            return Some(Held::HourlyCap {
                until: *oldest + HOUR,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, state: &str, health: Option<&str>, streak: i64) -> Container {
        Container {
            name: name.into(),
            image: Some("busybox".into()),
            state: state.into(),
            health: health.map(Into::into),
            failing_streak: Some(streak),
            restart_count: Some(0),
            started_at: None,
            uptime_s: None,
            exit_code: None,
            oom_killed: None,
            error: None,
            restart_on_unhealthy: true,
            health_log: vec!["exit 1: connection refused".into()],
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn settings() -> RemediationSettings {
        RemediationSettings {
            cooldown: Duration::from_secs(600),
            max_per_hour: 3,
            ..RemediationSettings::default()
        }
    }

    #[test]
    fn an_opted_in_container_is_restarted_after_the_streak_only() {
        let mut w = Watchdog::new(settings());
        let c2 = container("web", "running", Some("unhealthy"), 2);
        assert!(w.step(t(0), &[c2]).restart.is_empty());
        let c3 = container("web", "running", Some("unhealthy"), 3);
        let d = w.step(t(10), &[c3]);
        assert_eq!(d.restart.len(), 1);
        assert_eq!(d.restart[0].streak, 3);
        assert_eq!(d.restart[0].opted_in_by, "label");
        assert_eq!(d.restart[0].health_log, ["exit 1: connection refused"]);
    }

    #[test]
    fn stopped_paused_healthy_unchecked_and_not_opted_in_containers_are_left_alone() {
        let mut w = Watchdog::new(settings());
        let mut twin = container("twin", "running", Some("unhealthy"), 9);
        twin.restart_on_unhealthy = false;
        let mut unchecked = container("plain", "running", None, 9);
        unchecked.failing_streak = None;
        let d = w.step(
            t(0),
            &[
                twin,
                unchecked,
                container("stopped", "exited", Some("unhealthy"), 9),
                container("paused", "paused", Some("unhealthy"), 9),
                container("ok", "running", Some("healthy"), 0),
                container("warming", "running", Some("starting"), 9),
            ],
        );
        assert_eq!(d, Decisions::default());
    }

    #[test]
    fn a_config_list_opts_in_by_name() {
        let mut w = Watchdog::new(RemediationSettings {
            containers: vec!["db".into()],
            ..settings()
        });
        let mut db = container("db", "running", Some("unhealthy"), 5);
        db.restart_on_unhealthy = false;
        let d = w.step(t(0), &[db]);
        assert_eq!(d.restart[0].opted_in_by, "config");
    }

    #[test]
    fn the_cooldown_then_the_hourly_cap_hold_restarts_back() {
        let mut w = Watchdog::new(RemediationSettings {
            cooldown: Duration::from_secs(60),
            max_per_hour: 2,
            ..settings()
        });
        let sick = [container("web", "running", Some("unhealthy"), 3)];
        assert_eq!(w.step(t(0), &sick).restart.len(), 1);
        let d = w.step(t(30), &sick);
        assert!(d.restart.is_empty());
        assert_eq!(d.held, [("web".into(), Held::Cooldown { until: t(60) })]);
        assert_eq!(w.step(t(60), &sick).restart.len(), 1);
        // Two in the hour: the cap holds it until the first ages out.
        let d = w.step(t(200), &sick);
        assert_eq!(d.held, [("web".into(), Held::HourlyCap { until: t(3600) })]);
        assert!(w.step(t(3599), &sick).restart.is_empty());
        assert_eq!(w.step(t(3600), &sick).restart.len(), 1);
    }

    #[test]
    fn restarts_read_back_at_start_keep_the_cooldown() {
        let mut w = Watchdog::new(settings());
        w.record("web", t(0));
        let sick = [container("web", "running", Some("unhealthy"), 3)];
        assert!(w.step(t(100), &sick).restart.is_empty());
        assert_eq!(w.step(t(600), &sick).restart.len(), 1);
        assert_eq!(w.last_restart("web"), Some(t(600)));
    }

    #[test]
    fn disabled_restarts_nothing() {
        let mut w = Watchdog::new(RemediationSettings {
            enabled: false,
            ..settings()
        });
        let sick = [container("web", "running", Some("unhealthy"), 30)];
        assert_eq!(w.step(t(0), &sick), Decisions::default());
    }
}
