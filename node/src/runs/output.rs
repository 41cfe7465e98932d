//! What a wrapped command's output says, read line by line as it arrives: compiler warnings
//! and errors (clippy's apart), test counts, the binaries cargo built, and the last lines for
//! a failure notification.
//!
//! Cargo's JSON messages (`--message-format=json`, `json-diagnostic-rendered-ansi`) are
//! counted when present; otherwise its human output is, where cargo's own per-target
//! summaries (`warning: `x` (lib) generated 3 warnings`) are the authority and bare
//! `warning:` / `error:` lines the fallback. Nothing here can panic on what a command
//! prints: malformed JSON, stray escapes, any unicode and very long lines just count for
//! less.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ansi::{strip_ansi, visible};
use super::test_summary::{
    TestCounts, parse_libtest, parse_libtest_json, parse_nextest, parse_summary_line,
};

/// How many of the last lines a [`Summary`] keeps by default.
pub const TAIL_LINES: usize = 20;
/// A kept line longer than this is cut (at a character boundary) and ends in `…`.
const MAX_TAIL_LINE_BYTES: usize = 2048;
/// Of a longer line only the start is matched: every summary is short, and stripping
/// escapes from a megabyte line for nothing would cost a copy per line.
const MAX_MATCHED_BYTES: usize = 64 * 1024;
/// Cargo's diagnostics are kilobytes; a bigger JSON line is not one of its messages.
const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;
/// Bounds on what a runaway output can make us hold.
const MAX_EXECUTABLES: usize = 64;
const MAX_DIAGNOSTIC_KEYS: usize = 100_000;
const MAX_TARGET_SUMMARIES: usize = 4096;

/// Which of the command's outputs a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Compiler diagnostics, each counted once. `warnings` and `errors` include clippy's lints,
/// which `clippy_warnings` and `clippy_errors` count again on their own (a lint denied with
/// `-D warnings` is an error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostics {
    pub warnings: u64,
    pub errors: u64,
    pub clippy_warnings: u64,
    pub clippy_errors: u64,
}

/// Where the [`Diagnostics`] counts come from, the most reliable source seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticSource {
    /// No diagnostics at all (not a compiler's output, or a clean one).
    #[default]
    None,
    /// Cargo's JSON messages, de-duplicated.
    CargoJson,
    /// Cargo's per-target summary lines.
    CargoSummary,
    /// Bare `warning:` / `error:` lines.
    Lines,
}

/// One of the last lines of output, as a terminal would show it (escape sequences removed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailLine {
    pub stream: Stream,
    pub text: String,
}

/// What a command's whole output said.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Lines read, on both streams.
    pub lines: u64,
    pub diagnostics: Diagnostics,
    pub diagnostics_from: DiagnosticSource,
    /// The test counts of every summary seen, added up; `None` when no test runner printed
    /// one.
    pub tests: Option<TestCounts>,
    /// Cargo's `build-finished` verdict (JSON output only): false when any of the cargo
    /// invocations failed.
    pub build_succeeded: Option<bool>,
    /// Binaries cargo built (JSON output only, not test harnesses), for their sizes.
    pub executables: Vec<String>,
    /// The last lines, oldest first.
    pub tail: Vec<TailLine>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Warning,
    Error,
}

/// Reads a command's output line by line; [`OutputSummary::finish`] says what it held.
#[derive(Debug)]
pub struct OutputSummary {
    lines: u64,
    tail_capacity: usize,
    tail: VecDeque<TailLine>,
    cargo_json_seen: bool,
    json: Diagnostics,
    json_keys: HashSet<u64>,
    /// The warnings cargo said each target had (see [`remember_most`]).
    target_warnings: BTreeMap<String, u64>,
    /// The errors cargo said each target failed with.
    target_errors: BTreeMap<String, u64>,
    raw: Diagnostics,
    /// The level of the bare diagnostic line read last, for the clippy link that follows.
    open_diagnostic: Option<Level>,
    /// pytest's summaries (and any other runner's but libtest's and nextest's).
    tests: Option<TestCounts>,
    /// libtest's `test result:` lines and JSON suites.
    libtest: Option<TestCounts>,
    /// nextest's own summaries. They replace libtest's: nextest shows a failing test's
    /// captured output, and libtest's `test result:` line inside it would count it twice.
    nextest: Option<TestCounts>,
    build_succeeded: Option<bool>,
    executables: Vec<String>,
}

impl Default for OutputSummary {
    fn default() -> Self {
        Self::with_tail(TAIL_LINES)
    }
}

impl OutputSummary {
    pub fn new() -> Self {
        Self::default()
    }

    /// A summary keeping the last `tail_capacity` lines.
    pub fn with_tail(tail_capacity: usize) -> Self {
        OutputSummary {
            lines: 0,
            tail_capacity,
            tail: VecDeque::with_capacity(tail_capacity.min(1024)),
            cargo_json_seen: false,
            json: Diagnostics::default(),
            json_keys: HashSet::new(),
            target_warnings: BTreeMap::new(),
            target_errors: BTreeMap::new(),
            raw: Diagnostics::default(),
            open_diagnostic: None,
            tests: None,
            libtest: None,
            nextest: None,
            build_succeeded: None,
            executables: Vec::new(),
        }
    }

    /// Reads one line (without its newline; a trailing `\r` is ignored).
    pub fn line(&mut self, stream: Stream, line: &str) {
        self.lines = self.lines.saturating_add(1);
        let matched = prefix(line, MAX_MATCHED_BYTES);
        let shown = visible(matched);
        self.keep(stream, &shown);
        if line.len() <= MAX_JSON_BYTES && self.json_message(line.trim()) {
            return;
        }
        if let Some(tests) = parse_nextest(&shown) {
            add(&mut self.nextest, tests);
            return;
        }
        if let Some(tests) = parse_libtest(&shown) {
            add(&mut self.libtest, tests);
            return;
        }
        if let Some(tests) = parse_summary_line(&shown) {
            add(&mut self.tests, tests);
            return;
        }
        self.human_line(&shown);
    }

    /// What the output said.
    pub fn finish(self) -> Summary {
        let summary_warnings = sum(&self.target_warnings);
        let summary_errors = sum(&self.target_errors);
        let (diagnostics, diagnostics_from) = if self.cargo_json_seen {
            (self.json, DiagnosticSource::CargoJson)
        } else if summary_warnings.is_some() || summary_errors.is_some() {
            let warnings = summary_warnings.unwrap_or(self.raw.warnings);
            let errors = summary_errors.unwrap_or(self.raw.errors);
            let diagnostics = Diagnostics {
                warnings,
                errors,
                clippy_warnings: self.raw.clippy_warnings.min(warnings),
                clippy_errors: self.raw.clippy_errors.min(errors),
            };
            (diagnostics, DiagnosticSource::CargoSummary)
        } else if self.raw != Diagnostics::default() {
            (self.raw, DiagnosticSource::Lines)
        } else {
            (Diagnostics::default(), DiagnosticSource::None)
        };
        Summary {
            lines: self.lines,
            diagnostics,
            diagnostics_from,
            tests: [self.nextest.or(self.libtest), self.tests]
                .into_iter()
                .flatten()
                .reduce(TestCounts::plus),
            build_succeeded: self.build_succeeded,
            executables: self.executables,
            tail: self.tail.into(),
        }
    }

    fn keep(&mut self, stream: Stream, shown: &str) {
        if self.tail_capacity == 0 {
            return;
        }
        if self.tail.len() == self.tail_capacity {
            self.tail.pop_front();
        }
        let text = if shown.len() > MAX_TAIL_LINE_BYTES {
            format!("{}…", prefix(shown, MAX_TAIL_LINE_BYTES))
        } else {
            shown.to_owned()
        };
        self.tail.push_back(TailLine { stream, text });
    }

    /// Reads a cargo or libtest JSON message; false when `line` is not one.
    fn json_message(&mut self, line: &str) -> bool {
        if !(line.starts_with('{') && line.ends_with('}')) {
            return false;
        }
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        if let Some(tests) = parse_libtest_json(&message) {
            add(&mut self.libtest, tests);
            return true;
        }
        let Some(reason) = message.get("reason").and_then(Value::as_str) else {
            return false;
        };
        self.cargo_json_seen = true;
        match reason {
            "compiler-message" => self.json_diagnostic(&message),
            "compiler-artifact" => self.json_artifact(&message),
            "build-finished" => {
                if let Some(success) = message.get("success").and_then(Value::as_bool) {
                    self.build_succeeded = Some(self.build_succeeded.unwrap_or(true) && success);
                }
            }
            _ => {}
        }
        true
    }

    fn json_diagnostic(&mut self, message: &Value) {
        let Some(diagnostic) = message.get("message") else {
            return;
        };
        let level = match diagnostic.get("level").and_then(Value::as_str) {
            Some("warning") => Level::Warning,
            Some(level) if level.starts_with("error") => Level::Error,
            _ => return,
        };
        let text = diagnostic
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if is_compiler_tally(text) {
            return;
        }
        // Cargo reports a diagnostic once per target that compiles the file (lib, then lib
        // test): the same text at the same place is the same warning.
        let mut hasher = DefaultHasher::new();
        (level == Level::Warning).hash(&mut hasher);
        match diagnostic.get("rendered").and_then(Value::as_str) {
            Some(rendered) => strip_ansi(rendered).hash(&mut hasher),
            None => {
                text.hash(&mut hasher);
                primary_span(diagnostic).hash(&mut hasher);
            }
        }
        let key = hasher.finish();
        if self.json_keys.contains(&key) {
            return;
        }
        if self.json_keys.len() < MAX_DIAGNOSTIC_KEYS {
            self.json_keys.insert(key);
        }
        let clippy = diagnostic
            .get("code")
            .and_then(|code| code.get("code"))
            .and_then(Value::as_str)
            .is_some_and(|code| code.starts_with("clippy::"));
        count(&mut self.json, level, clippy);
    }

    fn json_artifact(&mut self, message: &Value) {
        let Some(executable) = message.get("executable").and_then(Value::as_str) else {
            return;
        };
        let is_test = message
            .get("profile")
            .and_then(|p| p.get("test"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if is_test || self.executables.len() >= MAX_EXECUTABLES {
            return;
        }
        if !self.executables.iter().any(|e| e == executable) {
            self.executables.push(executable.to_owned());
        }
    }

    fn human_line(&mut self, shown: &str) {
        if let Some((target, warnings)) = generated_warnings(shown) {
            remember_most(&mut self.target_warnings, target, warnings);
            return;
        }
        if let Some((target, errors, warnings)) = could_not_compile(shown) {
            remember_most(&mut self.target_errors, target, errors);
            if let Some(warnings) = warnings {
                remember_most(&mut self.target_warnings, target, warnings);
            }
            return;
        }
        if let Some(level) = diagnostic_line(shown) {
            count(&mut self.raw, level, false);
            self.open_diagnostic = Some(level);
            return;
        }
        // Clippy ends each of its lints with a link to the lint's documentation.
        if shown.contains("rust-clippy/")
            && shown.contains("index.html#")
            && let Some(level) = self.open_diagnostic.take()
        {
            match level {
                Level::Warning => {
                    self.raw.clippy_warnings = self.raw.clippy_warnings.saturating_add(1)
                }
                Level::Error => self.raw.clippy_errors = self.raw.clippy_errors.saturating_add(1),
            }
        }
    }
}

/// Notes that cargo said `target` had `n` diagnostics: the most it ever said (a failed target
/// is summed up twice, and every later cargo invocation replays the warnings of a target).
fn remember_most(said: &mut BTreeMap<String, u64>, target: &str, n: u64) {
    if let Some(known) = said.get_mut(target) {
        *known = (*known).max(n);
    } else if said.len() < MAX_TARGET_SUMMARIES {
        said.insert(target.to_owned(), n);
    }
}

/// The diagnostics of all targets; `None` when cargo summed up none.
fn sum(said: &BTreeMap<String, u64>) -> Option<u64> {
    (!said.is_empty()).then(|| said.values().fold(0u64, |all, n| all.saturating_add(*n)))
}

fn count(diagnostics: &mut Diagnostics, level: Level, clippy: bool) {
    let (all, lints) = match level {
        Level::Warning => (&mut diagnostics.warnings, &mut diagnostics.clippy_warnings),
        Level::Error => (&mut diagnostics.errors, &mut diagnostics.clippy_errors),
    };
    *all = all.saturating_add(1);
    if clippy {
        *lints = lints.saturating_add(1);
    }
}

/// `text` up to `max` bytes, cut at a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

/// The file, line and column of a JSON diagnostic's primary span.
fn primary_span(diagnostic: &Value) -> Option<(&str, u64, u64)> {
    let spans = diagnostic.get("spans")?.as_array()?;
    let span = spans
        .iter()
        .find(|s| s.get("is_primary").and_then(Value::as_bool) == Some(true))?;
    Some((
        span.get("file_name")?.as_str()?,
        span.get("line_start")?.as_u64()?,
        span.get("column_start")?.as_u64()?,
    ))
}

/// rustc's own closing tallies (`aborting due to 2 previous errors`, `3 warnings emitted`),
/// which are no diagnostics of their own.
fn is_compiler_tally(text: &str) -> bool {
    text.starts_with("aborting due to")
        || (text.starts_with(|c: char| c.is_ascii_digit())
            && (text.ends_with(" emitted") || text.contains(" emitted;")))
}

/// `warning: `x` (lib test) generated 3 warnings (2 duplicates) (run `cargo fix` ...)`: the
/// target (`` `x` (lib test) ``) and its warnings not already counted for another target.
fn generated_warnings(line: &str) -> Option<(&str, u64)> {
    let rest = line.strip_prefix("warning: ")?;
    if !rest.starts_with('`') {
        return None;
    }
    let (target, said) = rest.split_once(" generated ")?;
    let (total, after) = said.split_once(' ')?;
    if !after.starts_with("warning") {
        return None;
    }
    Some((target, unique(total.parse().ok()?, after)))
}

/// Of `total` diagnostics, those not among the `(N duplicates)` that `tally` mentions.
fn unique(total: u64, tally: &str) -> u64 {
    let duplicates = tally
        .split_once('(')
        .and_then(|(_, d)| d.split_once(" duplicate"))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .unwrap_or(0);
    total.saturating_sub(duplicates)
}

/// `error: could not compile `x` (lib) due to 2 previous errors; 3 warnings emitted` (older
/// cargo: `due to previous error`): the target, its errors and its warnings.
fn could_not_compile(line: &str) -> Option<(&str, u64, Option<u64>)> {
    let rest = line.strip_prefix("error: could not compile ")?;
    let (target, said) = rest.split_once(" due to ")?;
    let (errors, warnings) = match said.split_once("; ") {
        Some((errors, warnings)) => (errors, Some(warnings)),
        None => (said, None),
    };
    let errors = if errors.starts_with("previous error") {
        1
    } else {
        errors.split_once(' ')?.0.parse().ok()?
    };
    let warnings = warnings
        .and_then(|w| w.split_once(' '))
        .and_then(|(n, tally)| Some(unique(n.parse().ok()?, tally)));
    Some((target, errors, warnings))
}

/// A bare compiler diagnostic line (`warning: ...`, `error[E0308]: ...`), leaving out cargo's
/// and rustc's own bookkeeping, which counts nothing new.
fn diagnostic_line(line: &str) -> Option<Level> {
    let (level, rest) = if let Some(rest) = line.strip_prefix("warning") {
        (Level::Warning, rest)
    } else if let Some(rest) = line.strip_prefix("error") {
        (Level::Error, rest)
    } else {
        return None;
    };
    let message = match rest.strip_prefix('[') {
        Some(coded) => coded.split_once("]: ")?.1,
        None => rest.strip_prefix(": ")?,
    };
    let bookkeeping = is_compiler_tally(message)
        || message.starts_with("build failed, waiting for other jobs")
        || message.contains("failed, to rerun pass")
        || (message.starts_with(|c: char| c.is_ascii_digit()) && message.contains(" target"))
        || message.starts_with("could not compile");
    (!bookkeeping).then_some(level)
}

fn add(total: &mut Option<TestCounts>, tests: TestCounts) {
    *total = Some(total.unwrap_or_default().plus(tests));
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
