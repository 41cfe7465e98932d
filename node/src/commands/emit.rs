//! `labmesh emit`: record an event durably, with or without the agent running.
//!
//! Emitting never scans the store (that is the agent's job): it validates, writes one file with
//! the temp-fsync-rename-fsync sequence, and prints where it landed. The agent, if running,
//! picks the file up like any other. Bulk mode (`--from-jsonl`) batches many events per fsync.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};

use anyhow::Context;
use serde_json::{Map, Value, json};
use sync::event::{Event, NewEvent, Severity};
use sync::store::{EventWriter, WriteOutcome};

use crate::cli::EmitArgs;
use crate::cli::exit;
use labmesh::config::Settings;
use labmesh::error::UsageError;

pub fn run(settings: &Settings, args: &EmitArgs) -> anyhow::Result<u8> {
    let writer = EventWriter::new(&settings.data_dir, settings.max_event_bytes);
    if let Some(source) = &args.from_jsonl {
        return bulk(settings, args, &writer, source);
    }
    let event_type = args.event_type.clone().unwrap_or_default();
    let payload = read_payload(args)?;
    let new = defaults(args, &event_type)?.payload(payload);
    let hlc =
        sync::clock::HybridClock::for_writer(&settings.data_dir, settings.store_config().clock);
    let event = hlc
        .stamp_event(new, &settings.name)
        .map_err(|e| UsageError(format!("invalid event: {e}")))?;
    let outcome = writer.write(&event)?;
    let mut out = io::stdout().lock();
    print_outcome(&mut out, &event, &outcome, args.json)?;
    Ok(exit::OK)
}

/// A new event carrying the flags' severity, source, service and correlation id.
fn defaults(args: &EmitArgs, event_type: &str) -> Result<NewEvent, UsageError> {
    let severity: Severity = args
        .severity
        .parse()
        .map_err(|e| UsageError(format!("--severity: {e}")))?;
    Ok(NewEvent::new(event_type, severity, &args.source)
        .service(&args.service)
        .correlation_id(&args.correlation_id))
}

fn read_payload(args: &EmitArgs) -> Result<Map<String, Value>, anyhow::Error> {
    let (text, origin) = match (&args.payload, &args.payload_file) {
        (Some(p), _) if p == "-" => (read_stdin()?, "--payload - (standard input)".to_owned()),
        (Some(p), _) => (p.clone(), "--payload".to_owned()),
        (None, Some(f)) if f.as_os_str() == "-" => (
            read_stdin()?,
            "--payload-file - (standard input)".to_owned(),
        ),
        (None, Some(f)) => (
            std::fs::read_to_string(f)
                .map_err(|e| UsageError(format!("--payload-file {}: {e}", f.display())))?,
            format!("--payload-file {}", f.display()),
        ),
        (None, None) => return Ok(Map::new()),
    };
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(UsageError(format!(
            "{origin}: the payload must be a JSON object, found {}; wrap it, e.g. {{\"value\": {other}}}",
            kind(&other)
        ))
        .into()),
        Err(e) => Err(UsageError(format!("{origin}: not valid JSON: {e}")).into()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn read_stdin() -> Result<String, UsageError> {
    let mut text = String::new();
    io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| UsageError(format!("reading the payload from standard input: {e}")))?;
    Ok(text)
}

fn print_outcome(
    out: &mut impl Write,
    event: &Event,
    outcome: &WriteOutcome,
    json: bool,
) -> anyhow::Result<()> {
    if let WriteOutcome::NameTaken(path) = outcome {
        anyhow::bail!(
            "{} already holds a different event with id {}; nothing was written",
            path.display(),
            event.id
        );
    }
    if json {
        let doc: Value = serde_json::from_slice(&event.to_file_bytes())?;
        let line = json!({
            "id": event.id.hyphenated().to_string(),
            "path": outcome.path(),
            "duplicate": matches!(outcome, WriteOutcome::Duplicate(_)),
            "event": doc,
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "{}", outcome.path().display())?;
    }
    Ok(())
}

/// Builds an event from one line of bulk input: a complete event is taken as is; a partial one
/// gets the flags' defaults and is stamped now.
fn event_from_line(
    settings: &Settings,
    args: &EmitArgs,
    line: &str,
    hlc: &sync::clock::HybridClock,
) -> Result<Event, String> {
    let doc = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => map,
        Ok(other) => return Err(format!("expected a JSON object, found {}", kind(&other))),
        Err(e) => return Err(format!("not valid JSON: {e}")),
    };
    let complete = ["id", "timestamp", "node"]
        .iter()
        .all(|k| doc.contains_key(*k));
    if complete {
        let event = Event::from_document(doc, None).map_err(|e| e.to_string())?;
        if event.node != settings.name && !event.extra.contains_key(sync::signature::SIG_FIELD) {
            return Err(format!(
                "the event names node {}, but this node is {}: a node writes only its own events (its agent signs them with its key); emit it on {} (or leave `node` out)",
                event.node, settings.name, event.node
            ));
        }
        return Ok(event);
    }
    let text = |key: &str, default: &str| -> Result<String, String> {
        match doc.get(key) {
            None => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "field `{key}`: expected a string, found {}",
                kind(other)
            )),
        }
    };
    let event_type = text("type", "")?;
    if event_type.is_empty() {
        return Err(
            "field `type` is missing; add a snake_case type such as backup_completed".into(),
        );
    }
    let severity: Severity = text("severity", &args.severity)?
        .parse()
        .map_err(|e: sync::EventError| e.to_string())?;
    let payload = match doc.get("payload") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(format!(
                "field `payload`: expected an object, found {}",
                kind(other)
            ));
        }
    };
    let new = NewEvent::new(&event_type, severity, &text("source", &args.source)?)
        .service(&text("service", &args.service)?)
        .correlation_id(&text("correlation_id", &args.correlation_id)?)
        .payload(payload);
    hlc.stamp_event(new, &settings.name)
        .map_err(|e| e.to_string())
}

fn bulk(
    settings: &Settings,
    args: &EmitArgs,
    writer: &EventWriter,
    source: &std::path::Path,
) -> anyhow::Result<u8> {
    let reader: Box<dyn BufRead> = if source.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        Box::new(BufReader::new(File::open(source).map_err(|e| {
            UsageError(format!("--from-jsonl {}: {e}", source.display()))
        })?))
    };
    let hlc =
        sync::clock::HybridClock::for_writer(&settings.data_dir, settings.store_config().clock);
    let batch_size = args.batch_size.max(1);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut batch: Vec<Event> = Vec::with_capacity(batch_size);
    let flush =
        |batch: &mut Vec<Event>, out: &mut BufWriter<io::StdoutLock<'_>>| -> anyhow::Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let outcomes = writer.write_batch(batch)?;
            for (event, outcome) in batch.iter().zip(&outcomes) {
                print_outcome(out, event, outcome, args.json)?;
            }
            out.flush()?;
            batch.clear();
            Ok(())
        };
    for (number, line) in reader.lines().enumerate() {
        let line =
            line.with_context(|| format!("reading {} line {}", source.display(), number + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match event_from_line(settings, args, &line, &hlc) {
            Ok(event) => batch.push(event),
            Err(problem) => {
                flush(&mut batch, &mut out)?;
                return Err(UsageError(format!(
                    "{} line {}: {problem}; the lines before it were stored",
                    source.display(),
                    number + 1
                ))
                .into());
            }
        }
        if batch.len() >= batch_size {
            flush(&mut batch, &mut out)?;
        }
    }
    flush(&mut batch, &mut out)?;
    Ok(exit::OK)
}
