//! Terminal output: aligned tables, colour only on a terminal (and never with NO_COLOR).

use std::io::{IsTerminal, Write};

use sync::{IndexEntry, Severity};

pub fn color_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn paint(text: &str, severity: Severity, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    let code = match severity {
        Severity::Info => return text.to_owned(),
        Severity::Warning => "33",
        Severity::Error => "31",
        Severity::Critical => "1;31",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
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
            (3, Some(sev)) => paint(cell, sev, color),
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
