//! Receivers: where notifications go, from `[[receiver]]` tables.
//!
//! The common ones fit in three lines:
//!
//! ```toml
//! [[receiver]]
//! kind = "ntfy"
//! topic = "homelab-alerts"        # server defaults to https://ntfy.sh
//!
//! [[receiver]]
//! kind = "telegram"
//! token_env = "TELEGRAM_TOKEN"
//! chat_id = "123456789"
//! ```
//!
//! `name` defaults to the kind. Secrets (tokens, Slack/Discord webhook URLs, which are
//! credentials too) come as `x`, `x_file` or `x_env`; the driver resolves them at send time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::SecretRef;

/// `[[receiver]]` as written. Unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverToml {
    pub name: Option<String>,
    /// `webhook`, `slack`, `discord`, `telegram`, `ntfy`, `alertmanager` or `email`.
    pub kind: String,
    pub url: Option<String>,
    pub url_file: Option<String>,
    pub url_env: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    /// Telegram chat (a number or `@channel`).
    pub chat_id: Option<ChatId>,
    /// ntfy server (default `https://ntfy.sh`); Telegram API base (default
    /// `https://api.telegram.org`, for tests and proxies).
    pub server: Option<String>,
    /// ntfy topic.
    pub topic: Option<String>,
    /// Extra headers of a generic webhook.
    pub headers: Option<BTreeMap<String, String>>,
    // email
    pub to: Option<Vec<String>>,
    pub from: Option<String>,
    /// SMTP relay `host:port` (587 uses STARTTLS, 465 TLS).
    pub smtp: Option<String>,
    /// `auto` (by port: 465 implicit TLS, 587 STARTTLS required, else STARTTLS when offered),
    /// `implicit`, `starttls` (required) or `none`.
    pub tls: Option<String>,
    /// PEM file of the CA(s) to trust for the relay instead of the system's (a homelab's own
    /// mail server).
    pub ca_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
}

/// A Telegram chat id as TOML lets people write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChatId {
    Number(i64),
    Text(String),
}

impl std::fmt::Display for ChatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatId::Number(n) => write!(f, "{n}"),
            ChatId::Text(s) => f.write_str(s),
        }
    }
}

/// A validated receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverKind {
    /// POST of the message as JSON; `token` becomes `Authorization: Bearer`.
    Webhook {
        url: SecretRef,
        token: Option<SecretRef>,
        headers: BTreeMap<String, String>,
    },
    Slack {
        url: SecretRef,
    },
    Discord {
        url: SecretRef,
    },
    Telegram {
        token: SecretRef,
        chat_id: String,
        api: String,
    },
    Ntfy {
        server: String,
        topic: SecretRef,
        token: Option<SecretRef>,
    },
    /// Alertmanager's base URL (`http://am:9093`); alerts go to `/api/v2/alerts`.
    Alertmanager {
        url: SecretRef,
        token: Option<SecretRef>,
    },
    Email {
        to: Vec<String>,
        from: String,
        smtp: String,
        tls: SmtpTls,
        ca_file: Option<String>,
        username: Option<String>,
        password: Option<SecretRef>,
    },
}

/// How the email receiver secures its SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// By port: 465 implicit TLS, 587 STARTTLS required, any other STARTTLS when offered.
    Auto,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
    /// STARTTLS, and fail when the server does not offer it.
    Starttls,
    /// Plain text: a local relay on a trusted network only.
    None,
}

impl SmtpTls {
    fn parse(text: &str) -> Option<SmtpTls> {
        match text {
            "auto" => Some(SmtpTls::Auto),
            "implicit" => Some(SmtpTls::Implicit),
            "starttls" => Some(SmtpTls::Starttls),
            "none" => Some(SmtpTls::None),
            _ => None,
        }
    }
}

/// Why a receiver was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("receiver `{name}`: {problem}")]
pub struct ReceiverError {
    pub name: String,
    pub problem: String,
}

impl TryFrom<ReceiverToml> for Receiver {
    type Error = ReceiverError;

    fn try_from(t: ReceiverToml) -> Result<Receiver, ReceiverError> {
        let name = t.name.clone().unwrap_or_else(|| t.kind.clone());
        let err = |problem: String| ReceiverError {
            name: name.clone(),
            problem,
        };
        let secret = |field: &str, i: &Option<String>, f: &Option<String>, e: &Option<String>| {
            SecretRef::from_fields(field, i.clone(), f.clone(), e.clone()).map_err(&err)
        };
        let url = secret("url", &t.url, &t.url_file, &t.url_env)?;
        let token = secret("token", &t.token, &t.token_file, &t.token_env)?;
        let password = secret("password", &t.password, &t.password_file, &t.password_env)?;
        let need = |v: Option<SecretRef>, what: &str| {
            v.ok_or_else(|| err(format!("a {} receiver needs {what}", t.kind)))
        };
        let (kind, allowed): (ReceiverKind, &[&str]) = match t.kind.as_str() {
            "webhook" => (
                ReceiverKind::Webhook {
                    url: need(url, "`url` (or `url_file`, `url_env`)")?,
                    token,
                    headers: t.headers.clone().unwrap_or_default(),
                },
                &["url", "token", "headers"],
            ),
            "slack" => (
                ReceiverKind::Slack {
                    url: need(
                        url,
                        "its incoming-webhook `url` (better `url_env` or `url_file`)",
                    )?,
                },
                &["url"],
            ),
            "discord" => (
                ReceiverKind::Discord {
                    url: need(url, "its webhook `url` (better `url_env` or `url_file`)")?,
                },
                &["url"],
            ),
            "telegram" => {
                let chat_id = t
                    .chat_id
                    .as_ref()
                    .ok_or_else(|| err("a telegram receiver needs `chat_id`".into()))?
                    .to_string();
                let api = t
                    .server
                    .clone()
                    .unwrap_or_else(|| "https://api.telegram.org".into());
                (
                    ReceiverKind::Telegram {
                        token: need(token, "the bot `token_env` (or `token_file`, `token`)")?,
                        chat_id,
                        api: api.trim_end_matches('/').to_owned(),
                    },
                    &["token", "chat_id", "server"],
                )
            }
            "ntfy" => {
                let topic = t
                    .topic
                    .clone()
                    .ok_or_else(|| err("a ntfy receiver needs `topic`".into()))?;
                if topic.is_empty() || topic.contains('/') {
                    return Err(err(format!(
                        "`topic = \"{topic}\"` must be one path segment"
                    )));
                }
                let server = t.server.clone().unwrap_or_else(|| "https://ntfy.sh".into());
                (
                    ReceiverKind::Ntfy {
                        server: server.trim_end_matches('/').to_owned(),
                        topic: SecretRef::Inline(crate::secret::Secret::new(topic)),
                        token,
                    },
                    &["server", "topic", "token"],
                )
            }
            "alertmanager" => (
                ReceiverKind::Alertmanager {
                    url: need(url, "`url`, e.g. http://alertmanager:9093")?,
                    token,
                },
                &["url", "token"],
            ),
            "email" => {
                let to = t.to.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
                    err("an email receiver needs `to = [\"you@example.com\"]`".into())
                })?;
                let from = t
                    .from
                    .clone()
                    .ok_or_else(|| err("an email receiver needs `from`".into()))?;
                let smtp = t
                    .smtp
                    .clone()
                    .ok_or_else(|| err("an email receiver needs `smtp = \"host:587\"`".into()))?;
                let tls = match t.tls.as_deref() {
                    None => SmtpTls::Auto,
                    Some(text) => SmtpTls::parse(text).ok_or_else(|| {
                        err(format!(
                            "`tls = \"{text}\"`: use auto, implicit, starttls or none"
                        ))
                    })?,
                };
                (
                    ReceiverKind::Email {
                        to,
                        from,
                        smtp,
                        tls,
                        ca_file: t.ca_file.clone(),
                        username: t.username.clone(),
                        password,
                    },
                    &[
                        "to", "from", "smtp", "tls", "ca_file", "username", "password",
                    ],
                )
            }
            other => {
                return Err(err(format!(
                    "`kind = \"{other}\"`: use webhook, slack, discord, telegram, ntfy, alertmanager or email"
                )));
            }
        };
        let set = [
            (
                "url",
                t.url.is_some() || t.url_file.is_some() || t.url_env.is_some(),
            ),
            (
                "token",
                t.token.is_some() || t.token_file.is_some() || t.token_env.is_some(),
            ),
            (
                "password",
                t.password.is_some() || t.password_file.is_some() || t.password_env.is_some(),
            ),
            ("chat_id", t.chat_id.is_some()),
            ("server", t.server.is_some()),
            ("topic", t.topic.is_some()),
            ("headers", t.headers.is_some()),
            ("to", t.to.is_some()),
            ("from", t.from.is_some()),
            ("smtp", t.smtp.is_some()),
            ("tls", t.tls.is_some()),
            ("ca_file", t.ca_file.is_some()),
            ("username", t.username.is_some()),
        ];
        if let Some((field, _)) = set.iter().find(|(f, s)| *s && !allowed.contains(f)) {
            return Err(err(format!(
                "field `{field}` does not apply to a {} receiver",
                t.kind
            )));
        }
        Ok(Receiver { name, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        receiver: Vec<ReceiverToml>,
    }

    fn parse(text: &str) -> Result<Receiver, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        Receiver::try_from(f.receiver[0].clone()).map_err(|e| e.to_string())
    }

    #[test]
    fn telegram_and_ntfy_in_three_lines() {
        let tg = parse("[[receiver]]\nkind = \"telegram\"\ntoken_env = \"TELEGRAM_TOKEN\"\nchat_id = 123456789\n").unwrap();
        assert_eq!(tg.name, "telegram");
        assert!(
            matches!(&tg.kind, ReceiverKind::Telegram { chat_id, .. } if chat_id == "123456789")
        );
        let ntfy =
            parse("[[receiver]]\nname = \"phone\"\nkind = \"ntfy\"\ntopic = \"homelab-alerts\"\n")
                .unwrap();
        assert!(
            matches!(&ntfy.kind, ReceiverKind::Ntfy { server, .. } if server == "https://ntfy.sh")
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            parse("[[receiver]]\nkind = \"ntfy\"\ntopik = \"x\"\n")
                .unwrap_err()
                .contains("unknown field `topik`")
        );
        assert_eq!(
            parse("[[receiver]]\nkind = \"telegram\"\nchat_id = 1\n").unwrap_err(),
            "receiver `telegram`: a telegram receiver needs the bot `token_env` (or `token_file`, `token`)"
        );
        assert!(
            parse("[[receiver]]\nkind = \"slack\"\nurl = \"a\"\nurl_env = \"B\"\n")
                .unwrap_err()
                .contains("set only one of `url`, `url_file`, `url_env`")
        );
        assert!(
            parse("[[receiver]]\nkind = \"slack\"\nurl_env = \"B\"\ntopic = \"x\"\n")
                .unwrap_err()
                .contains("field `topic` does not apply to a slack receiver")
        );
        assert!(
            parse("[[receiver]]\nkind = \"pager\"\n")
                .unwrap_err()
                .contains("`kind = \"pager\"`")
        );
    }
}
