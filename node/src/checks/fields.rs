//! Validation of single `[[check]]` values: each returns the value in its final form, or a
//! [`CheckError`] with the value's span, the key, and how to fix it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use toml::Spanned;

use super::config::{CheckError, CommandValue, DurationValue, MIN_INTERVAL, StatusValue, err};

pub(super) fn validate_name(name: &Spanned<String>) -> Result<(), CheckError> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(err(
            name.span(),
            "name",
            format!(
                "{n:?} is not a check name; use 1 to 64 letters, digits, '.', '_' or '-' (it appears in URLs: /v1/checks/NAME)"
            ),
        ))
    }
}

pub(super) fn validate_service(service: &Spanned<String>) -> Result<String, CheckError> {
    let s = service.get_ref().trim();
    if s.is_empty() || s.len() > sync::event::MAX_LABEL_LEN || s.chars().any(char::is_control) {
        return Err(err(
            service.span(),
            "service",
            "must be a short name without control characters (or leave it out: it defaults to the check's name)",
        ));
    }
    Ok(s.to_owned())
}

/// Reads the CA file now, so a typo or an unreadable file stops the agent at start with the
/// line of the key, not as a failing check later.
pub(super) fn validate_ca_file(file: &Spanned<String>) -> Result<PathBuf, CheckError> {
    let path = PathBuf::from(file.get_ref().trim());
    load_ca_file(&path).map_err(|why| err(file.span(), "ca_file", why))?;
    Ok(path)
}

/// The certificates of a PEM file, or why there are none.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "{} cannot be read ({e}); give the PEM file of the CA that signed the service's certificate",
            path.display()
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

pub(super) fn validate_url(url: &Spanned<String>) -> Result<String, CheckError> {
    let text = url.get_ref().trim();
    let bad = |why: String| {
        err(
            url.span(),
            "url",
            format!("{text:?} {why}; use e.g. \"http://127.0.0.1:8080/health\""),
        )
    };
    let parsed = reqwest::Url::parse(text).map_err(|e| bad(format!("is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!(
            "has the scheme {:?}; only http and https are checked",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host".into()));
    }
    Ok(text.to_owned())
}

pub(super) fn validate_address(address: &Spanned<String>) -> Result<String, CheckError> {
    let text = address.get_ref().trim();
    let parsed = text.rsplit_once(':').and_then(|(host, port)| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().ok()?;
        (!host.is_empty() && port != 0).then_some(())
    });
    match parsed {
        Some(()) => Ok(text.to_owned()),
        None => Err(err(
            address.span(),
            "address",
            format!(
                "{text:?} is not HOST:PORT; use e.g. \"127.0.0.1:5432\", \"db.lan:5432\" or \"[::1]:5432\""
            ),
        )),
    }
}

pub(super) fn validate_command(command: &Spanned<CommandValue>) -> Result<Vec<String>, CheckError> {
    let argv = match command.get_ref() {
        CommandValue::Argv(argv) => argv.clone(),
        CommandValue::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
    };
    if argv.first().is_none_or(|a| a.trim().is_empty()) || argv.last().is_some_and(String::is_empty)
    {
        return Err(err(
            command.span(),
            "command",
            "is empty; give a program and its arguments, e.g. [\"pg_isready\", \"-h\", \"127.0.0.1\"], or a shell line",
        ));
    }
    Ok(argv)
}

pub(super) fn duration(value: &Spanned<DurationValue>, key: &str) -> Result<Duration, CheckError> {
    let secs = match value.get_ref() {
        DurationValue::Seconds(n) => *n as f64,
        DurationValue::Fraction(f) => *f,
        DurationValue::Text(t) if t.trim_start().starts_with('-') => -1.0,
        DurationValue::Text(t) => alerting::util::parse_duration(t)
            .map_err(|e| err(value.span(), key, e))?
            .as_secs_f64(),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(err(
            value.span(),
            key,
            format!("must be more than zero; use e.g. {key} = \"30s\" (units: ms, s, m, h, d)"),
        ));
    }
    let d = Duration::from_secs_f64(secs.min(86_400.0 * 365.0));
    if d < MIN_INTERVAL && key != "timeout" {
        return Err(err(
            value.span(),
            key,
            format!("{}ms is too short; use at least 100ms", d.as_millis()),
        ));
    }
    Ok(d)
}

pub(super) fn opt_duration(
    value: &Option<Spanned<DurationValue>>,
    key: &str,
    default: Duration,
) -> Result<Duration, CheckError> {
    value.as_ref().map_or(Ok(default), |v| duration(v, key))
}

pub(super) fn count(
    value: &Option<Spanned<i64>>,
    key: &str,
    default: u32,
) -> Result<u32, CheckError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match u32::try_from(*v.get_ref()) {
        Ok(n @ 1..=1000) => Ok(n),
        _ => Err(err(
            v.span(),
            key,
            format!(
                "{} is out of range; use a count from 1 to 1000 (default {default})",
                v.get_ref()
            ),
        )),
    }
}

pub(super) fn status_ranges(value: &Spanned<StatusValue>) -> Result<Vec<(u16, u16)>, CheckError> {
    let bad = || {
        err(
            value.span(),
            "expect_status",
            "use a status code (200), a range (\"200..399\") or a list ([200, 204]) of codes from 100 to 599",
        )
    };
    let code = |n: i64| u16::try_from(n).ok().filter(|c| (100..=599).contains(c));
    let ranges = match value.get_ref() {
        StatusValue::One(n) => code(*n).map(|c| vec![(c, c)]),
        StatusValue::List(list) => list
            .iter()
            .map(|n| code(*n).map(|c| (c, c)))
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty()),
        StatusValue::Range(text) => {
            let (lo, hi) = text.split_once("..").unwrap_or((text, text));
            let lo = lo.trim().parse().ok().and_then(code);
            let hi = hi
                .trim_start_matches('=')
                .trim()
                .parse()
                .ok()
                .and_then(code);
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo <= hi => Some(vec![(lo, hi)]),
                _ => None,
            }
        }
    };
    ranges.ok_or_else(bad)
}
