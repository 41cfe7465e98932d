//! `[[check]]` tables of the config file: their raw shape (as serde reads it, with spans) and
//! their validation into [`CheckDef`]s.
//!
//! Unknown keys are rejected by serde (`deny_unknown_fields`), so the error comes from toml with
//! its own span. Everything else (a missing field, a key that does not apply to the kind, a bad
//! URL, a zero interval, a duplicate name) is checked here, and the error carries the span of
//! the offending value (or of the table, for a missing field) so the caller can name the line.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::fields::{
    count, duration, opt_duration, status_ranges, validate_address, validate_ca_file,
    validate_command, validate_name, validate_service, validate_url,
};

/// One `[[check]]` table as written. Every field is optional here so that a missing one is our
/// error (with a hint) rather than serde's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub name: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub service: Option<Spanned<String>>,
    pub interval: Option<Spanned<DurationValue>>,
    pub timeout: Option<Spanned<DurationValue>>,
    pub fall: Option<Spanned<i64>>,
    pub rise: Option<Spanned<i64>>,
    pub url: Option<Spanned<String>>,
    pub expect_status: Option<Spanned<StatusValue>>,
    pub body_contains: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub command: Option<Spanned<CommandValue>>,
    /// Names of the agent's environment variables a command check gets (it starts from a
    /// cleared environment: the agent's holds receiver secrets).
    pub env: Option<Spanned<Vec<String>>>,
    pub container: Option<Spanned<String>>,
    pub ttl: Option<Spanned<DurationValue>>,
}

/// `"30s"`, `"250ms"` or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(i64),
    Fraction(f64),
    Text(String),
}

/// `200`, `"200..399"`, or a list of codes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusValue {
    One(i64),
    Range(String),
    List(Vec<i64>),
}

/// `["pg_isready", "-h", "db"]` (run directly) or `"curl -fs x | grep y"` (run by `sh -c`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CommandValue {
    Argv(Vec<String>),
    Shell(String),
}

/// A validated check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckDef {
    pub name: String,
    pub service: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that make the check unhealthy.
    pub fall: u32,
    /// Consecutive successes that make an unhealthy check healthy again.
    pub rise: u32,
    pub probe: Probe,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Http {
        url: String,
        /// Inclusive ranges of accepted status codes.
        expect: Vec<(u16, u16)>,
        body_contains: Option<String>,
        /// PEM file of the CA(s) that signed the service's certificate (a homelab's own CA,
        /// or a self-signed certificate itself); `None` trusts the system's roots.
        ca_file: Option<PathBuf>,
    },
    Tcp {
        address: String,
    },
    Command {
        argv: Vec<String>,
        /// The agent's environment variables passed through (beyond the basic ones).
        pass_env: Vec<String>,
    },
    Docker {
        container: String,
    },
    Ttl {
        ttl: Duration,
    },
}

impl Probe {
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Http { .. } => "http",
            Probe::Tcp { .. } => "tcp",
            Probe::Command { .. } => "command",
            Probe::Docker { .. } => "docker",
            Probe::Ttl { .. } => "ttl",
        }
    }

    /// What the check looks at, for status output.
    pub fn target(&self) -> String {
        match self {
            Probe::Http { url, .. } => crate::util::redact_url(url),
            Probe::Tcp { address } => address.clone(),
            Probe::Command { argv, .. } => argv.join(" "),
            Probe::Docker { container } => container.clone(),
            Probe::Ttl { ttl } => format!("ttl {}s", ttl.as_secs_f64()),
        }
    }
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_RISE: u32 = 2;
/// Shortest interval (and ttl) accepted: below this a check is a load generator.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
const KINDS: &str = "http, tcp, command, docker or ttl";

/// A check definition that does not validate: where, which key, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckError {
    /// Byte range in the config file text.
    pub span: Range<usize>,
    /// The key at fault, e.g. `check.interval`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for CheckError {}

/// 1-based line and column of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// `line N, column M (`check.key`): message`: the error as the config loader prints it after
/// the file name.
pub fn describe(text: &str, e: &CheckError) -> String {
    let (line, column) = line_col(text, e.span.start);
    format!("line {line}, column {column} (`{}`): {}", e.key, e.message)
}

pub(super) fn err(span: Range<usize>, key: &str, message: impl Into<String>) -> CheckError {
    CheckError {
        span,
        key: format!("check.{key}"),
        message: message.into(),
    }
}

/// Keys each kind accepts besides the common ones.
fn kind_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "http" => &["url", "expect_status", "body_contains", "ca_file"],
        "tcp" => &["address"],
        "command" => &["command", "env"],
        "docker" => &["container"],
        _ => &["ttl"],
    }
}

/// Validates every table, in file order. Names must be unique.
pub fn validate_all(text: &str, raw: &[Spanned<RawCheck>]) -> Result<Vec<CheckDef>, CheckError> {
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    let mut defs = Vec::with_capacity(raw.len());
    for table in raw {
        let def = validate(table)?;
        if let Some(first) = seen.get(&def.name) {
            let span = table
                .get_ref()
                .name
                .as_ref()
                .map_or(table.span(), Spanned::span);
            return Err(CheckError {
                span,
                key: "check.name".into(),
                message: format!(
                    "{:?} is already the name of the check on line {}; give each [[check]] its own name",
                    def.name,
                    line_col(text, first.start).0
                ),
            });
        }
        let name_span = table
            .get_ref()
            .name
            .as_ref()
            .map_or(table.span(), Spanned::span);
        seen.insert(def.name.clone(), name_span);
        defs.push(def);
    }
    Ok(defs)
}

/// Validates one `[[check]]` table.
pub fn validate(table: &Spanned<RawCheck>) -> Result<CheckDef, CheckError> {
    let raw = table.get_ref();
    let whole = table.span();
    let name = raw.name.as_ref().ok_or_else(|| {
        err(
            whole.clone(),
            "name",
            "missing; add e.g. name = \"web\" (letters, digits, '.', '_', '-')",
        )
    })?;
    validate_name(name)?;
    let kind = raw.kind.as_ref().ok_or_else(|| {
        err(
            whole.clone(),
            "kind",
            format!(
                "missing in check {:?}; add kind = \"http\" (or {KINDS})",
                name.get_ref()
            ),
        )
    })?;
    let kind_name = kind.get_ref().as_str();
    if !matches!(kind_name, "http" | "tcp" | "command" | "docker" | "ttl") {
        return Err(err(
            kind.span(),
            "kind",
            format!("{kind_name:?} is not a kind of check; use {KINDS}"),
        ));
    }
    reject_foreign_keys(raw, kind_name)?;
    let service = match &raw.service {
        Some(s) => validate_service(s)?,
        None => name.get_ref().clone(),
    };
    let ttl_kind = kind_name == "ttl";
    let (default_fall, default_rise) = if ttl_kind {
        (1, 1)
    } else {
        (DEFAULT_FALL, DEFAULT_RISE)
    };
    let missing = |key: &str, example: &str| {
        err(
            whole.clone(),
            key,
            format!(
                "missing in {kind_name} check {:?}; add e.g. {key} = {example}",
                name.get_ref()
            ),
        )
    };
    let probe = match kind_name {
        "http" => {
            let url = raw
                .url
                .as_ref()
                .ok_or_else(|| missing("url", "\"http://127.0.0.1:8080/health\""))?;
            Probe::Http {
                url: validate_url(url)?,
                expect: match &raw.expect_status {
                    Some(s) => status_ranges(s)?,
                    None => vec![(200, 399)],
                },
                body_contains: raw.body_contains.as_ref().map(|b| b.get_ref().clone()),
                ca_file: raw.ca_file.as_ref().map(validate_ca_file).transpose()?,
            }
        }
        "tcp" => {
            let address = raw
                .address
                .as_ref()
                .ok_or_else(|| missing("address", "\"127.0.0.1:5432\""))?;
            Probe::Tcp {
                address: validate_address(address)?,
            }
        }
        "command" => {
            let command = raw
                .command
                .as_ref()
                .ok_or_else(|| missing("command", "[\"pg_isready\", \"-h\", \"127.0.0.1\"]"))?;
            let pass_env = match &raw.env {
                None => Vec::new(),
                Some(names) => {
                    for n in names.get_ref() {
                        let ok = !n.is_empty()
                            && !n.starts_with(|c: char| c.is_ascii_digit())
                            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                        if !ok {
                            return Err(err(
                                names.span(),
                                "env",
                                format!(
                                    "{n:?} is not an environment variable name; list names such as \"PGPASSFILE\""
                                ),
                            ));
                        }
                    }
                    names.get_ref().clone()
                }
            };
            Probe::Command {
                argv: validate_command(command)?,
                pass_env,
            }
        }
        "docker" => {
            let container = raw
                .container
                .as_ref()
                .ok_or_else(|| missing("container", "\"jellyfin\""))?;
            if container.get_ref().trim().is_empty() {
                return Err(err(
                    container.span(),
                    "container",
                    "is empty; give the container's name or id",
                ));
            }
            Probe::Docker {
                container: container.get_ref().trim().to_owned(),
            }
        }
        _ => {
            let ttl = raw.ttl.as_ref().ok_or_else(|| missing("ttl", "\"10m\""))?;
            Probe::Ttl {
                ttl: duration(ttl, "ttl")?,
            }
        }
    };
    Ok(CheckDef {
        name: name.get_ref().clone(),
        service,
        interval: opt_duration(&raw.interval, "interval", DEFAULT_INTERVAL)?,
        timeout: opt_duration(&raw.timeout, "timeout", DEFAULT_TIMEOUT)?,
        fall: count(&raw.fall, "fall", default_fall)?,
        rise: count(&raw.rise, "rise", default_rise)?,
        probe,
    })
}

/// A key set for another kind (e.g. `url` on a tcp check) is an error: it would do nothing.
fn reject_foreign_keys(raw: &RawCheck, kind: &str) -> Result<(), CheckError> {
    let spans: [(&str, Option<Range<usize>>); 11] = [
        ("url", raw.url.as_ref().map(Spanned::span)),
        (
            "expect_status",
            raw.expect_status.as_ref().map(Spanned::span),
        ),
        (
            "body_contains",
            raw.body_contains.as_ref().map(Spanned::span),
        ),
        ("ca_file", raw.ca_file.as_ref().map(Spanned::span)),
        ("address", raw.address.as_ref().map(Spanned::span)),
        ("command", raw.command.as_ref().map(Spanned::span)),
        ("env", raw.env.as_ref().map(Spanned::span)),
        ("container", raw.container.as_ref().map(Spanned::span)),
        ("ttl", raw.ttl.as_ref().map(Spanned::span)),
        // A ttl check has no probe of its own: reports arrive, or the ttl runs out.
        ("interval", raw.interval.as_ref().map(Spanned::span)),
        ("timeout", raw.timeout.as_ref().map(Spanned::span)),
    ];
    let allowed = kind_keys(kind);
    for (key, span) in spans {
        let Some(span) = span else { continue };
        if allowed.contains(&key) || (common_key(key) && kind != "ttl") {
            continue;
        }
        let fix = if common_key(key) {
            "a ttl check has no probe of its own: `labmesh check pass NAME` or POST /v1/checks/NAME/pass feeds it, and `ttl` says how long a report counts".to_owned()
        } else {
            format!("a {kind} check takes {}", allowed.join(", "))
        };
        return Err(err(
            span,
            key,
            format!("does not apply to a {kind} check; remove it ({fix})"),
        ));
    }
    Ok(())
}

fn common_key(key: &str) -> bool {
    matches!(key, "interval" | "timeout")
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
