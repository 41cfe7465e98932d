//! What must never be stored of a command's output: run output becomes events, which every
//! peer keeps, so a token printed once would spread across the mesh for the whole retention.
//!
//! A [`Redactor`] replaces, in each line:
//! - the values of the environment's secret variables (by name: `GITHUB_TOKEN`,
//!   `SLACK_WEBHOOK_URL`, ...), with `[redacted:NAME]`;
//! - the user and password of URLs (`https://user:pw@host` → `https://[redacted]@host`);
//! - the values of secret-named parameters and assignments (`?token=...`, `password=...`,
//!   `"api_key": "..."`);
//! - `Authorization:` header credentials and `Bearer` tokens;
//! - tokens of well-known shapes (GitHub, GitLab, Slack, AWS key ids, JWTs);
//! - private keys: every line from `-----BEGIN ... PRIVATE KEY-----` to its `END` line, which
//!   is why a redactor holds a little state between lines.
//!
//! All matches are found on the original line and merged before anything is replaced, so
//! overlapping secrets (a password inside a URL, one value inside another) leave no part of
//! either behind.

use std::borrow::Cow;

/// What every line of a private key becomes.
pub const REDACTED_PRIVATE_KEY: &str = "[redacted private key]";
/// What a secret without a name (a URL's password, a header) becomes.
pub const REDACTED: &str = "[redacted]";

/// Words that make an environment variable (or a parameter) secret, upper case.
const SECRET_NAME_PARTS: [&str; 10] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "KEY",
    "WEBHOOK",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
];
/// Words that contain a secret word without being secret (`GIT_AUTHOR_NAME`, `XAUTHORITY`),
/// taken out of a name before it is judged; `AUTHORIZATION` keeps its `AUTH`.
const NOT_SECRET_WORDS: [&str; 4] = ["AUTHORITY", "AUTHOR", "KEYBOARD", "KEYMAP"];
/// Parameter names that are secret though no variable would be named so (`?sig=` of signed
/// URLs), lower case.
const SECRET_PARAMETERS: [&str; 4] = ["sig", "signature", "pwd", "pass"];
/// Shorter values would redact half of every line (`KEY_SIZE=32`).
const MIN_SECRET_LEN: usize = 4;
/// Values no secret ever has, which would otherwise be redacted wherever they appear.
const NOT_SECRET_VALUES: [&str; 4] = ["true", "false", "none", "null"];
/// Prefixes of tokens that are secret wherever they appear, and the least length of what
/// follows them.
const TOKEN_PREFIXES: [(&str, usize); 11] = [
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("github_pat_", 20),
    ("glpat-", 16),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xapp-", 10),
    ("AKIA", 16),
];

/// Whether an environment variable or parameter named `name` holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let mut name = name.to_ascii_uppercase();
    if !name.contains("AUTHORIZ") {
        for word in NOT_SECRET_WORDS {
            name = name.replace(word, " ");
        }
    }
    SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
}

/// Whether a query parameter or assignment named `name` holds a secret.
fn is_secret_parameter(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    is_secret_name(name)
        || SECRET_PARAMETERS.contains(&lower.as_str())
        || lower.ends_with("signature")
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Secret {
    value: String,
    name: String,
}

/// Redacts a command's output line by line; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so that a match starting where a shorter one does is named after the
    /// longer.
    secrets: Vec<Secret>,
    in_private_key: bool,
}

impl Redactor {
    /// A redactor for the values of `vars`' secret variables (see [`is_secret_name`]),
    /// besides the patterns every redactor knows.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut redactor = Redactor::default();
        for (name, value) in vars {
            if is_secret_name(&name) {
                redactor.add_secret(&name, &value);
            }
        }
        redactor
    }

    /// Redacts `value` too, as `[redacted:NAME]` (a webhook URL from the configuration). A
    /// value of several lines is redacted line by line, as output arrives.
    pub fn add_secret(&mut self, name: &str, value: &str) {
        for part in value.lines().map(str::trim) {
            if part.len() < MIN_SECRET_LEN
                || NOT_SECRET_VALUES
                    .iter()
                    .any(|v| part.eq_ignore_ascii_case(v))
                || self.secrets.iter().any(|s| s.value == part)
            {
                continue;
            }
            self.secrets.push(Secret {
                value: part.to_owned(),
                name: name.to_owned(),
            });
        }
        self.secrets.sort_by(|a, b| {
            (b.value.len(), &a.value, &a.name).cmp(&(a.value.len(), &b.value, &b.name))
        });
    }

    /// The names whose values are redacted, sorted, once each.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.secrets.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The next line of output, redacted (without its newline).
    pub fn line<'a>(&mut self, line: &'a str) -> Cow<'a, str> {
        if self.in_private_key {
            if is_private_key_end(line) {
                self.in_private_key = false;
            }
            return Cow::Borrowed(REDACTED_PRIVATE_KEY);
        }
        if is_private_key_begin(line) {
            // A key on one line (JSON with `\n` escapes) is done at once.
            self.in_private_key = !is_private_key_end(line);
            return Cow::Borrowed(REDACTED_PRIVATE_KEY);
        }
        self.redact_matches(line)
    }

    /// `text` on its own (a command line, an error message), redacted; its lines are read
    /// as a fresh output would be, leaving the state of [`Redactor::line`] alone.
    pub fn text(&self, text: &str) -> String {
        let mut fresh = Redactor {
            secrets: self.secrets.clone(),
            in_private_key: false,
        };
        let lines: Vec<String> = text
            .split('\n')
            .map(|l| fresh.line(l).into_owned())
            .collect();
        lines.join("\n")
    }

    fn redact_matches<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let mut found = Vec::new();
        self.find_env_secrets(line, &mut found);
        let lower = line.to_ascii_lowercase();
        find_url_credentials(&lower, &mut found);
        find_secret_parameters(line, &lower, &mut found);
        find_authorization(&lower, &mut found);
        find_token_shapes(line, &mut found);
        if found.is_empty() {
            return Cow::Borrowed(line);
        }
        Cow::Owned(self.replace(line, found))
    }

    fn find_env_secrets(&self, line: &str, found: &mut Vec<Match>) {
        for (index, secret) in self.secrets.iter().enumerate() {
            let step = secret.value.chars().next().map_or(1, char::len_utf8);
            let mut from = 0;
            // Overlapping occurrences too (`abab` in `ababab`), so no tail of one survives.
            let mut last: Option<Match> = None;
            while let Some(at) = line.get(from..).and_then(|rest| rest.find(&secret.value)) {
                let start = from + at;
                let end = start + secret.value.len();
                match last.as_mut() {
                    // One match for a run of overlapping ones: `aaaa` in a line of a million
                    // `a`s is one range, not a million.
                    Some(run) if start < run.end => run.end = end,
                    _ => {
                        found.extend(last.take());
                        last = Some(Match {
                            start,
                            end,
                            secret: Some(index),
                        });
                    }
                }
                from = start + step;
            }
            found.extend(last);
        }
    }

    /// `line` with every match, merged with those it overlaps, replaced.
    fn replace(&self, line: &str, mut found: Vec<Match>) -> String {
        found.sort_by_key(|m| (m.start, std::cmp::Reverse(m.end)));
        let mut redacted = String::with_capacity(line.len());
        let mut copied_to = 0;
        let mut matches = found.into_iter().peekable();
        while let Some(first) = matches.next() {
            let (start, mut end, mut secret) = (first.start, first.end, first.secret);
            while let Some(next) = matches.next_if(|m| m.start < end) {
                end = end.max(next.end);
                secret = secret.or(next.secret);
            }
            redacted.push_str(&line[copied_to..start]);
            match secret.and_then(|i| self.secrets.get(i)) {
                Some(secret) => {
                    redacted.push_str("[redacted:");
                    redacted.push_str(&secret.name);
                    redacted.push(']');
                }
                None => redacted.push_str(REDACTED),
            }
            copied_to = end;
        }
        redacted.push_str(&line[copied_to..]);
        redacted
    }
}

/// Where a secret is in a line (byte offsets at character boundaries), and which of the
/// redactor's secrets it is, if one.
#[derive(Clone, Copy, Debug)]
struct Match {
    start: usize,
    end: usize,
    secret: Option<usize>,
}

fn is_private_key_begin(line: &str) -> bool {
    line.find("-----BEGIN ")
        .is_some_and(|at| line[at..].contains("PRIVATE KEY"))
}

fn is_private_key_end(line: &str) -> bool {
    line.find("-----END ")
        .is_some_and(|at| line[at..].contains("PRIVATE KEY"))
}

/// Where a value written after `=` or `:` ends: quotes and markup end it, as does white space
/// (a secret with a space in it is only caught by its variable).
fn ends_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>')
}

/// `scheme://user:password@host`: the user and password, whatever the scheme. The authority
/// ends at the path, query or fragment, or where the URL does.
fn find_url_credentials(lower: &str, found: &mut Vec<Match>) {
    for (at, _) in lower.match_indices("://") {
        let start = at + 3;
        let rest = &lower[start..];
        let authority_len = rest
            .find(|c: char| matches!(c, '/' | '?' | '#' | '\\') || ends_value(c))
            .unwrap_or(rest.len());
        if let Some(user_len) = rest[..authority_len].rfind('@')
            && user_len > 0
        {
            found.push(Match {
                start,
                end: start + user_len,
                secret: None,
            });
        }
    }
}

/// `name=value` (query parameters, assignments, `--password=...`, `password = "..."` but not
/// `key = unquoted`, which is code more often than not) and
/// `"name": "value"` (JSON, also escaped inside a string), where the name is a secret one. A
/// quoted value is redacted up to its closing quote, spaces and all.
fn find_secret_parameters(line: &str, lower: &str, found: &mut Vec<Match>) {
    // A separator inside a value already found is part of it (`key=a=b=c`); skipping it
    // keeps a line of a million of them linear.
    let mut covered_to = 0;
    for (at, separator) in lower.match_indices(['=', ':']) {
        if at < covered_to {
            continue;
        }
        let before = &lower[..at];
        let json = separator == ":";
        let name_end = if json {
            // Only a quoted key counts before a colon: `error: ...` is prose.
            let Some(key) = before.strip_suffix('"') else {
                continue;
            };
            key.strip_suffix('\\').unwrap_or(key).len()
        } else {
            if lower[at + 1..].starts_with('=') || before.ends_with(['=', '!', '<', '>']) {
                continue;
            }
            before.trim_end_matches(' ').len()
        };
        let name_start = start_of_name(lower, name_end);
        if name_start == name_end || !is_secret_parameter(&line[name_start..name_end]) {
            continue;
        }
        let rest = &lower[at + 1..];
        let value = rest.trim_start_matches(' ');
        let value_at = lower.len() - value.len();
        let spaced = name_end < at || value_at > at + 1;
        let quoted = value.starts_with(['"', '\'']) || value.starts_with("\\\"");
        // `let key = compute();` in a compiler's snippet is code; `key = "..."` is a value.
        if spaced && !json && !quoted {
            continue;
        }
        let (start, end) = if let Some(quoted) = value.strip_prefix("\\\"") {
            let start = value_at + 2;
            (
                start,
                quoted.find("\\\"").map_or(lower.len(), |i| start + i),
            )
        } else if let Some(quote) = value.chars().next().filter(|c| matches!(c, '"' | '\'')) {
            let start = value_at + 1;
            let end = closing_quote(&lower[start..], quote).map_or(lower.len(), |i| start + i);
            (start, end)
        } else {
            let end = value
                .find(|c: char| ends_value(c) || c == '&' || (json && matches!(c, ',' | '}' | ']')))
                .map_or(lower.len(), |i| value_at + i);
            (value_at, end)
        };
        if end > start {
            covered_to = end;
            found.push(Match {
                start,
                end,
                secret: None,
            });
        }
    }
}

/// Where the name ending at `end` starts (`end` itself when there is none).
fn start_of_name(text: &str, end: usize) -> usize {
    text[..end]
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

/// The offset of the `quote` closing a string that starts `text`, past escaped ones.
fn closing_quote(text: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// `Authorization: Bearer xxx` (also `Proxy-Authorization`, JSON's `"authorization":
/// "..."`): the credentials, keeping the scheme's name; and `Bearer xxx` anywhere.
fn find_authorization(lower: &str, found: &mut Vec<Match>) {
    let mut covered_to = 0;
    for (at, header) in lower.match_indices("authorization") {
        if at < covered_to {
            continue;
        }
        let rest = &lower[at + header.len()..];
        let Some(after_separator) = rest
            .trim_start_matches(['"', '\'', '\\'])
            .trim_start()
            .strip_prefix([':', '='])
        else {
            continue;
        };
        let value = after_separator
            .trim_start()
            .trim_start_matches(['"', '\'', '\\']);
        let mut start = lower.len() - value.len();
        if let Some((scheme, credentials)) = value.split_once(' ')
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !credentials.trim_start().is_empty()
        {
            start += scheme.len() + 1;
        }
        let end = lower[start..]
            .find(['"', '\'', '`', '\\'])
            .map_or(lower.len(), |i| start + i);
        if !lower[start..end].trim().is_empty() {
            covered_to = end;
            found.push(Match {
                start,
                end,
                secret: None,
            });
        }
    }
    for (at, word) in lower.match_indices("bearer ") {
        if lower[..at].ends_with(|c: char| c.is_ascii_alphanumeric()) {
            continue;
        }
        let start = at + word.len();
        let token_len = lower[start..]
            .find(|c: char| !is_token_char(c))
            .unwrap_or(lower.len() - start);
        // `bearer token` in prose is no token; real ones are long.
        if token_len >= 8 {
            found.push(Match {
                start,
                end: start + token_len,
                secret: None,
            });
        }
    }
}

/// Tokens of shapes no ordinary text has: the [`TOKEN_PREFIXES`] and JWTs (`eyJ`, a header
/// of base64 JSON, and two dots), starting at a word boundary.
fn find_token_shapes(line: &str, found: &mut Vec<Match>) {
    let shapes = TOKEN_PREFIXES
        .iter()
        .map(|&(prefix, min_body)| (prefix, min_body, false))
        .chain([("eyJ", 16, true)]);
    for (prefix, min_body, is_jwt) in shapes {
        // A later start inside the same run of token characters has less body and fewer
        // dots: it cannot qualify where the first did not, and is covered where it did.
        let mut scanned_to = 0;
        for (start, _) in line.match_indices(prefix) {
            if start < scanned_to
                || line[..start].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            let body = &line[start + prefix.len()..];
            let body_len = body.find(|c: char| !is_token_char(c)).unwrap_or(body.len());
            let end = start + prefix.len() + body_len;
            scanned_to = end;
            if body_len >= min_body && (!is_jwt || line[start..end].matches('.').count() >= 2) {
                found.push(Match {
                    start,
                    end,
                    secret: None,
                });
            }
        }
    }
}

/// Characters of tokens: base64 (plain and URL-safe), JWT dots.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=')
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
