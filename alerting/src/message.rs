//! The content of one notification, independent of where it goes. [`crate::notify`] turns it
//! into a Slack, Telegram, ntfy, ... request.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sync::Severity;

use crate::state::{Alert, Status};
use crate::util::Labels;

/// One alert as a notification shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageAlert {
    pub episode: String,
    pub fingerprint: String,
    pub rule: String,
    pub subject: String,
    pub severity: Severity,
    /// `firing` or `resolved`.
    pub status: Status,
    pub summary: String,
    pub labels: Labels,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// True when this notification is the first to tell this receiver about this state.
    pub new: bool,
}

impl MessageAlert {
    pub fn from_alert(a: &Alert, new: bool) -> Self {
        MessageAlert {
            episode: a.episode.clone(),
            fingerprint: a.fingerprint.clone(),
            rule: a.rule.clone(),
            subject: a.subject.clone(),
            severity: a.severity,
            status: a.status,
            summary: a.summary.clone(),
            labels: a.labels.clone(),
            started_at: a.started_at,
            resolved_at: a.resolved_at,
            new,
        }
    }

    /// `🔥 CRITICAL vm1:/ — / on vm1 is 96.0% full`
    pub fn line(&self) -> String {
        let (icon, word) = match (self.status, self.severity) {
            (Status::Resolved, _) => ("✅", "RESOLVED".to_owned()),
            (_, Severity::Critical) => ("🔥", "CRITICAL".to_owned()),
            (_, Severity::Error) => ("🚨", "ERROR".to_owned()),
            (_, s) => ("⚠️", s.as_str().to_uppercase()),
        };
        format!("{icon} {word} {} — {}", self.subject, self.summary)
    }
}

/// Firing or resolved, for the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Firing,
    Resolved,
}

/// What one notification says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationMessage {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: Labels,
    /// Firing when any alert in it is firing.
    pub status: MessageStatus,
    /// Firing alerts first (most severe first), then resolved ones.
    pub alerts: Vec<MessageAlert>,
    /// One line: `[FIRING:2] disk_used vm1`.
    pub title: String,
    /// Plain text: one line per alert.
    pub text: String,
    /// The node that sent it (the alerter).
    pub sender: String,
    pub sent_at: DateTime<Utc>,
    /// Until when a firing alert should be considered current by receivers that expire alerts
    /// (Alertmanager's `endsAt`): after the next repeat would have come.
    pub valid_until: DateTime<Utc>,
    /// Link to the labmesh web page, when configured.
    pub external_url: Option<String>,
    /// True for a reminder of alerts already sent (repeat interval).
    pub repeat: bool,
}

impl NotificationMessage {
    /// Builds the title and text from the alerts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        receiver: &str,
        group_key: &str,
        group_labels: Labels,
        mut alerts: Vec<MessageAlert>,
        sender: &str,
        sent_at: DateTime<Utc>,
        valid_until: DateTime<Utc>,
        external_url: Option<String>,
        repeat: bool,
    ) -> Self {
        alerts.sort_by(|a, b| {
            (a.status == Status::Resolved)
                .cmp(&(b.status == Status::Resolved))
                .then(b.severity.cmp(&a.severity))
                .then(a.subject.cmp(&b.subject))
                .then(a.episode.cmp(&b.episode))
        });
        let firing = alerts
            .iter()
            .filter(|a| a.status != Status::Resolved)
            .count();
        let status = if firing > 0 {
            MessageStatus::Firing
        } else {
            MessageStatus::Resolved
        };
        let head = match status {
            MessageStatus::Firing => format!("[FIRING:{firing}]"),
            MessageStatus::Resolved => "[RESOLVED]".to_owned(),
        };
        let group: Vec<&str> = group_labels.values().map(String::as_str).collect();
        let title = if group.is_empty() {
            head
        } else {
            format!("{head} {}", group.join(" "))
        };
        let mut text: Vec<String> = alerts.iter().map(MessageAlert::line).collect();
        if repeat {
            text.push("(reminder: still firing)".into());
        }
        NotificationMessage {
            receiver: receiver.to_owned(),
            group_key: group_key.to_owned(),
            group_labels,
            status,
            alerts,
            title,
            text: text.join("\n"),
            sender: sender.to_owned(),
            sent_at,
            valid_until,
            external_url,
            repeat,
        }
    }

    /// The most severe severity among the firing alerts (info when only resolutions).
    pub fn severity(&self) -> Severity {
        self.alerts
            .iter()
            .filter(|a| a.status != Status::Resolved)
            .map(|a| a.severity)
            .max()
            .unwrap_or(Severity::Info)
    }
}
