//! Watchdogs: rules about what did *not* happen, which need memory across inputs.
//!
//! - **node offline**: a non-transient member that is not live (its `for` rides on the alert
//!   state machine's pending). Nothing is said about anyone while this node is an isolated
//!   laptop: it cannot tell an outage from its own train ride.
//! - **expect**: a periodic job (`backup.sh every 24h grace 1h`) must leave an event with its
//!   source in every window. The clock starts at the last such event (the replayed log gives
//!   it after a restart) or, before any, at start-up.
//! - **disk full**: a least-squares line through the last days of a file system's samples,
//!   "/ on vm1 will be full in 6 days". Samples are kept at most one per 10 minutes, so a week
//!   is about a thousand points per disk.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sync::{Event, Severity};

use crate::election::Member;
use crate::rules::{Condition, DiskFull, Observation, Rule, RuleKind, render};
use crate::summary::NodeSummary;
use crate::util::{Labels, after, chrono_dur, glob_match, human_bytes, human_duration};

/// Closest spacing of kept disk samples.
const SAMPLE_SPACING: Duration = Duration::from_secs(600);

/// One kept disk sample: (time, used bytes, total bytes).
type Sample = (DateTime<Utc>, u64, u64);

/// The watchdogs' memory.
#[derive(Debug, Clone)]
pub struct Watchdogs {
    started_at: DateTime<Utc>,
    /// Per expect rule, the time of the last event that satisfied it.
    expect_last: BTreeMap<String, DateTime<Utc>>,
    disks: BTreeMap<(String, String), VecDeque<Sample>>,
    /// Nodes this watchdog has reported offline (to clear them if they leave the view).
    offline: BTreeSet<String>,
}

/// A straight-line projection of one disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Projection {
    /// Growth in bytes per second (negative when shrinking).
    pub slope: f64,
    /// Seconds from the last sample until full, when growing.
    pub full_in: Option<f64>,
    pub span: Duration,
}

/// Least squares over (seconds, bytes). `None` with fewer than 3 samples or no time spread.
pub fn project(samples: &[Sample]) -> Option<Projection> {
    let (first, last) = (samples.first()?, samples.last()?);
    if samples.len() < 3 {
        return None;
    }
    let xs: Vec<f64> = samples
        .iter()
        .map(|(t, _, _)| (*t - first.0).num_milliseconds() as f64 / 1000.0)
        .collect();
    let n = xs.len() as f64;
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let (mut cov, mut var) = (0.0, 0.0);
    for (x, s) in xs.iter().zip(samples) {
        cov += (x - mean_x) * (s.1 as f64 - mean_y);
        var += (x - mean_x) * (x - mean_x);
    }
    if var <= 0.0 {
        return None;
    }
    let slope = cov / var;
    let free = last.2.saturating_sub(last.1) as f64;
    Some(Projection {
        slope,
        full_in: (slope > 0.0).then(|| free / slope),
        span: (last.0 - first.0).to_std().unwrap_or_default(),
    })
}

impl Watchdogs {
    pub fn new(now: DateTime<Utc>) -> Self {
        Watchdogs {
            started_at: now,
            expect_last: BTreeMap::new(),
            disks: BTreeMap::new(),
            offline: BTreeSet::new(),
        }
    }

    /// Keeps disk samples for projections, at most one per 10 minutes, within `keep`.
    pub fn record_summary(&mut self, s: &NodeSummary, keep: Duration) {
        for d in &s.disks {
            let h = self
                .disks
                .entry((s.node.clone(), d.mount.clone()))
                .or_default();
            if h.back()
                .is_some_and(|(t, _, _)| s.at < after(*t, SAMPLE_SPACING))
            {
                continue;
            }
            h.push_back((s.at, d.used_bytes, d.total_bytes));
            while h.front().is_some_and(|(t, _, _)| after(*t, keep) < s.at) {
                h.pop_front();
            }
        }
    }

    /// Starts an expect rule's window at `since` (or later, if its job reported after that).
    pub fn seed_expect(&mut self, rule: &str, since: DateTime<Utc>) {
        let last = self.expect_last.entry(rule.to_owned()).or_insert(since);
        *last = (*last).max(since);
    }

    /// An expect rule's view of one event: a matching event satisfies the window (clear).
    pub fn on_event(&mut self, rule: &Rule, e: &Event) -> Option<Observation> {
        let RuleKind::Expect(x) = &rule.kind else {
            return None;
        };
        if !glob_match(&x.source, &e.source)
            || (!x.types.is_empty() && !x.types.contains(&e.event_type))
        {
            return None;
        }
        let last = self
            .expect_last
            .entry(rule.name.clone())
            .or_insert(e.timestamp);
        *last = (*last).max(e.timestamp);
        let mut labels = rule.base_labels();
        labels.insert("source".into(), x.source.clone());
        labels.insert("subject".into(), x.source.clone());
        Some(Observation {
            rule: rule.name.clone(),
            subject: x.source.clone(),
            labels,
            condition: Condition::Clear,
            summary: format!("{} reported", x.source),
            at: e.timestamp,
            for_: Duration::ZERO,
            start_key: None,
        })
    }

    fn expect_deadline(&self, rule: &Rule) -> Option<DateTime<Utc>> {
        let RuleKind::Expect(x) = &rule.kind else {
            return None;
        };
        let since = self
            .expect_last
            .get(&rule.name)
            .copied()
            .unwrap_or(self.started_at);
        Some(after(after(since, x.every), x.grace))
    }

    /// The next expect deadline among `rules` after `now` (one already past has raised).
    pub fn next_deadline<'a>(
        &self,
        rules: impl Iterator<Item = &'a Rule>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        rules
            .filter_map(|r| self.expect_deadline(r))
            .filter(|d| *d > now)
            .min()
    }

    /// Watchdog observations at `now` for the given membership view.
    pub fn evaluate<'a>(
        &mut self,
        rules: impl Iterator<Item = &'a Rule>,
        members: &[Member],
        me: &str,
        isolated: bool,
        now: DateTime<Utc>,
    ) -> Vec<Observation> {
        let mut out = Vec::new();
        for rule in rules {
            match &rule.kind {
                RuleKind::NodeOffline { for_ } if !isolated => {
                    self.offline_obs(rule, *for_, members, me, now, &mut out);
                }
                RuleKind::Expect(x) => {
                    let Some(deadline) = self.expect_deadline(rule) else {
                        continue;
                    };
                    if now < deadline {
                        continue;
                    }
                    let since = after(deadline, Duration::ZERO) - chrono_dur(x.every + x.grace);
                    let mut labels = rule.base_labels();
                    labels.insert("source".into(), x.source.clone());
                    labels.insert("subject".into(), x.source.clone());
                    let default = format!(
                        "{} did not report in its {} window (last: {})",
                        x.source,
                        human_duration(x.every),
                        if self.expect_last.contains_key(&rule.name) {
                            sync::event::format_timestamp(since)
                        } else {
                            "never seen".to_owned()
                        }
                    );
                    out.push(Observation {
                        rule: rule.name.clone(),
                        subject: x.source.clone(),
                        summary: rule
                            .summary
                            .as_deref()
                            .map_or(default, |t| render(t, &labels, "")),
                        labels,
                        condition: Condition::Raise(rule.severity.unwrap_or(Severity::Warning)),
                        at: deadline,
                        for_: Duration::ZERO,
                        start_key: None,
                    });
                }
                RuleKind::DiskFull(d) => self.disk_obs(rule, d, &mut out),
                _ => {}
            }
        }
        out
    }

    fn offline_obs(
        &mut self,
        rule: &Rule,
        for_: Duration,
        members: &[Member],
        me: &str,
        now: DateTime<Utc>,
        out: &mut Vec<Observation>,
    ) {
        let severity = rule.severity.unwrap_or(Severity::Critical);
        let mut present = BTreeSet::new();
        for m in members.iter().filter(|m| m.name != me && !m.transient) {
            present.insert(m.name.clone());
            let cond = if m.live {
                self.offline.remove(&m.name);
                Condition::Clear
            } else {
                self.offline.insert(m.name.clone());
                Condition::Raise(severity)
            };
            out.push(self.offline_one(rule, &m.name, cond, for_, now));
        }
        // A node that left the view entirely (removed, or left gracefully) is not offline.
        let gone: Vec<String> = self.offline.difference(&present).cloned().collect();
        for node in gone {
            self.offline.remove(&node);
            out.push(self.offline_one(rule, &node, Condition::Clear, for_, now));
        }
    }

    fn offline_one(
        &self,
        rule: &Rule,
        node: &str,
        condition: Condition,
        for_: Duration,
        now: DateTime<Utc>,
    ) -> Observation {
        let mut labels: Labels = rule.base_labels();
        labels.insert("node".into(), node.to_owned());
        labels.insert("subject".into(), node.to_owned());
        Observation {
            rule: rule.name.clone(),
            subject: node.to_owned(),
            summary: render(
                rule.summary.as_deref().unwrap_or("{node} is offline"),
                &labels,
                "",
            ),
            labels,
            condition,
            at: now,
            for_,
            start_key: None,
        }
    }

    fn disk_obs(&self, rule: &Rule, d: &DiskFull, out: &mut Vec<Observation>) {
        for ((node, mount), h) in &self.disks {
            let Some(last) = h.back() else { continue };
            let from = last.0 - chrono_dur(d.window);
            let samples: Vec<Sample> = h.iter().filter(|s| s.0 >= from).copied().collect();
            let Some(p) = project(&samples) else { continue };
            if p.span < d.min_history {
                continue;
            }
            let condition = match p.full_in {
                Some(secs) if secs < d.within.as_secs_f64() => {
                    Condition::Raise(rule.severity.unwrap_or(Severity::Warning))
                }
                Some(secs) if secs <= d.clear_within.as_secs_f64() => Condition::Hold,
                _ => Condition::Clear,
            };
            let mut labels = rule.base_labels();
            labels.insert("node".into(), node.clone());
            labels.insert("mount".into(), mount.clone());
            let subject = format!("{node}:{mount}");
            labels.insert("subject".into(), subject.clone());
            let when = p
                .full_in
                .map(|s| human_days(Duration::from_secs_f64(s.min(1e12))))
                .unwrap_or_else(|| "never".into());
            let default = format!(
                "{mount} on {node} will be full in {when} (growing {}/day)",
                human_bytes(p.slope * 86400.0)
            );
            out.push(Observation {
                rule: rule.name.clone(),
                subject,
                summary: rule
                    .summary
                    .as_deref()
                    .map_or(default, |t| render(t, &labels, &when)),
                labels,
                condition,
                at: last.0,
                for_: Duration::ZERO,
                start_key: None,
            });
        }
    }
}

/// `6 days`, `1 day`, `20 hours`.
fn human_days(d: Duration) -> String {
    let h = d.as_secs() / 3600;
    match h {
        0..=47 => format!("{h} hours"),
        _ if h / 24 == 1 => "1 day".into(),
        _ => format!("{} days", h / 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;
    use crate::summary::DiskUsage;
    use chrono::TimeZone;
    use sync::NewEvent;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
    }

    const GIB: u64 = 1 << 30;
    const DAY: i64 = 86400;

    #[test]
    fn a_disk_growing_2_gib_a_day_with_12_left_is_full_in_6_days() {
        let set = RuleSet::defaults().unwrap();
        let mut w = Watchdogs::new(t(0));
        for hour in 0..=(3 * 24) {
            let mut s = NodeSummary::new("vm1", t(hour * 3600));
            let used = 50 * GIB + (hour as u64) * 2 * GIB / 24;
            s.disks = vec![DiskUsage {
                mount: "/".into(),
                used_bytes: used,
                total_bytes: 68 * GIB,
            }];
            w.record_summary(&s, Duration::from_secs(7 * 86400));
        }
        let obs = w.evaluate(set.rules.iter(), &[], "vm1", false, t(3 * DAY));
        let o = obs.iter().find(|o| o.rule == "disk_full_soon").unwrap();
        assert_eq!(o.condition, Condition::Raise(Severity::Warning));
        assert_eq!(
            o.summary,
            "/ on vm1 will be full in 6 days (growing 2.0 GiB/day)"
        );
        assert_eq!(o.subject, "vm1:/");
    }

    #[test]
    fn flat_or_young_disks_are_not_projected() {
        let set = RuleSet::defaults().unwrap();
        let mut w = Watchdogs::new(t(0));
        for hour in 0..5 {
            let mut s = NodeSummary::new("vm1", t(hour * 3600));
            s.disks = vec![DiskUsage {
                mount: "/".into(),
                used_bytes: 10 * GIB + hour as u64 * GIB,
                total_bytes: 20 * GIB,
            }];
            w.record_summary(&s, Duration::from_secs(7 * 86400));
        }
        assert!(
            w.evaluate(set.rules.iter(), &[], "vm1", false, t(DAY))
                .is_empty(),
            "5 hours of history < 1 day"
        );
        let flat = [(t(0), 5, 10), (t(DAY), 5, 10), (t(2 * DAY), 5, 10)];
        assert_eq!(project(&flat).unwrap().full_in, None);
    }

    #[test]
    fn a_missed_backup_raises_and_its_report_clears() {
        let set = RuleSet::with_overrides(
            crate::rules::parse_rules_toml("[[rule]]\nname=\"backup\"\nkind=\"expect\"\nexpect=\"backup.sh every 24h grace 1h\"\n").unwrap(),
        )
        .unwrap();
        let rule = set.get("backup").unwrap();
        let mut w = Watchdogs::new(t(0));
        assert_eq!(w.next_deadline(set.rules.iter(), t(0)), Some(t(25 * 3600)));
        let ev = NewEvent::new("backup_completed", Severity::Info, "backup.sh")
            .into_event("nas", t(3600))
            .unwrap();
        assert_eq!(w.on_event(rule, &ev).unwrap().condition, Condition::Clear);
        assert!(
            w.evaluate(set.rules.iter(), &[], "vm1", false, t(25 * 3600))
                .iter()
                .all(|o| o.rule != "backup")
        );
        let late = w.evaluate(set.rules.iter(), &[], "vm1", false, t(26 * 3600 + 1));
        let o = late.iter().find(|o| o.rule == "backup").unwrap();
        assert_eq!(o.condition, Condition::Raise(Severity::Warning));
        assert!(
            o.summary
                .starts_with("backup.sh did not report in its 24h window (last: "),
            "{}",
            o.summary
        );
    }

    #[test]
    fn offline_only_for_non_transient_and_never_when_isolated() {
        let set = RuleSet::defaults().unwrap();
        let mut w = Watchdogs::new(t(0));
        let members = vec![
            Member {
                name: "vm2".into(),
                live: false,
                transient: false,
                alerter_priority: 0,
            },
            Member {
                name: "laptop".into(),
                live: false,
                transient: true,
                alerter_priority: 0,
            },
        ];
        let obs = w.evaluate(set.rules.iter(), &members, "vm1", false, t(0));
        let off: Vec<_> = obs.iter().filter(|o| o.rule == "node_offline").collect();
        assert_eq!(off.len(), 1);
        assert_eq!(
            (off[0].subject.as_str(), off[0].condition),
            ("vm2", Condition::Raise(Severity::Critical))
        );
        assert!(
            w.evaluate(set.rules.iter(), &members, "laptop", true, t(1))
                .iter()
                .all(|o| o.rule != "node_offline")
        );
        // vm2 leaves the view: its offline alert clears.
        let obs = w.evaluate(set.rules.iter(), &[], "vm1", false, t(2));
        assert!(obs.iter().any(|o| o.rule == "node_offline"
            && o.subject == "vm2"
            && o.condition == Condition::Clear));
    }
}
