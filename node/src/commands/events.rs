//! `labmesh events list` and `labmesh events tail [-f]`: read the store directly.
//!
//! Readers open the store read-only (nothing is moved or written) and only index the date
//! folders the query can touch, so `list --since 1h` costs a day's files, not a month's.

use std::io::{self, BufWriter, Write};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use serde_json::Value;
use sync::{EventStore, IndexEntry, Order, Query, Severity};

use crate::cli::exit;
use crate::cli::{FilterArgs, ListArgs, OrderArg, OutputArgs, TailArgs};
use labmesh::config::Settings;
use labmesh::error::UsageError;
use labmesh::output;
use labmesh::timespec;

fn severity(flag: &str, text: &str) -> Result<Severity, UsageError> {
    text.parse().map_err(|e| UsageError(format!("{flag}: {e}")))
}

pub fn build_query(filter: &FilterArgs) -> Result<Query, UsageError> {
    let now = Utc::now();
    let since = filter
        .since
        .as_deref()
        .map(|t| timespec::parse("--since", t, now))
        .transpose()?;
    let until = filter
        .until
        .as_deref()
        .map(|t| timespec::parse("--until", t, now))
        .transpose()?;
    Ok(Query {
        since,
        until,
        nodes: filter.node.clone(),
        types: filter.event_type.clone(),
        severities: filter
            .severity
            .iter()
            .map(|s| severity("--severity", s))
            .collect::<Result<_, _>>()?,
        min_severity: filter
            .min_severity
            .as_deref()
            .map(|s| severity("--min-severity", s))
            .transpose()?,
        services: filter.service.clone(),
        sources: filter.source.clone(),
        correlation_id: filter.correlation_id.clone(),
        limit: None,
        order: Order::Asc,
    })
}

/// Opens the store read-only, indexing only the date folders in `dates`.
fn open(settings: &Settings, dates: Option<(NaiveDate, NaiveDate)>) -> anyhow::Result<EventStore> {
    let mut cfg = settings.store_config();
    cfg.read_only = true;
    cfg.dates = dates;
    let (store, report) = EventStore::open(cfg)?;
    if report.needs_attention > 0 {
        eprintln!(
            "labmesh: {} file(s) under {} are not valid events and were skipped; run `labmesh fsck` to see them (a running agent quarantines them)",
            report.needs_attention,
            store.events_dir().display()
        );
    }
    Ok(store)
}

fn date_scope(query: &Query) -> Option<(NaiveDate, NaiveDate)> {
    match (query.since, query.until) {
        (None, None) => None,
        (since, until) => Some((
            since.map_or(NaiveDate::MIN, |t| t.date_naive()),
            until.map_or(NaiveDate::MAX, |t| t.date_naive()),
        )),
    }
}

pub fn list(settings: &Settings, args: &ListArgs) -> anyhow::Result<u8> {
    let mut query = build_query(&args.filter)?;
    query.limit = args.limit;
    query.order = match args.order {
        OrderArg::Asc => Order::Asc,
        OrderArg::Desc => Order::Desc,
    };
    let store = open(settings, date_scope(&query))?;
    let entries = store.query(&query);
    print_entries(&store, &entries, args.output, true)?;
    Ok(exit::OK)
}

/// Prints entries as a table, a JSON array or JSON lines.
fn print_entries(
    store: &EventStore,
    entries: &[IndexEntry],
    fmt: OutputArgs,
    header: bool,
) -> anyhow::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    if fmt.json {
        let docs: Vec<Value> = entries.iter().filter_map(|e| read_doc(store, e)).collect();
        serde_json::to_writer_pretty(&mut out, &docs)?;
        writeln!(out)?;
    } else if fmt.jsonl {
        for e in entries {
            if let Some(bytes) = read_bytes(store, e) {
                out.write_all(bytes.trim_ascii_end())?;
                writeln!(out)?;
            }
        }
    } else {
        let rows: Vec<[String; 7]> = entries.iter().map(output::event_row).collect();
        let widths = output::widths(&rows);
        let color = output::color_enabled();
        if header {
            output::write_row(&mut out, &output::header_row(), &widths, None, false)?;
        }
        for (row, e) in rows.iter().zip(entries) {
            output::write_row(&mut out, row, &widths, Some(e.severity), color)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn read_bytes(store: &EventStore, e: &IndexEntry) -> Option<Vec<u8>> {
    match store.read_bytes(e) {
        Ok(b) => Some(b),
        Err(err) => {
            eprintln!("labmesh: skipping {}: {err}", e.relative_path().display());
            None
        }
    }
}

fn read_doc(store: &EventStore, e: &IndexEntry) -> Option<Value> {
    let bytes = read_bytes(store, e)?;
    serde_json::from_slice(&bytes).ok()
}

pub fn tail(settings: &Settings, args: &TailArgs) -> anyhow::Result<u8> {
    let mut query = build_query(&args.filter)?;
    // Recent days first: the last N events are almost always there.
    let today = Utc::now().date_naive();
    let recent = (today.pred_opt().unwrap_or(today), NaiveDate::MAX);
    let mut store = open(settings, date_scope(&query).or(Some(recent)))?;
    query.order = Order::Desc;
    query.limit = Some(args.lines);
    let mut latest = store.query(&query);
    if latest.len() < args.lines && date_scope(&query).is_none() {
        store = open(settings, None)?;
        latest = store.query(&query);
    }
    latest.reverse();
    let fmt = args.output;
    print_entries(&store, &latest, fmt, !args.follow || !latest.is_empty())?;
    if !args.follow {
        return Ok(exit::OK);
    }
    query.limit = None;
    query.order = Order::Asc;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let report = store.rescan()?;
        let fresh: Vec<IndexEntry> = report
            .added
            .into_iter()
            .filter(|e| query.matches(e))
            .collect();
        if !fresh.is_empty() {
            print_entries(&store, &fresh, fmt, false)?;
        }
    }
}
