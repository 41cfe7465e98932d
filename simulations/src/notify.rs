//! What the discrete simulator does with an alerting engine's requests: events written (the
//! attempt record before the send it covers), notifications handed to the stand-in receiver
//! (with its outages and `crash_notifier` traps), timers queued; and what is still owed.

use alerting::AccumulatingRuntime;
use sync::NewEvent;

use crate::report::{NoteKey, Sent};
use crate::run::{Ev, Sim};
use crate::scenario::CrashMoment;
use crate::sim::Ms;

impl Sim {
    /// Something was attempted that has neither reached the receiver nor been given up: the
    /// run is not over while a retry may still be pending.
    pub(crate) fn owes_notifications(&self) -> bool {
        let received: std::collections::BTreeSet<&NoteKey> =
            self.sent.iter().map(|s| &s.key).collect();
        let arrived = |k: &NoteKey| received.contains(k);
        self.attempted.keys().any(|k| self.owed(k, &arrived))
    }

    /// Whether an attempted notification is still owed to its receiver, given the keys
    /// that reached it: not when it arrived, nor when it was given up, nor a firing whose
    /// episode's resolution arrived (it tells the same story, later; a new alerter that
    /// takes over a failed firing of an episode that has since ended sends just that).
    pub fn owed(&self, k: &NoteKey, arrived: &impl Fn(&NoteKey) -> bool) -> bool {
        if arrived(k) || self.given_up.contains(&(k.0.clone(), k.1.clone())) {
            return false;
        }
        let resolved = (k.0.clone(), k.1.clone(), "resolved".to_owned());
        !(k.2.starts_with("firing") && arrived(&resolved))
    }

    /// Performs what an engine asked: events written (the attempt record before the send it
    /// covers, as the engine's contract requires), notifications sent, timers armed.
    pub(crate) fn alert_out(&mut self, i: usize, out: AccumulatingRuntime) {
        let epoch = self.nodes[i].epoch;
        for (timer, after) in out.timers {
            let at = self.now + (after.as_millis() as Ms).max(1);
            self.q.push(
                at,
                Ev::Timer {
                    node: i,
                    epoch,
                    timer,
                },
            );
        }
        for ne in out.events {
            self.note_ledger_event(&ne);
            self.write(i, ne);
        }
        for note in out.notifications {
            if self.notify(i, epoch, note) {
                // Crashed mid-notification: nothing after this reaches the world.
                break;
            }
        }
    }

    /// Remembers give-ups: an item given up after the retry budget is not owed any more.
    pub(crate) fn note_ledger_event(&mut self, ne: &NewEvent) {
        let p = &ne.payload;
        let final_ = p.get("final").and_then(serde_json::Value::as_bool) == Some(true);
        if ne.event_type != alerting::ledger::NOTIFICATION_FAILED || !final_ {
            return;
        }
        let receiver = p.get("receiver").and_then(serde_json::Value::as_str);
        let items = p.get("items").and_then(serde_json::Value::as_array);
        if let (Some(receiver), Some(items)) = (receiver, items) {
            for item in items {
                if let Some(ep) = item.get("episode").and_then(serde_json::Value::as_str) {
                    self.given_up.insert((ep.to_owned(), receiver.to_owned()));
                }
            }
        }
    }

    /// Performs one send: the receiver takes it unless it is in an outage; the outcome comes
    /// back `notify_ms` later. Returns true when a `crash_notifier` fault crashed the sender.
    pub(crate) fn notify(&mut self, i: usize, epoch: u64, note: alerting::Notification) -> bool {
        let trigger = self.crash_trigger.take();
        let moment = trigger.map(|t| t.moment);
        let receiver_up = !self
            .s
            .receiver_outages
            .iter()
            .any(|w| w.contains_ms(self.now));
        let reaches = receiver_up && moment != Some(CrashMoment::BeforeSend);
        if !receiver_up {
            self.refused += 1;
        }
        for a in note.message.alerts.iter().filter(|a| a.new) {
            let stage = match a.status {
                alerting::Status::Resolved => "resolved".to_owned(),
                _ => format!("firing:{}", a.severity.as_str()),
            };
            let key = (a.episode.clone(), note.receiver.clone(), stage);
            self.attempted.insert(key.clone(), i);
            if reaches {
                self.awaiting_outcome
                    .entry((i, note.id.clone()))
                    .or_default()
                    .push(self.sent.len());
                self.sent.push(Sent {
                    at: self.now,
                    node: i,
                    key,
                    split: self.net.is_split(),
                    orphan: false,
                });
            }
        }
        let done_at = self.now + self.s.notify_ms.max(1);
        if moment != Some(CrashMoment::BeforeSend) && moment != Some(CrashMoment::BeforeOutcome) {
            self.q.push(
                done_at,
                Ev::NotifyDone {
                    node: i,
                    epoch,
                    id: note.id,
                    ok: receiver_up,
                },
            );
        }
        let Some(t) = trigger else {
            return false;
        };
        // The crash lands after what this step already wrote and pushed (the attempt record);
        // after the outcome it lands once `NotifyDone` has recorded it.
        let crash_at = match t.moment {
            CrashMoment::AfterOutcome => done_at,
            _ => self.now,
        };
        self.q.push(crash_at, Ev::Crash(i));
        if let Some(down) = t.down_s {
            self.q.push(crash_at + down * 1000, Ev::Restart(i));
        }
        t.moment != CrashMoment::AfterOutcome
    }
}
