//! The per-check state machine, sans IO: it is fed each probe result with the time it was taken
//! and answers with the transition to record, if any. No clock, no socket, no file.
//!
//! ```text
//!            fail                     fail × (fall-1)
//!   ┌────┐ ───────▶ ┌─────────┐ ─────────────────────▶ ┌───────────┐
//!   │ ok │          │ failing │                        │ unhealthy │ ◀─┐ fail (reminder at
//!   └────┘ ◀─────── └─────────┘                        └───────────┘ ──┘ 2·fall, 4·fall, …
//!     ▲      pass                                   pass │      ▲        failures, or when the
//!     │                                                  ▼      │ fail   status changes)
//!     │            pass × (rise-1)                 ┌────────────┐
//!     └─────────────────────────────────────────── │ recovering │
//!                                                  └────────────┘
//! ```
//!
//! With `fall = 1` a first failure goes straight to unhealthy; with `rise = 1` a first success
//! straight back to ok. A warning (command exit 1, a ttl `warn`) counts as a failure, reported
//! with severity warning.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warning,
    Critical,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }
}

/// Where a check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Passing (or not failing long enough to count).
    Ok,
    /// Failing, fewer than `fall` times in a row: nothing recorded yet.
    Failing,
    /// Failed `fall` times in a row; recorded.
    Unhealthy,
    /// Unhealthy, and passing again, fewer than `rise` times in a row.
    Recovering,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Failing => "failing",
            State::Unhealthy => "unhealthy",
            State::Recovering => "recovering",
        }
    }
}

/// Why an unhealthy check records another failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// The status changed while unhealthy (warning ⇄ critical).
    StatusChanged,
    /// Still failing: a reminder after 2·fall, 4·fall, 8·fall, … failures in the episode.
    Reminder,
}

impl Repeat {
    pub fn as_str(self) -> &'static str {
        match self {
            Repeat::StatusChanged => "status_changed",
            Repeat::Reminder => "still_failing",
        }
    }
}

/// A change worth recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The `fall`-th failure in a row.
    Unhealthy { status: Status },
    /// Another failure while unhealthy that deserves a record.
    StillUnhealthy { status: Status, why: Repeat },
    /// The `rise`-th success in a row after being unhealthy.
    Recovered,
}

/// The unhealthy episode in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// When the first failure of the streak that made the check unhealthy was seen.
    pub since: DateTime<Utc>,
    /// Failed probes in this episode (including those before it became unhealthy).
    pub failures: u32,
    /// The status last recorded.
    pub reported: Status,
    /// `failures` count at which the next reminder is due.
    next_reminder: u32,
}

#[derive(Debug, Clone)]
pub struct Machine {
    fall: u32,
    rise: u32,
    state: State,
    consecutive_failures: u32,
    consecutive_successes: u32,
    /// Start of the current run of failures.
    streak_since: Option<DateTime<Utc>>,
    episode: Option<Episode>,
}

impl Machine {
    /// A check that starts `ok`. `fall` and `rise` below 1 count as 1.
    pub fn new(fall: u32, rise: u32) -> Machine {
        Machine {
            fall: fall.max(1),
            rise: rise.max(1),
            state: State::Ok,
            consecutive_failures: 0,
            consecutive_successes: 0,
            streak_since: None,
            episode: None,
        }
    }

    /// A check that was unhealthy when the agent last stopped (as its events tell): it stays
    /// unhealthy without a new record, and its recovery is recorded.
    pub fn restored_unhealthy(fall: u32, rise: u32, since: DateTime<Utc>, status: Status) -> Self {
        let mut m = Machine::new(fall, rise);
        m.state = State::Unhealthy;
        m.episode = Some(Episode {
            since,
            failures: m.fall,
            reported: status,
            next_reminder: m.fall.saturating_mul(2),
        });
        m
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn consecutive_successes(&self) -> u32 {
        self.consecutive_successes
    }

    /// The unhealthy episode, while there is one (states unhealthy and recovering).
    pub fn episode(&self) -> Option<&Episode> {
        self.episode.as_ref()
    }

    /// Feeds one probe result taken at `now`.
    pub fn on_result(&mut self, now: DateTime<Utc>, status: Status) -> Option<Transition> {
        if status == Status::Ok {
            self.on_success()
        } else {
            self.on_failure(now, status)
        }
    }

    fn on_success(&mut self) -> Option<Transition> {
        self.consecutive_failures = 0;
        self.streak_since = None;
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
        match self.state {
            State::Ok | State::Failing => {
                self.state = State::Ok;
                None
            }
            State::Unhealthy | State::Recovering => {
                if self.consecutive_successes >= self.rise {
                    self.state = State::Ok;
                    self.episode = None;
                    Some(Transition::Recovered)
                } else {
                    self.state = State::Recovering;
                    None
                }
            }
        }
    }

    fn on_failure(&mut self, now: DateTime<Utc>, status: Status) -> Option<Transition> {
        self.consecutive_successes = 0;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let since = *self.streak_since.get_or_insert(now);
        match self.state {
            State::Ok | State::Failing => {
                if self.consecutive_failures < self.fall {
                    self.state = State::Failing;
                    return None;
                }
                self.state = State::Unhealthy;
                self.episode = Some(Episode {
                    since,
                    failures: self.consecutive_failures,
                    reported: status,
                    next_reminder: self.fall.saturating_mul(2),
                });
                Some(Transition::Unhealthy { status })
            }
            State::Unhealthy | State::Recovering => {
                self.state = State::Unhealthy;
                let episode = self.episode.get_or_insert(Episode {
                    since,
                    failures: 0,
                    reported: status,
                    next_reminder: self.fall.saturating_mul(2),
                });
                episode.failures = episode.failures.saturating_add(1);
                let why = if status != episode.reported {
                    Repeat::StatusChanged
                } else if episode.failures >= episode.next_reminder {
                    Repeat::Reminder
                } else {
                    return None;
                };
                episode.reported = status;
                while episode.next_reminder <= episode.failures {
                    episode.next_reminder = episode.next_reminder.saturating_mul(2);
                    if episode.next_reminder == u32::MAX {
                        break;
                    }
                }
                Some(Transition::StillUnhealthy { status, why })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Critical, Ok as Pass, Warning};

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    /// Feeds statuses one second apart; returns the transitions with the probe index.
    fn feed(m: &mut Machine, statuses: &[Status]) -> Vec<(usize, Transition)> {
        statuses
            .iter()
            .enumerate()
            .filter_map(|(i, s)| m.on_result(t(i as i64), *s).map(|tr| (i, tr)))
            .collect()
    }

    #[test]
    fn failures_below_fall_record_nothing() {
        let mut m = Machine::new(3, 2);
        assert!(
            feed(
                &mut m,
                &[Critical, Critical, Pass, Critical, Critical, Pass]
            )
            .is_empty()
        );
        assert_eq!(m.state(), State::Ok);
        m.on_result(t(10), Critical);
        assert_eq!(m.state(), State::Failing);
        assert_eq!(m.consecutive_failures(), 1);
    }

    #[test]
    fn fall_then_rise() {
        let mut m = Machine::new(3, 2);
        let got = feed(&mut m, &[Critical, Critical, Critical, Pass, Pass, Pass]);
        assert_eq!(
            got,
            vec![
                (2, Transition::Unhealthy { status: Critical }),
                (4, Transition::Recovered)
            ]
        );
        assert_eq!(m.state(), State::Ok);
        assert!(m.episode().is_none());
    }

    #[test]
    fn episode_starts_at_the_first_failure_of_the_streak() {
        let mut m = Machine::new(3, 2);
        feed(&mut m, &[Pass, Critical, Critical, Critical]);
        let ep = m.episode().unwrap();
        assert_eq!(ep.since, t(1));
        assert_eq!(ep.failures, 3);
        assert_eq!(m.state(), State::Unhealthy);
    }

    #[test]
    fn a_failure_while_recovering_goes_back_to_unhealthy_silently() {
        let mut m = Machine::new(2, 3);
        let got = feed(
            &mut m,
            &[Critical, Critical, Pass, Pass, Critical, Pass, Pass, Pass],
        );
        assert_eq!(
            got,
            vec![
                (1, Transition::Unhealthy { status: Critical }),
                (7, Transition::Recovered)
            ]
        );
        // In between, the states went unhealthy → recovering → unhealthy → recovering.
    }

    #[test]
    fn states_in_order() {
        let mut m = Machine::new(2, 2);
        let mut states = Vec::new();
        for (i, s) in [Critical, Critical, Pass, Critical, Pass, Pass]
            .into_iter()
            .enumerate()
        {
            m.on_result(t(i as i64), s);
            states.push(m.state());
        }
        use State::*;
        assert_eq!(
            states,
            [Failing, Unhealthy, Recovering, Unhealthy, Recovering, Ok]
        );
    }

    #[test]
    fn fall_and_rise_of_one_switch_at_once() {
        let mut m = Machine::new(1, 1);
        let got = feed(&mut m, &[Warning, Pass]);
        assert_eq!(
            got,
            vec![
                (0, Transition::Unhealthy { status: Warning }),
                (1, Transition::Recovered)
            ]
        );
        let mut zero = Machine::new(0, 0);
        assert_eq!(
            zero.on_result(t(0), Critical),
            Some(Transition::Unhealthy { status: Critical })
        );
    }

    #[test]
    fn reminders_back_off_exponentially() {
        let mut m = Machine::new(3, 2);
        let got = feed(&mut m, &[Critical; 50]);
        let at: Vec<usize> = got.iter().map(|(i, _)| i + 1).collect();
        // Unhealthy on the 3rd failure, reminders on the 6th, 12th, 24th and 48th.
        assert_eq!(at, [3, 6, 12, 24, 48]);
        assert!(got[1..].iter().all(|(_, tr)| *tr
            == Transition::StillUnhealthy {
                status: Critical,
                why: Repeat::Reminder
            }));
    }

    #[test]
    fn a_status_change_while_unhealthy_is_recorded() {
        let mut m = Machine::new(2, 2);
        let got = feed(&mut m, &[Warning, Warning, Warning, Critical, Critical]);
        assert_eq!(
            got,
            vec![
                (1, Transition::Unhealthy { status: Warning }),
                (
                    3,
                    Transition::StillUnhealthy {
                        status: Critical,
                        why: Repeat::StatusChanged
                    }
                ),
                // 2·fall = 4 failures: the reminder was due at the same time as the change,
                // which already recorded it; the 5th is quiet.
            ]
        );
        assert_eq!(m.episode().unwrap().reported, Critical);
    }

    #[test]
    fn restored_unhealthy_records_only_the_recovery() {
        let mut m = Machine::restored_unhealthy(3, 2, t(-100), Critical);
        assert_eq!(m.state(), State::Unhealthy);
        assert!(feed(&mut m, &[Critical, Critical]).is_empty());
        let got = feed(&mut m, &[Pass, Pass]);
        assert_eq!(got, vec![(1, Transition::Recovered)]);
    }

    #[test]
    fn same_inputs_same_outputs() {
        let inputs = [
            Critical, Pass, Critical, Critical, Warning, Critical, Pass, Pass, Critical,
        ];
        let run = || {
            let mut m = Machine::new(2, 2);
            feed(&mut m, &inputs)
        };
        assert_eq!(run(), run());
    }
}
