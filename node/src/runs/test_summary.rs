//! The test counts a test runner's summary line states: libtest's (`cargo test`, once per
//! test binary and doc-test run), cargo-nextest's final `Summary` and pytest's. Each parser
//! takes a line as a terminal shows it (see [`super::ansi::visible`]) and answers `None` for
//! anything that is not exactly such a summary, so ordinary output never counts.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How many tests ran, and how they ended. `run` counts the tests that were executed
/// (`passed + failed`); `ignored` ones (skipped, `#[ignore]`, pytest's xfail) were not
/// counted as either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCounts {
    pub run: u64,
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl TestCounts {
    /// The counts of two summaries together (several test binaries, or several runners in
    /// one script).
    pub fn plus(self, other: TestCounts) -> TestCounts {
        TestCounts {
            run: self.run.saturating_add(other.run),
            passed: self.passed.saturating_add(other.passed),
            failed: self.failed.saturating_add(other.failed),
            ignored: self.ignored.saturating_add(other.ignored),
        }
    }
}

/// The counts a summary line of any known runner states.
pub fn parse_summary_line(line: &str) -> Option<TestCounts> {
    parse_libtest(line)
        .or_else(|| parse_nextest(line))
        .or_else(|| parse_pytest(line))
}

/// libtest: `test result: ok. 5 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out;
/// finished in 0.01s` (the status word is `ok` or `FAILED`).
pub fn parse_libtest(line: &str) -> Option<TestCounts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (status, counts) = rest.split_once(". ")?;
    if !matches!(status, "ok" | "FAILED") {
        return None;
    }
    let (mut passed, mut failed, mut ignored) = (None, None, None);
    for item in counts.split(';') {
        match counted_item(item) {
            Some((n, "passed")) => passed = Some(n),
            Some((n, "failed")) => failed = Some(n),
            Some((n, "ignored")) => ignored = Some(n),
            _ => {}
        }
    }
    let (passed, failed) = (passed?, failed?);
    Some(TestCounts {
        run: passed.saturating_add(failed),
        passed,
        failed,
        ignored: ignored.unwrap_or(0),
    })
}

/// cargo-nextest's last line: `Summary [   0.123s] 12 tests run: 11 passed (1 slow, 1
/// flaky, 1 leaky), 1 failed (1 due to being leaky), 1 exec failed, 1 timed out, 2 skipped`,
/// or `3/10 tests run: ...` after a cancelled run (3 finished of 10 planned). Flaky tests
/// are among the passed ones (they passed on a retry); exec failures and time-outs are
/// failures.
pub fn parse_nextest(line: &str) -> Option<TestCounts> {
    let rest = line.trim().strip_prefix("Summary [")?;
    let (_elapsed, rest) = rest.split_once("] ")?;
    let (finished, outcomes) = rest.split_once(" run: ")?;
    let finished = finished
        .strip_suffix(" tests")
        .or_else(|| finished.strip_suffix(" test"))?;
    let finished = finished.split('/').next()?.trim().parse::<u64>().ok()?;
    let (mut passed, mut failed, mut ignored) = (None, 0u64, 0u64);
    for item in without_parentheticals(outcomes).split(',') {
        match counted_item(item) {
            Some((n, "passed")) => passed = Some(n),
            Some((n, "failed" | "exec failed" | "timed out")) => failed = failed.saturating_add(n),
            Some((n, "skipped")) => ignored = ignored.saturating_add(n),
            Some(_) => {}
            None => return None,
        }
    }
    Some(TestCounts {
        run: finished,
        passed: passed?,
        failed,
        ignored,
    })
}

/// pytest's closing line: `==== 3 failed, 10 passed, 2 skipped, 1 xfailed in 1.23s ====`,
/// with `-q` just `1 passed in 0.01s`, after a long run `... in 75.20s (0:01:15)`, and
/// `no tests ran in 0.01s`. Errors (in setup or collection) are failures, xpassed tests
/// passed, xfailed ones (expected failures) are counted as ignored, deselected and
/// warnings not at all.
pub fn parse_pytest(line: &str) -> Option<TestCounts> {
    let line = line.trim().trim_matches('=').trim();
    let (counts, elapsed) = line.rsplit_once(" in ")?;
    if !is_pytest_elapsed(elapsed) {
        return None;
    }
    if counts == "no tests ran" {
        return Some(TestCounts::default());
    }
    let mut tests = TestCounts::default();
    for item in counts.split(',') {
        let (n, word) = counted_item(item)?;
        match word {
            "passed" | "xpassed" => tests.passed = tests.passed.saturating_add(n),
            "failed" | "error" | "errors" => tests.failed = tests.failed.saturating_add(n),
            "skipped" | "xfailed" => tests.ignored = tests.ignored.saturating_add(n),
            "deselected" | "warning" | "warnings" | "rerun" | "reruns" => {}
            _ => return None,
        }
    }
    tests.run = tests.passed.saturating_add(tests.failed);
    Some(tests)
}

/// libtest's JSON output (`cargo test -- -Z unstable-options --format json`): the
/// `{"type": "suite", "event": "ok"|"failed", "passed": 5, ...}` message ending a binary.
pub fn parse_libtest_json(message: &Value) -> Option<TestCounts> {
    if message.get("type")?.as_str()? != "suite" {
        return None;
    }
    if !matches!(message.get("event")?.as_str()?, "ok" | "failed") {
        return None;
    }
    let count = |field: &str| message.get(field).and_then(Value::as_u64);
    let (passed, failed) = (count("passed")?, count("failed")?);
    Some(TestCounts {
        run: passed.saturating_add(failed),
        passed,
        failed,
        ignored: count("ignored").unwrap_or(0),
    })
}

/// `"12 passed"` as `(12, "passed")`; `"1 exec failed"` as `(1, "exec failed")`.
fn counted_item(item: &str) -> Option<(u64, &str)> {
    let (n, word) = item.trim().split_once(' ')?;
    Some((n.parse().ok()?, word.trim()))
}

/// `1.23s`, `0.01s (0:00:00)`: pytest's elapsed time, so that only its summary matches.
fn is_pytest_elapsed(elapsed: &str) -> bool {
    let seconds = match elapsed.split_once(' ') {
        Some((seconds, clock)) if clock.starts_with('(') && clock.ends_with(')') => seconds,
        Some(_) => return false,
        None => elapsed,
    };
    seconds
        .strip_suffix('s')
        .is_some_and(|s| !s.is_empty() && s.parse::<f64>().is_ok())
}

/// `text` without its `( ... )` groups, which hold commas of their own.
fn without_parentheticals(text: &str) -> String {
    let mut depth = 0usize;
    let mut kept = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '(' => depth = depth.saturating_add(1),
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => kept.push(c),
            _ => {}
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(run: u64, passed: u64, failed: u64, ignored: u64) -> Option<TestCounts> {
        Some(TestCounts {
            run,
            passed,
            failed,
            ignored,
        })
    }

    #[test]
    fn libtest_summaries() {
        assert_eq!(
            parse_summary_line(
                "test result: ok. 5 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; \
                 finished in 0.01s"
            ),
            counts(6, 5, 1, 2)
        );
        assert_eq!(
            parse_summary_line(
                "test result: FAILED. 0 passed; 3 failed; 0 ignored; 0 measured; 7 filtered out; \
                 finished in 12.00s"
            ),
            counts(3, 0, 3, 0)
        );
        // Older toolchains print no `finished in`.
        assert_eq!(
            parse_summary_line("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured"),
            counts(1, 1, 0, 0)
        );
        for not_a_summary in [
            "test result: maybe. 1 passed; 0 failed",
            "test result: ok. lots passed; 0 failed",
            "test tests::x ... ok",
            "running 5 tests",
        ] {
            assert_eq!(parse_summary_line(not_a_summary), None, "{not_a_summary}");
        }
    }

    #[test]
    fn nextest_summaries() {
        for (line, expected) in [
            (
                "     Summary [   0.123s] 12 tests run: 11 passed, 1 failed, 2 skipped",
                counts(12, 11, 1, 2),
            ),
            (
                "     Summary [   0.010s] 1 test run: 1 passed, 0 skipped",
                counts(1, 1, 0, 0),
            ),
            (
                "     Summary [  10.500s] 20 tests run: 17 passed (2 slow, 1 flaky, 1 leaky), \
                 1 failed (1 due to being leaky), 1 exec failed, 1 timed out, 3 skipped",
                counts(20, 17, 3, 3),
            ),
            (
                "     Summary [   3.000s] 3/10 tests run: 2 passed, 1 failed, 4 skipped",
                counts(3, 2, 1, 4),
            ),
        ] {
            assert_eq!(parse_summary_line(line), expected, "{line}");
        }
        for not_a_summary in [
            "     Summary [   0.1s] 1 tests run: lots passed",
            "     Summary [   0.1s] no tests",
            "     Starting 12 tests across 3 binaries",
            "        PASS [   0.004s] labmesh runs::tests::x",
        ] {
            assert_eq!(parse_summary_line(not_a_summary), None, "{not_a_summary}");
        }
    }

    #[test]
    fn pytest_summaries() {
        for (line, expected) in [
            (
                "==== 3 failed, 10 passed, 2 skipped, 1 xfailed in 1.23s ====",
                counts(13, 10, 3, 3),
            ),
            ("1 passed in 0.01s", counts(1, 1, 0, 0)),
            (
                "=== 2 passed, 1 xpassed, 1 error, 3 warnings, 4 deselected in 75.20s (0:01:15) ===",
                counts(4, 3, 1, 0),
            ),
            ("====== no tests ran in 0.01s ======", counts(0, 0, 0, 0)),
        ] {
            assert_eq!(parse_summary_line(line), expected, "{line}");
        }
        for not_a_summary in [
            "3 passed in the end",
            "copied 3 files in 2s flat",
            "1 passed, 2 apples in 0.1s",
            "== short test summary info ==",
            "in 0.1s",
        ] {
            assert_eq!(parse_summary_line(not_a_summary), None, "{not_a_summary}");
        }
    }

    #[test]
    fn libtest_json_suite_messages() {
        let ok = serde_json::json!({
            "type": "suite", "event": "ok", "passed": 4, "failed": 0, "ignored": 1,
            "measured": 0, "filtered_out": 0, "exec_time": 0.01
        });
        assert_eq!(parse_libtest_json(&ok), counts(4, 4, 0, 1));
        let started = serde_json::json!({"type": "suite", "event": "started", "test_count": 5});
        assert_eq!(parse_libtest_json(&started), None);
        let test = serde_json::json!({"type": "test", "event": "ok", "name": "x"});
        assert_eq!(parse_libtest_json(&test), None);
    }

    #[test]
    fn counts_add_up_without_overflow() {
        let big = TestCounts {
            run: u64::MAX,
            passed: 1,
            failed: 2,
            ignored: 3,
        };
        assert_eq!(big.plus(big), counts(u64::MAX, 2, 4, 6).unwrap_or_default());
    }
}
