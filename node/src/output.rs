//! Terminal output: aligned tables, colour only on a terminal (and never with NO_COLOR).

use std::io::{IsTerminal, Write};

use serde_json::Value;
use sync::{IndexEntry, Severity};

/// A JSON value as text: strings unquoted, null (or missing) as empty, anything else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// [`text`], with `-` for a null or missing value (a table cell that must not be blank).
pub fn shown(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        other => text(other),
    }
}

/// `text` in colour `code` (an SGR code such as `31`) when `color` is on and there is text.
pub fn paint(text: &str, code: Option<&str>, color: bool) -> String {
    match code {
        Some(code) if color && !text.is_empty() => format!("\x1b[{code}m{text}\x1b[0m"),
        _ => text.to_owned(),
    }
}

pub fn color_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn severity_color(severity: Severity) -> Option<&'static str> {
    match severity {
        Severity::Info => None,
        Severity::Warning => Some("33"),
        Severity::Error => Some("31"),
        Severity::Critical => Some("1;31"),
    }
}

pub const EVENT_HEADER: [&str; 7] = [
    "TIME",
    "NODE",
    "TYPE",
    "SEVERITY",
    "SERVICE",
    "SOURCE",
    "CORRELATION_ID",
];

pub fn event_row(e: &IndexEntry) -> [String; 7] {
    [
        sync::event::format_timestamp(e.timestamp()),
        e.node.to_string(),
        e.event_type.to_string(),
        e.severity.to_string(),
        e.service.to_string(),
        e.source.to_string(),
        e.correlation_id.to_string(),
    ]
}

/// Column widths fitting the header and every row.
pub fn widths(rows: &[[String; 7]]) -> [usize; 7] {
    let mut w = EVENT_HEADER.map(str::len);
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            w[i] = w[i].max(cell.chars().count());
        }
    }
    w
}

/// Writes one row padded to `widths`; the severity column is coloured.
pub fn write_row(
    out: &mut impl Write,
    row: &[String; 7],
    widths: &[usize; 7],
    severity: Option<Severity>,
    color: bool,
) -> std::io::Result<()> {
    let mut line = String::new();
    for (i, cell) in row.iter().enumerate() {
        let pad = widths[i].saturating_sub(cell.chars().count());
        let text = match (i, severity) {
            (3, Some(sev)) => paint(cell, severity_color(sev), color),
            _ => cell.clone(),
        };
        line.push_str(&text);
        if i + 1 < row.len() {
            line.push_str(&" ".repeat(pad + 2));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

pub fn header_row() -> [String; 7] {
    EVENT_HEADER.map(str::to_owned)
}

/// Columns padded to their widest cell, two spaces apart, each line prefixed with `indent`.
pub fn table(indent: &str, rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(x) => *x = (*x).max(w),
                None => widths.push(w),
            }
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = indent.to_owned();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(&" ".repeat(pad + 2));
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// Bytes for people: `0 B`, `512 B`, `1.5 KiB`, `8 GiB`, `7.8 GiB` (powers of 1024).
pub fn format_size(bytes: u64) -> String {
    const KI: u64 = 1024;
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < KI {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0} {unit}")
    } else {
        format!("{rounded:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1 KiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(8 << 30), "8 GiB");
        assert_eq!(format_size(8_375_186_227), "7.8 GiB");
        assert_eq!(format_size(100 << 40), "100 TiB");
        assert_eq!(format_size(u64::MAX), "16 EiB");
    }
}
