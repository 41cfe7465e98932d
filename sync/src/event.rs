//! The event: the user's contract from `seeds/event-system.md`, plus an `id`.
//!
//! An event is one JSON object with the seed's fields (`timestamp`, `node`, `type`, `severity`,
//! `source`, `service`, `correlation_id`, `payload`) and a UUIDv7 `id`. Any other top-level field
//! is kept: the store never re-serialises a file it did not write, so unknown fields survive
//! byte for byte, and [`Event::extra`] carries them for readers.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Default largest event file, in bytes (64 KiB). Large enough for a stack trace or a build
/// summary in the payload, small enough that a runaway script cannot fill a disk or a peer's
/// memory one event at a time. Logs belong in log files that an event points to.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;

/// Longest `type` accepted. Types are names, not messages.
pub const MAX_TYPE_LEN: usize = 64;

/// Longest `source`, `service` and `correlation_id` accepted, in bytes.
pub const MAX_LABEL_LEN: usize = 256;

/// The top-level fields the seed defines, plus `id`, in the order labmesh writes them.
pub const KNOWN_FIELDS: [&str; 9] = [
    "id",
    "timestamp",
    "node",
    "type",
    "severity",
    "source",
    "service",
    "correlation_id",
    "payload",
];

/// Why an event was refused. Every message names the field, what is wrong and how to fix it,
/// because the reader is an operator looking at a `.reason` file or a failed script.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error(
        "the file is empty (a torn or unfinished write); write events atomically: temp file, then rename"
    )]
    Empty,
    #[error(
        "event is {size} bytes, over the {limit}-byte limit; shrink the payload (point to a log file instead) or raise `max_event_bytes`"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "not UTF-8 text (invalid byte at offset {offset}); an event file is one JSON object in UTF-8"
    )]
    NotUtf8 { offset: usize },
    #[error("not valid JSON: {message} at line {line}, column {column}{}", if *.truncated { " (the file ends too early: a torn write?)" } else { "" })]
    Json {
        message: String,
        line: usize,
        column: usize,
        truncated: bool,
    },
    #[error("the event must be a JSON object, found {found}")]
    NotObject { found: &'static str },
    #[error("field `{field}` is missing; {fix}")]
    Missing { field: &'static str, fix: String },
    #[error("field `{field}`: {problem}; {fix}")]
    Invalid {
        field: &'static str,
        problem: String,
        fix: String,
    },
    /// The origin signature is missing or does not hold (see `signature`).
    #[error("signature: {0}")]
    Signature(#[from] crate::signature::SignatureError),
}

impl EventError {
    fn invalid(field: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        EventError::Invalid {
            field,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// True when the bytes look like an interrupted write rather than a wrong event.
    pub fn is_torn(&self) -> bool {
        matches!(
            self,
            EventError::Empty
                | EventError::Json {
                    truncated: true,
                    ..
                }
        )
    }
}

/// How bad an event is. Ordered, so `--min-severity warning` means warning, error and critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str() == s)
            .ok_or_else(|| {
                EventError::invalid(
                    "severity",
                    format!("{s:?} is not a severity"),
                    "use one of info, warning, error, critical",
                )
            })
    }
}

/// A validated event. `timestamp` is kept at the precision the writer gave (labmesh writes
/// milliseconds); `extra` holds every top-level field the seed does not define, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Uuid,
    pub timestamp: DateTime<Utc>,
    pub node: String,
    pub event_type: String,
    pub severity: Severity,
    pub source: String,
    pub service: String,
    pub correlation_id: String,
    pub payload: Map<String, Value>,
    pub extra: Map<String, Value>,
}

/// What a caller supplies to create an event; the store adds `id`, `timestamp` and `node`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub severity: Severity,
    pub source: String,
    pub service: String,
    pub correlation_id: String,
    pub payload: Map<String, Value>,
}

impl NewEvent {
    /// A new event with an empty payload, no correlation id and service `all`.
    pub fn new(event_type: &str, severity: Severity, source: &str) -> Self {
        NewEvent {
            event_type: event_type.to_owned(),
            severity,
            source: source.to_owned(),
            service: "all".to_owned(),
            correlation_id: String::new(),
            payload: Map::new(),
        }
    }

    pub fn service(mut self, service: &str) -> Self {
        self.service = service.to_owned();
        self
    }

    pub fn correlation_id(mut self, id: &str) -> Self {
        self.correlation_id = id.to_owned();
        self
    }

    pub fn payload(mut self, payload: Map<String, Value>) -> Self {
        self.payload = payload;
        self
    }

    /// Stamps the event at `at` on `node` with a fresh UUIDv7 whose time is `at` (truncated to
    /// the millisecond, as in the file name), and validates it.
    pub fn into_event(self, node: &str, at: DateTime<Utc>) -> Result<Event, EventError> {
        let at = truncate_to_millis(at);
        self.into_event_with_id(node, at, uuid_v7_at(at))
    }

    /// As [`NewEvent::into_event`], with the caller's id: a deterministic driver (the
    /// simulator) draws its UUIDv7 bits from a seeded RNG, where `into_event` takes them from
    /// a process-global context, and still goes through the same validation.
    pub fn into_event_with_id(
        self,
        node: &str,
        at: DateTime<Utc>,
        id: Uuid,
    ) -> Result<Event, EventError> {
        let at = truncate_to_millis(at);
        let event = Event {
            id,
            timestamp: at,
            node: node.to_owned(),
            event_type: self.event_type,
            severity: self.severity,
            source: self.source,
            service: self.service,
            correlation_id: self.correlation_id,
            payload: self.payload,
            extra: Map::new(),
        };
        event.validate()?;
        Ok(event)
    }
}

/// A UUIDv7 whose 48-bit time is `at` in Unix milliseconds. Within one process ids are
/// monotonic (a counter fills the bits after the time), so events stamped in the same
/// millisecond still list in the order they were created.
pub fn uuid_v7_at(at: DateTime<Utc>) -> Uuid {
    static CONTEXT: std::sync::Mutex<uuid::ContextV7> =
        std::sync::Mutex::new(uuid::ContextV7::new());
    let secs = u64::try_from(at.timestamp()).unwrap_or(0);
    let nanos = at.timestamp_subsec_nanos();
    let ctx = CONTEXT.lock().unwrap_or_else(|p| p.into_inner());
    Uuid::new_v7(uuid::Timestamp::from_unix(&*ctx, secs, nanos))
}

fn truncate_to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(at.timestamp_millis())
        .single()
        .unwrap_or(at)
}

/// The canonical text of a timestamp labmesh writes: RFC 3339, UTC, milliseconds, `Z`.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Event {
    /// Checks every field against the contract; the first problem found is returned.
    pub fn validate(&self) -> Result<(), EventError> {
        validate_node(&self.node)?;
        validate_type(&self.event_type)?;
        validate_label("source", &self.source, false)?;
        validate_label("service", &self.service, false)?;
        validate_label("correlation_id", &self.correlation_id, true)?;
        if self.timestamp.timestamp_millis() < 0 {
            return Err(EventError::invalid(
                "timestamp",
                "is before 1970-01-01",
                "use the current UTC time, e.g. 2026-05-12T12:05:00.123Z",
            ));
        }
        Ok(())
    }

    /// The event's time in Unix milliseconds (the key sync reconciles on).
    pub fn timestamp_millis(&self) -> u64 {
        u64::try_from(self.timestamp.timestamp_millis()).unwrap_or(0)
    }

    /// The one-line compact JSON file content labmesh writes, ending in a newline. Fields come in
    /// [`KNOWN_FIELDS`] order, then `extra` in its order.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Out<'a> {
            id: String,
            timestamp: String,
            node: &'a str,
            #[serde(rename = "type")]
            event_type: &'a str,
            severity: Severity,
            source: &'a str,
            service: &'a str,
            correlation_id: &'a str,
            payload: &'a Map<String, Value>,
            #[serde(flatten)]
            extra: &'a Map<String, Value>,
        }
        let out = Out {
            id: self.id.hyphenated().to_string(),
            timestamp: format_timestamp(self.timestamp),
            node: &self.node,
            event_type: &self.event_type,
            severity: self.severity,
            source: &self.source,
            service: &self.service,
            correlation_id: &self.correlation_id,
            payload: &self.payload,
            extra: &self.extra,
        };
        // Serialising maps of strings and JSON values cannot fail.
        let mut bytes = serde_json::to_vec(&out).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses and validates an event file's bytes. `id_from_name` is used when the document has
    /// no `id` field (files written by the seed's original scripts carry it only in their name).
    pub fn from_file_bytes(
        bytes: &[u8],
        max_bytes: usize,
        id_from_name: Option<Uuid>,
    ) -> Result<Event, EventError> {
        let doc = parse_document(bytes, max_bytes)?;
        Event::from_document(doc, id_from_name)
    }

    /// Builds an event from an already parsed JSON document.
    pub fn from_document(
        mut doc: Map<String, Value>,
        id_from_name: Option<Uuid>,
    ) -> Result<Event, EventError> {
        let id = match doc.shift_remove("id") {
            Some(Value::String(s)) => Uuid::parse_str(&s).map_err(|_| {
                EventError::invalid(
                    "id",
                    format!("{s:?} is not a UUID"),
                    "use a UUIDv7 such as 0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f (or omit it and keep the UUID in the file name)",
                )
            })?,
            Some(other) => {
                return Err(EventError::invalid(
                    "id",
                    format!("expected a string, found {}", json_kind(&other)),
                    "write the UUID as a JSON string",
                ));
            }
            None => id_from_name.ok_or_else(|| EventError::Missing {
                field: "id",
                fix: "add a UUIDv7 `id` (labmesh emit and the event libraries do this)".into(),
            })?,
        };
        let timestamp_text = take_string(
            &mut doc,
            "timestamp",
            "an RFC 3339 UTC time such as 2026-05-12T12:05:00.123Z",
        )?;
        let timestamp = parse_timestamp(&timestamp_text)?;
        let node = take_string(
            &mut doc,
            "node",
            "the host name of the node that wrote the event",
        )?;
        let event_type = take_string(
            &mut doc,
            "type",
            "a snake_case type such as deployment_started",
        )?;
        let severity_text = take_string(
            &mut doc,
            "severity",
            "one of info, warning, error, critical",
        )?;
        let severity = severity_text.parse()?;
        let source = take_string(
            &mut doc,
            "source",
            "the component that emitted it, e.g. deploy.sh",
        )?;
        let service = take_string(&mut doc, "service", "a service name, or `all`")?;
        let correlation_id = take_string(
            &mut doc,
            "correlation_id",
            "a run or incident id, or an empty string",
        )?;
        let payload = match doc.shift_remove("payload") {
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(EventError::invalid(
                    "payload",
                    format!("expected an object, found {}", json_kind(&other)),
                    "wrap the data in an object, e.g. {\"value\": ...}",
                ));
            }
            None => {
                return Err(EventError::Missing {
                    field: "payload",
                    fix: "add `\"payload\": {}` (an object, possibly empty)".into(),
                });
            }
        };
        let event = Event {
            id,
            timestamp,
            node,
            event_type,
            severity,
            source,
            service,
            correlation_id,
            payload,
            extra: doc,
        };
        event.validate()?;
        Ok(event)
    }
}

/// Size, UTF-8 and JSON-object checks, returning the document with its field order kept.
pub fn parse_document(bytes: &[u8], max_bytes: usize) -> Result<Map<String, Value>, EventError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(EventError::Empty);
    }
    if bytes.len() > max_bytes {
        return Err(EventError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(EventError::NotUtf8 {
            offset: e.valid_up_to(),
        });
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(EventError::NotObject {
            found: json_kind(&other),
        }),
        Err(e) => Err(EventError::Json {
            message: json_message(&e),
            line: e.line(),
            column: e.column(),
            truncated: e.is_eof(),
        }),
    }
}

/// serde_json's message without its own " at line N column M" suffix (we print ours).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(pos) => text[..pos].to_owned(),
        None => text,
    }
}

fn take_string(
    doc: &mut Map<String, Value>,
    field: &'static str,
    expected: &str,
) -> Result<String, EventError> {
    match doc.shift_remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(EventError::invalid(
            field,
            format!("expected a string, found {}", json_kind(&other)),
            format!("write {expected} as a JSON string"),
        )),
        None => Err(EventError::Missing {
            field,
            fix: format!("add {expected}"),
        }),
    }
}

/// Parses an RFC 3339 timestamp; any offset is accepted and converted to UTC.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, EventError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            EventError::invalid(
                "timestamp",
                format!("{text:?} is not an RFC 3339 time ({e})"),
                "use UTC with a zone, e.g. 2026-05-12T12:05:00.123Z (`date -u +%Y-%m-%dT%H:%M:%S.%3NZ`)",
            )
        })
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A node name must be a valid host name (RFC 1123): it becomes a folder name on every peer and
/// the name in its certificate.
pub fn validate_node(node: &str) -> Result<(), EventError> {
    let fix = "use the host name (letters, digits, '-', dot-separated labels of at most 63 characters), or set LABMESH_NAME";
    if node.is_empty() {
        return Err(EventError::invalid("node", "is empty", fix));
    }
    if node.len() > 253 {
        return Err(EventError::invalid(
            "node",
            format!("is {} characters long, over 253", node.len()),
            fix,
        ));
    }
    for label in node.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(EventError::invalid(
                "node",
                format!("{node:?} is not a valid host name (label {label:?})"),
                fix,
            ));
        }
    }
    Ok(())
}

/// Types are snake_case so that every writer (scripts, tools, peers) lands on the same names.
pub fn validate_type(event_type: &str) -> Result<(), EventError> {
    let fix = "use snake_case: lowercase letters and digits separated by single underscores, starting with a letter, e.g. deployment_started";
    let bytes = event_type.as_bytes();
    let shape_ok = bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !event_type.ends_with('_')
        && !event_type.contains("__");
    if !shape_ok {
        return Err(EventError::invalid(
            "type",
            format!("{event_type:?} is not snake_case"),
            fix,
        ));
    }
    if event_type.len() > MAX_TYPE_LEN {
        return Err(EventError::invalid(
            "type",
            format!(
                "is {} characters long, over {MAX_TYPE_LEN}",
                event_type.len()
            ),
            "use a short name; put details in the payload",
        ));
    }
    Ok(())
}

fn validate_label(field: &'static str, value: &str, may_be_empty: bool) -> Result<(), EventError> {
    if value.is_empty() && !may_be_empty {
        let fix = match field {
            "service" => "name the service, or use `all`",
            _ => "name the component that emitted the event, e.g. deploy.sh",
        };
        return Err(EventError::invalid(field, "is empty", fix));
    }
    if value.len() > MAX_LABEL_LEN {
        return Err(EventError::invalid(
            field,
            format!("is {} bytes long, over {MAX_LABEL_LEN}", value.len()),
            "use a short name; put details in the payload",
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(EventError::invalid(
            field,
            format!("contains the control character {:?}", c),
            "remove newlines, tabs and other control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let at = parse_timestamp("2026-05-12T12:05:00.123Z").unwrap();
        NewEvent::new("deployment_started", Severity::Info, "deploy.sh")
            .service("mosquitto")
            .correlation_id("deploy-882")
            .into_event("saturn", at)
            .unwrap()
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let ev = sample();
        let bytes = ev.to_file_bytes();
        assert!(bytes.ends_with(b"}\n"));
        let back = Event::from_file_bytes(&bytes, DEFAULT_MAX_EVENT_BYTES, None).unwrap();
        assert_eq!(back, ev);
        assert_eq!(ev.id.get_version_num(), 7);
        assert_eq!(ev.id.get_timestamp().unwrap().to_unix().0, 1778587500);
    }

    #[test]
    fn a_given_id_makes_the_same_bytes_twice_and_is_still_validated() {
        let at = parse_timestamp("2026-05-12T12:05:00.123Z").unwrap();
        let id = uuid::Builder::from_unix_timestamp_millis(1_778_587_500_123, &[7; 10]).into_uuid();
        let make = |node: &str| {
            NewEvent::new("deployment_started", Severity::Info, "deploy.sh")
                .into_event_with_id(node, at, id)
        };
        let (a, b) = (make("saturn").unwrap(), make("saturn").unwrap());
        assert_eq!(a.id, id);
        assert_eq!(a.to_file_bytes(), b.to_file_bytes());
        assert!(
            make("").is_err(),
            "an empty node name is refused as by into_event"
        );
    }

    #[test]
    fn field_order_is_the_seeds() {
        let text = String::from_utf8(sample().to_file_bytes()).unwrap();
        let mut last = 0;
        for field in KNOWN_FIELDS {
            let pos = text.find(&format!("\"{field}\":")).unwrap();
            assert!(pos >= last, "{field} out of order in {text}");
            last = pos;
        }
    }

    #[test]
    fn extra_fields_are_kept_in_order() {
        let text = r#"{"id":"0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f","timestamp":"2026-05-12T12:05:00Z","zeta":1,"node":"saturn","type":"x","severity":"info","source":"s","service":"all","correlation_id":"","payload":{},"alpha":[1,2]}"#;
        let ev = Event::from_file_bytes(text.as_bytes(), 1 << 16, None).unwrap();
        let keys: Vec<_> = ev.extra.keys().cloned().collect();
        assert_eq!(keys, vec!["zeta", "alpha"]);
    }

    #[test]
    fn errors_name_field_and_fix() {
        let base = sample();
        // (field, new value or None to remove it, expected start of the message)
        let cases: [(&str, Option<Value>, &str); 7] = [
            (
                "severity",
                Some("urgent".into()),
                "field `severity`: \"urgent\" is not a severity; use one of",
            ),
            (
                "type",
                Some("DeployStarted".into()),
                "field `type`: \"DeployStarted\" is not snake_case",
            ),
            (
                "payload",
                Some(Value::Array(vec![])),
                "field `payload`: expected an object, found an array",
            ),
            (
                "timestamp",
                Some("yesterday".into()),
                "field `timestamp`: \"yesterday\" is not an RFC 3339 time",
            ),
            (
                "node",
                Some("my_vm".into()),
                "field `node`: \"my_vm\" is not a valid host name",
            ),
            ("source", None, "field `source` is missing"),
            (
                "service",
                Some(3.into()),
                "field `service`: expected a string, found a number",
            ),
        ];
        for (field, value, want) in cases {
            let mut doc: Map<String, Value> =
                serde_json::from_slice(&base.to_file_bytes()).unwrap();
            match value {
                Some(v) => doc.insert(field.into(), v),
                None => doc.remove(field),
            };
            let err = Event::from_document(doc, None).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "{err:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn size_limit_and_torn_files() {
        let bytes = sample().to_file_bytes();
        let err = Event::from_file_bytes(&bytes, 50, None).unwrap_err();
        assert!(matches!(err, EventError::TooLarge { limit: 50, .. }));
        let torn = Event::from_file_bytes(&bytes[..bytes.len() / 2], 1 << 16, None).unwrap_err();
        assert!(torn.is_torn(), "{torn}");
        assert!(Event::from_file_bytes(b"", 10, None).unwrap_err().is_torn());
        let garbage = Event::from_file_bytes(&[0xff, 0xfe, 0x00], 10, None).unwrap_err();
        assert!(matches!(garbage, EventError::NotUtf8 { offset: 0 }));
    }

    #[test]
    fn id_may_come_from_the_file_name() {
        let text = r#"{"timestamp":"2026-05-12T12:05:00+02:00","node":"saturn","type":"x","severity":"info","source":"s","service":"all","correlation_id":"","payload":{}}"#;
        let id = Uuid::now_v7();
        let ev = Event::from_file_bytes(text.as_bytes(), 1 << 16, Some(id)).unwrap();
        assert_eq!(ev.id, id);
        assert_eq!(format_timestamp(ev.timestamp), "2026-05-12T10:05:00.000Z");
        let err = Event::from_file_bytes(text.as_bytes(), 1 << 16, None).unwrap_err();
        assert!(err.to_string().starts_with("field `id` is missing"));
    }
}
