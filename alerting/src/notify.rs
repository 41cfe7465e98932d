//! Pure builders of what each receiver kind expects: the HTTP request (method, URL, headers,
//! body), or an email message for a later SMTP sender. The driver performs it and reports the
//! outcome with [`crate::Engine::on_delivery`].
//!
//! Size limits are the services' own (Slack section 3000 characters, Discord content 2000 and
//! embed description 4096, Telegram 4096): longer text is cut with an ellipsis rather than
//! refused, because a truncated page is better than none.

use serde_json::{Value, json};
use sync::Severity;
use sync::event::format_timestamp;

use crate::message::{MessageStatus, NotificationMessage};
use crate::receiver::{Receiver, ReceiverKind};
use crate::secret::{Secret, SecretError, SecretSource};
use crate::state::Status;

/// An HTTP request to perform. The URL and secret headers are [`Secret`]s: webhook URLs and
/// Telegram's URL carry credentials, so `Debug` never shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub method: &'static str,
    pub url: Secret,
    pub headers: Vec<(String, String)>,
    pub secret_headers: Vec<(String, Secret)>,
    pub body: Vec<u8>,
}

/// An email for the SMTP sender.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailMessage {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text_body: String,
    pub smtp: String,
    pub tls: crate::receiver::SmtpTls,
    /// PEM file of the CAs to trust instead of the system's.
    pub ca_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// What the driver performs.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Http(HttpRequest),
    Email(EmailMessage),
}

/// Why a notification could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("receiver `{receiver}`: {source}")]
    Secret {
        receiver: String,
        source: SecretError,
    },
}

/// Cuts `text` to at most `max` characters, ending with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// HTTP header values must be visible ASCII: other characters become `?`.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn json_post(url: Secret, body: &Value) -> HttpRequest {
    HttpRequest {
        method: "POST",
        url,
        headers: vec![("Content-Type".into(), "application/json".into())],
        secret_headers: Vec::new(),
        // Serialising a `Value` cannot fail.
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

fn bearer(req: &mut HttpRequest, token: Option<Secret>) {
    if let Some(t) = token {
        req.secret_headers.push((
            "Authorization".into(),
            Secret::new(format!("Bearer {}", t.expose())),
        ));
    }
}

/// Discord embed colour by severity.
fn color(msg: &NotificationMessage) -> u32 {
    match (msg.status, msg.severity()) {
        (MessageStatus::Resolved, _) => 0x2e_b8_86,
        (_, Severity::Critical) => 0xd0_30_30,
        (_, Severity::Error) => 0xe8_70_30,
        _ => 0xe8_b0_30,
    }
}

/// Builds the delivery of `msg` for `receiver`, resolving its secrets through `secrets`.
pub fn build(
    receiver: &Receiver,
    secrets: &dyn SecretSource,
    msg: &NotificationMessage,
) -> Result<Delivery, NotifyError> {
    let resolve = |r: &crate::secret::SecretRef| {
        r.resolve(secrets).map_err(|source| NotifyError::Secret {
            receiver: receiver.name.clone(),
            source,
        })
    };
    let full_text = match &msg.external_url {
        Some(u) => format!("{}\n{u}", msg.text),
        None => msg.text.clone(),
    };
    let d = match &receiver.kind {
        ReceiverKind::Webhook {
            url,
            token,
            headers,
        } => {
            let mut body = serde_json::to_value(msg).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut body {
                m.insert("version".into(), json!("1"));
            }
            let mut req = json_post(resolve(url)?, &body);
            req.headers
                .extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            bearer(&mut req, token.as_ref().map(resolve).transpose()?);
            Delivery::Http(req)
        }
        ReceiverKind::Slack { url } => {
            let text = truncate(&full_text, 3000);
            let body = json!({
                "text": truncate(&format!("{}\n{}", msg.title, full_text), 3000),
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": truncate(&msg.title, 150)}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": escape_html(&text)}}
                ]
            });
            Delivery::Http(json_post(resolve(url)?, &body))
        }
        ReceiverKind::Discord { url } => {
            let body = json!({
                "content": truncate(&msg.title, 2000),
                "embeds": [{
                    "title": truncate(&msg.title, 256),
                    "description": truncate(&full_text, 4096),
                    "color": color(msg),
                    "timestamp": format_timestamp(msg.sent_at),
                    "footer": {"text": format!("labmesh · {}", msg.sender)}
                }],
                "allowed_mentions": {"parse": []}
            });
            Delivery::Http(json_post(resolve(url)?, &body))
        }
        ReceiverKind::Telegram {
            token,
            chat_id,
            api,
        } => {
            let token = resolve(token)?;
            let text = format!(
                "<b>{}</b>\n{}",
                escape_html(&msg.title),
                escape_html(&full_text)
            );
            let body = json!({
                "chat_id": chat_id,
                "text": truncate(&text, 4096),
                "parse_mode": "HTML",
                "disable_web_page_preview": true
            });
            let url = Secret::new(format!("{api}/bot{}/sendMessage", token.expose()));
            Delivery::Http(json_post(url, &body))
        }
        ReceiverKind::Ntfy {
            server,
            topic,
            token,
        } => {
            let (priority, tags) = match (msg.status, msg.severity()) {
                (MessageStatus::Resolved, _) => ("2", "white_check_mark"),
                (_, Severity::Critical) => ("5", "rotating_light"),
                (_, Severity::Error) => ("4", "warning"),
                (_, Severity::Warning) => ("3", "warning"),
                (_, Severity::Info) => ("2", "information_source"),
            };
            let mut headers = vec![
                ("Title".to_owned(), header_safe(&truncate(&msg.title, 250))),
                ("Priority".to_owned(), priority.to_owned()),
                ("Tags".to_owned(), tags.to_owned()),
                (
                    "Content-Type".to_owned(),
                    "text/plain; charset=utf-8".to_owned(),
                ),
            ];
            if let Some(u) = &msg.external_url {
                headers.push(("Click".into(), header_safe(u)));
            }
            let mut req = HttpRequest {
                method: "POST",
                url: Secret::new(format!("{server}/{}", resolve(topic)?.expose())),
                headers,
                secret_headers: Vec::new(),
                body: truncate(&msg.text, 4000).into_bytes(),
            };
            bearer(&mut req, token.as_ref().map(resolve).transpose()?);
            Delivery::Http(req)
        }
        ReceiverKind::Alertmanager { url, token } => {
            let base = resolve(url)?;
            let alerts: Vec<Value> = msg
                .alerts
                .iter()
                .map(|a| {
                    let mut labels = a.labels.clone();
                    labels.remove("rule");
                    labels.insert("alertname".into(), a.rule.clone());
                    labels.insert("severity".into(), a.severity.as_str().into());
                    labels.insert("subject".into(), a.subject.clone());
                    let ends = match a.status {
                        Status::Resolved => a.resolved_at.unwrap_or(msg.sent_at),
                        _ => msg.valid_until,
                    };
                    json!({
                        "labels": labels,
                        "annotations": {"summary": a.summary, "episode": a.episode},
                        "startsAt": format_timestamp(a.started_at),
                        "endsAt": format_timestamp(ends),
                        "generatorURL": msg.external_url.clone().unwrap_or_default()
                    })
                })
                .collect();
            let url = Secret::new(format!(
                "{}/api/v2/alerts",
                base.expose().trim_end_matches('/')
            ));
            let mut req = json_post(url, &Value::Array(alerts));
            bearer(&mut req, token.as_ref().map(resolve).transpose()?);
            Delivery::Http(req)
        }
        ReceiverKind::Email {
            to,
            from,
            smtp,
            tls,
            ca_file,
            username,
            password,
        } => Delivery::Email(EmailMessage {
            from: from.clone(),
            to: to.clone(),
            subject: header_safe(&truncate(&msg.title, 200)),
            text_body: format!(
                "{full_text}\n\n-- \nlabmesh alerter {} at {}\n",
                msg.sender,
                format_timestamp(msg.sent_at)
            ),
            smtp: smtp.clone(),
            tls: *tls,
            ca_file: ca_file.clone(),
            username: username.clone(),
            password: password.as_ref().map(resolve).transpose()?,
        }),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageAlert;
    use crate::receiver::ReceiverToml;
    use crate::secret::MapSecrets;
    use crate::util::Labels;
    use chrono::{DateTime, Utc};

    fn t(s: &str) -> DateTime<Utc> {
        sync::event::parse_timestamp(s).unwrap()
    }

    fn msg(status: Status) -> NotificationMessage {
        let labels: Labels = [("node", "vm1"), ("rule", "disk_used"), ("mount", "/")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let alert = MessageAlert {
            episode: "ep1".into(),
            fingerprint: "fp1".into(),
            rule: "disk_used".into(),
            subject: "vm1:/".into(),
            severity: Severity::Critical,
            status,
            summary: "/ on vm1 is 96.0% full <!>".into(),
            labels,
            started_at: t("2026-06-01T10:00:00Z"),
            resolved_at: (status == Status::Resolved).then(|| t("2026-06-01T11:00:00Z")),
            new: true,
        };
        let group: Labels = [("rule".to_string(), "disk_used".to_string())].into();
        NotificationMessage::new(
            "r",
            "r#0{rule=disk_used}",
            group,
            vec![alert],
            "vm1",
            t("2026-06-01T10:00:30Z"),
            t("2026-06-01T14:05:30Z"),
            None,
            false,
        )
    }

    fn receiver(toml_text: &str) -> Receiver {
        Receiver::try_from(toml::from_str::<ReceiverToml>(toml_text).unwrap()).unwrap()
    }

    fn secrets() -> MapSecrets {
        let mut s = MapSecrets::default();
        s.env.insert("TG".into(), "123:SECRET".into());
        s.env.insert(
            "HOOK".into(),
            "https://hooks.slack.com/services/T/B/SECRET".into(),
        );
        s
    }

    fn http(r: &str, m: &NotificationMessage) -> (HttpRequest, Value) {
        let Delivery::Http(req) = build(&receiver(r), &secrets(), m).unwrap() else {
            panic!()
        };
        let body = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        (req, body)
    }

    #[test]
    fn telegram_posts_send_message_with_html() {
        let (req, body) = http(
            "kind = \"telegram\"\ntoken_env = \"TG\"\nchat_id = 42",
            &msg(Status::Firing),
        );
        assert_eq!(
            req.url.expose(),
            "https://api.telegram.org/bot123:SECRET/sendMessage"
        );
        assert_eq!(body["chat_id"], "42");
        assert_eq!(body["parse_mode"], "HTML");
        assert!(body["text"].as_str().unwrap().starts_with(
            "<b>[FIRING:1] disk_used</b>\n🔥 CRITICAL vm1:/ — / on vm1 is 96.0% full &lt;!&gt;"
        ));
        assert!(
            !format!("{req:?}").contains("SECRET"),
            "the token never shows in Debug"
        );
    }

    #[test]
    fn ntfy_uses_headers() {
        let (req, _) = http("kind = \"ntfy\"\ntopic = \"lab\"", &msg(Status::Firing));
        assert_eq!(req.url.expose(), "https://ntfy.sh/lab");
        let h: std::collections::BTreeMap<_, _> = req.headers.iter().cloned().collect();
        assert_eq!(h["Title"], "[FIRING:1] disk_used");
        assert_eq!(h["Priority"], "5");
        assert_eq!(h["Tags"], "rotating_light");
        assert!(String::from_utf8(req.body).unwrap().contains("vm1:/"));
        let (req, _) = http("kind = \"ntfy\"\ntopic = \"lab\"", &msg(Status::Resolved));
        assert!(req.headers.contains(&("Priority".into(), "2".into())));
    }

    #[test]
    fn slack_discord_webhook_and_alertmanager_shapes() {
        let (req, body) = http("kind = \"slack\"\nurl_env = \"HOOK\"", &msg(Status::Firing));
        assert_eq!(req.method, "POST");
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with("[FIRING:1] disk_used")
        );
        assert_eq!(body["blocks"][1]["text"]["type"], "mrkdwn");
        let (_, body) = http(
            "kind = \"discord\"\nurl = \"https://discord/x\"",
            &msg(Status::Firing),
        );
        assert_eq!(body["content"], "[FIRING:1] disk_used");
        assert_eq!(body["embeds"][0]["color"], 0xd03030);
        let (req, body) = http(
            "kind = \"webhook\"\nurl = \"http://h/hook\"\ntoken = \"T\"",
            &msg(Status::Firing),
        );
        assert_eq!(body["version"], "1");
        assert_eq!(body["alerts"][0]["status"], "firing");
        assert_eq!(body["alerts"][0]["severity"], "critical");
        assert_eq!(req.secret_headers[0].1.expose(), "Bearer T");
        let (req, body) = http(
            "kind = \"alertmanager\"\nurl = \"http://am:9093/\"",
            &msg(Status::Resolved),
        );
        assert_eq!(req.url.expose(), "http://am:9093/api/v2/alerts");
        let a = &body[0];
        assert_eq!(a["labels"]["alertname"], "disk_used");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["startsAt"], "2026-06-01T10:00:00.000Z");
        assert_eq!(a["endsAt"], "2026-06-01T11:00:00.000Z");
        let (_, firing) = http(
            "kind = \"alertmanager\"\nurl = \"http://am:9093\"",
            &msg(Status::Firing),
        );
        assert_eq!(firing[0]["endsAt"], "2026-06-01T14:05:30.000Z");
    }

    #[test]
    fn email_and_missing_secrets() {
        let r = receiver(
            "kind = \"email\"\nto = [\"me@example.com\"]\nfrom = \"lab@example.com\"\nsmtp = \"mail:587\"\npassword_env = \"NOPE\"",
        );
        let err = build(&r, &secrets(), &msg(Status::Firing)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "receiver `email`: environment variable NOPE is not set (or empty)"
        );
        let r = receiver(
            "kind = \"email\"\nto = [\"me@example.com\"]\nfrom = \"lab@example.com\"\nsmtp = \"mail:587\"",
        );
        let Delivery::Email(e) = build(&r, &secrets(), &msg(Status::Firing)).unwrap() else {
            panic!()
        };
        assert_eq!(e.subject, "[FIRING:1] disk_used");
        assert!(e.text_body.contains("/ on vm1 is 96.0% full"));
    }

    #[test]
    fn long_text_is_cut_not_refused() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("ab", 4), "ab");
        assert_eq!(truncate("ééééé", 3), "éé…");
    }
}
