use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::*;

fn summarise<'a>(lines: impl IntoIterator<Item = &'a str>) -> Summary {
    let mut output = OutputSummary::new();
    for line in lines {
        output.line(Stream::Stderr, line);
    }
    output.finish()
}

fn compiler_message(
    target: &str,
    level: &str,
    code: Option<&str>,
    text: &str,
    line: u64,
) -> String {
    json!({
        "reason": "compiler-message",
        "package_id": "path+file:///src/demo#0.1.0",
        "target": {"kind": [target], "name": "demo"},
        "message": {
            "$message_type": "diagnostic",
            "level": level,
            "message": text,
            "code": code.map(|c| json!({"code": c, "explanation": null})),
            "spans": [{"file_name": "src/lib.rs", "line_start": line, "column_start": 5,
                       "is_primary": true}],
            "rendered": format!("\u{1b}[33m{level}\u{1b}[0m: {text}\n --> src/lib.rs:{line}:5\n"),
            "children": [],
        }
    })
    .to_string()
}

#[test]
fn cargo_json_counts_each_diagnostic_once_and_clippy_apart() {
    let lines = [
        compiler_message(
            "lib",
            "warning",
            Some("unused_variables"),
            "unused variable: `x`",
            1,
        ),
        compiler_message(
            "lib",
            "warning",
            Some("clippy::needless_return"),
            "unneeded `return`",
            2,
        ),
        // The lib test target reports the lib's diagnostics again.
        compiler_message(
            "test",
            "warning",
            Some("unused_variables"),
            "unused variable: `x`",
            1,
        ),
        compiler_message(
            "test",
            "warning",
            Some("clippy::needless_return"),
            "unneeded `return`",
            2,
        ),
        compiler_message(
            "test",
            "warning",
            Some("unused_variables"),
            "unused variable: `z`",
            9,
        ),
        compiler_message("lib", "error", Some("E0308"), "mismatched types", 4),
        compiler_message(
            "lib",
            "error",
            Some("clippy::unwrap_used"),
            "used `unwrap()`",
            5,
        ),
        compiler_message("lib", "error", None, "aborting due to 2 previous errors", 0),
        compiler_message("lib", "warning", None, "3 warnings emitted", 0),
        compiler_message(
            "lib",
            "failure-note",
            None,
            "For more information, try rustc",
            0,
        ),
        compiler_message("lib", "note", None, "a note", 0),
        // Cargo's own human lines on stderr, which the JSON already covers.
        "warning: `demo` (lib) generated 2 warnings".to_owned(),
        "{\"reason\": \"compiler-message\", \"message\": 7}".to_owned(),
        "{not json at all}".to_owned(),
        json!({"reason": "build-finished", "success": false}).to_string(),
    ];
    let summary = summarise(lines.iter().map(String::as_str));
    assert_eq!(summary.diagnostics_from, DiagnosticSource::CargoJson);
    assert_eq!(
        summary.diagnostics,
        Diagnostics {
            warnings: 3,
            errors: 2,
            clippy_warnings: 1,
            clippy_errors: 1,
        }
    );
    assert_eq!(summary.build_succeeded, Some(false));
    assert_eq!(summary.lines, lines.len() as u64);
}

#[test]
fn cargo_json_without_rendered_text_keys_on_message_and_span() {
    let message = |line: u64| {
        json!({"reason": "compiler-message", "message": {
            "level": "warning", "message": "unused", "code": null,
            "spans": [{"file_name": "a.rs", "line_start": line, "column_start": 1, "is_primary": true}]
        }})
        .to_string()
    };
    let (first, again, elsewhere) = (message(1), message(1), message(2));
    let summary = summarise([first.as_str(), again.as_str(), elsewhere.as_str()]);
    assert_eq!(summary.diagnostics.warnings, 2);
}

#[test]
fn cargo_json_lists_built_binaries_but_not_test_harnesses() {
    let artifact = |executable: Option<&str>, test: bool| {
        json!({"reason": "compiler-artifact", "executable": executable,
               "profile": {"test": test}, "target": {"kind": ["bin"]}})
        .to_string()
    };
    let lines = [
        artifact(None, false),
        artifact(Some("/t/release/labmesh"), false),
        artifact(Some("/t/release/deps/labmesh-0123"), true),
        artifact(Some("/t/release/labmesh"), false),
        json!({"reason": "build-finished", "success": true}).to_string(),
    ];
    let then_failed = [
        json!({"reason": "build-finished", "success": false}).to_string(),
        json!({"reason": "build-finished", "success": true}).to_string(),
    ];
    assert_eq!(
        summarise(then_failed.iter().map(String::as_str)).build_succeeded,
        Some(false)
    );
    let summary = summarise(lines.iter().map(String::as_str));
    assert_eq!(summary.executables, vec!["/t/release/labmesh".to_owned()]);
    assert_eq!(summary.build_succeeded, Some(true));
    assert_eq!(summary.diagnostics_from, DiagnosticSource::CargoJson);
    assert_eq!(summary.diagnostics, Diagnostics::default());
}

/// `cargo test` on a crate with two warnings in the lib and one more in its tests (cargo
/// 1.95's output, abridged).
const CARGO_TEST_OUTPUT: &str = "\
   Compiling wdemo v0.1.0 (/tmp/wdemo)
warning: unused variable: `x`
 --> src/lib.rs:1:25
  |
1 | pub fn f() -> i32 { let x = 1; let y = 2; return 3; }
  |                         ^ help: if this is intentional, prefix it with an underscore: `_x`
warning: unused variable: `y`
 --> src/lib.rs:1:36
warning: `wdemo` (lib) generated 2 warnings (run `cargo fix --lib -p wdemo` to apply 2 suggestions)
warning: unused variable: `z`
 --> src/lib.rs:3:35
warning: `wdemo` (lib test) generated 3 warnings (2 duplicates) (run `cargo fix --lib -p wdemo --tests` to apply 1 suggestion)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 0.26s
     Running unittests src/lib.rs (target/debug/deps/wdemo-89369efe7607acfb)

running 2 tests
test tests::i ... ignored
test tests::t ... ok

test result: ok. 1 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests wdemo

running 3 tests
test src/lib.rs - f (line 3) ... FAILED
test src/lib.rs - g (line 9) ... ok
test src/lib.rs - h (line 12) ... ok

test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.20s

error: doctest failed, to rerun pass `--doc`
";

#[test]
fn cargo_summaries_count_warnings_and_tests_add_up_over_binaries() {
    let summary = summarise(CARGO_TEST_OUTPUT.lines());
    assert_eq!(summary.diagnostics_from, DiagnosticSource::CargoSummary);
    assert_eq!(summary.diagnostics.warnings, 3);
    assert_eq!(
        summary.tests,
        Some(TestCounts {
            run: 4,
            passed: 3,
            failed: 1,
            ignored: 1,
        })
    );
}

#[test]
fn a_failed_target_is_summed_up_once_and_its_errors_counted() {
    let output = "\
error[E0308]: mismatched types
warning: unused variable: `x`
warning: unused variable: `y`
warning: unused variable: `q`
warning: `wdemo` (lib) generated 3 warnings
error: could not compile `wdemo` (lib) due to 1 previous error; 3 warnings emitted
error: could not compile `other` due to previous error
warning: build failed, waiting for other jobs to finish...
";
    let summary = summarise(output.lines());
    assert_eq!(summary.diagnostics_from, DiagnosticSource::CargoSummary);
    assert_eq!(summary.diagnostics.warnings, 3);
    assert_eq!(summary.diagnostics.errors, 2);
}

#[test]
fn a_second_cargo_invocation_replaying_warnings_counts_them_once() {
    let output = "\
warning: `demo` (lib) generated 2 warnings
    Finished `dev` profile
warning: `demo` (lib) generated 2 warnings
warning: `demo` (lib test) generated 3 warnings (2 duplicates)
";
    assert_eq!(summarise(output.lines()).diagnostics.warnings, 3);
}

#[test]
fn clippy_lints_are_told_apart_by_their_documentation_link() {
    let output = "\
warning: unused variable: `x`
  = note: `#[warn(unused_variables)]` on by default
warning: unneeded `return` statement
  = help: for further information visit https://rust-lang.github.io/rust-clippy/rust-1.95.0/index.html#needless_return
  = note: `#[warn(clippy::needless_return)]` on by default
error: used `unwrap()` on an `Option` value
  = help: for further information visit https://rust-lang.github.io/rust-clippy/master/index.html#unwrap_used
  = help: for further information visit https://rust-lang.github.io/rust-clippy/master/index.html#unwrap_used
warning: `wdemo` (lib) generated 2 warnings
error: could not compile `wdemo` (lib) due to 1 previous error; 2 warnings emitted
";
    let summary = summarise(output.lines());
    assert_eq!(
        summary.diagnostics,
        Diagnostics {
            warnings: 2,
            errors: 1,
            clippy_warnings: 1,
            clippy_errors: 1,
        }
    );
}

#[test]
fn bare_diagnostic_lines_count_without_cargo_summaries() {
    let output = "\
\u{1b}[1m\u{1b}[33mwarning\u{1b}[0m: unused manifest key: package.foo
warning[E0170]: pattern binding named like a variant
error[E0425]: cannot find value `x` in this scope
error: linker `cc` not found
error: aborting due to 2 previous errors
warning: 1 warning emitted
error: test failed, to rerun pass `--lib`
error: 2 targets failed:
    warning: indented lines are someone else's
note: warning: not at the start
warningless line
error:missing space
";
    let summary = summarise(output.lines());
    assert_eq!(summary.diagnostics_from, DiagnosticSource::Lines);
    assert_eq!(
        summary.diagnostics,
        Diagnostics {
            warnings: 2,
            errors: 2,
            clippy_warnings: 0,
            clippy_errors: 0,
        }
    );
}

#[test]
fn no_diagnostics_and_no_tests_say_so() {
    let summary = summarise(["deploying nas1", "done in 3s", ""]);
    assert_eq!(summary.diagnostics_from, DiagnosticSource::None);
    assert_eq!(summary.diagnostics, Diagnostics::default());
    assert_eq!(summary.tests, None);
    assert_eq!(summary.build_succeeded, None);
}

#[test]
fn coloured_nextest_and_pytest_summaries_are_read() {
    let summary = summarise([
        "------------",
        "\u{1b}[32;1m     Summary\u{1b}[0m [   0.123s] \u{1b}[1m12\u{1b}[0m tests run: \
         \u{1b}[1m11\u{1b}[0m \u{1b}[32;1mpassed\u{1b}[0m, \u{1b}[1m1\u{1b}[0m \
         \u{1b}[31;1mfailed\u{1b}[0m, \u{1b}[1m2\u{1b}[0m \u{1b}[33;1mskipped\u{1b}[0m",
        "\u{1b}[31m==== \u{1b}[31m\u{1b}[1m1 failed\u{1b}[0m, \u{1b}[32m3 passed\u{1b}[0m\
         \u{1b}[31m in 0.05s\u{1b}[0m\u{1b}[31m ====\u{1b}[0m\r",
    ]);
    assert_eq!(
        summary.tests,
        Some(TestCounts {
            run: 16,
            passed: 14,
            failed: 2,
            ignored: 2,
        })
    );
}

#[test]
fn a_libtest_line_inside_nextest_s_captured_output_is_not_counted_again() {
    let summary = summarise([
        "        FAIL [   0.004s] demo::bin/demo tests::fails",
        "--- STDOUT:              demo::bin/demo tests::fails ---",
        "running 1 test",
        "test tests::fails ... FAILED",
        "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 2 filtered out; finished in 0.00s",
        "     Summary [   0.010s] 2 tests run: 1 passed, 1 failed, 1 skipped",
    ]);
    assert_eq!(
        summary.tests,
        Some(TestCounts {
            run: 2,
            passed: 1,
            failed: 1,
            ignored: 1,
        })
    );
}

#[test]
fn libtest_json_suites_add_up() {
    let suite = |passed: u64, failed: u64| {
        json!({"type": "suite", "event": if failed > 0 { "failed" } else { "ok" },
               "passed": passed, "failed": failed, "ignored": 1})
        .to_string()
    };
    let (a, b) = (suite(3, 0), suite(1, 2));
    let summary = summarise([a.as_str(), b.as_str()]);
    assert_eq!(
        summary.tests,
        Some(TestCounts {
            run: 6,
            passed: 4,
            failed: 2,
            ignored: 2,
        })
    );
    // libtest's JSON is no cargo message: diagnostics still come from text lines.
    assert_eq!(summary.diagnostics_from, DiagnosticSource::None);
}

#[test]
fn the_tail_keeps_the_last_lines_as_shown_and_cut_short() {
    let mut output = OutputSummary::with_tail(3);
    for i in 0..10 {
        let stream = if i % 2 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        output.line(stream, &format!("\u{1b}[1mline {i}\u{1b}[0m\r"));
    }
    let long = "é".repeat(MAX_TAIL_LINE_BYTES);
    output.line(Stream::Stdout, &long);
    let summary = output.finish();
    assert_eq!(summary.lines, 11);
    let texts: Vec<&str> = summary.tail.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts[..2], ["line 8", "line 9"]);
    assert_eq!(summary.tail[1].stream, Stream::Stderr);
    let cut = &summary.tail[2].text;
    assert!(cut.len() <= MAX_TAIL_LINE_BYTES + '…'.len_utf8());
    assert!(cut.ends_with('…') && cut.starts_with("éé"));

    let mut silent = OutputSummary::with_tail(0);
    silent.line(Stream::Stdout, "x");
    assert!(silent.finish().tail.is_empty());
}

#[test]
fn a_huge_line_is_matched_by_its_start_only() {
    let mut huge = String::from("warning: unused variable: `x` ");
    huge.push_str(&"ünï".repeat(200_000));
    huge.push_str(" test result: ok. 1 passed; 0 failed;");
    let summary = summarise([huge.as_str()]);
    assert_eq!(summary.diagnostics.warnings, 1);
    assert_eq!(summary.tests, None);
}

/// Fragments that steer lines into every parser, for the random lines below.
const FRAGMENTS: [&str; 24] = [
    "warning: ",
    "error[E0308]: ",
    "error: could not compile `",
    "warning: `x` (lib) generated ",
    " due to ",
    " duplicate",
    "test result: ok. ",
    " passed; ",
    "     Summary [",
    "] ",
    " tests run: ",
    " in 0.1s",
    "==== ",
    "(",
    ")",
    "{\"reason\":\"compiler-message\",\"message\":{\"level\":\"warning\"",
    "{\"type\":\"suite\",\"event\":\"ok\",\"passed\":",
    "}",
    "\u{1b}[",
    "\u{1b}]8;;",
    "\r",
    "18446744073709551615",
    "é🦀\u{0}\u{7f}",
    "rust-clippy/x/index.html#",
];

#[test]
fn random_output_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x1abe5);
    let mut output = OutputSummary::with_tail(5);
    for _ in 0..5_000 {
        let line = if rng.random_bool(0.3) {
            let bytes: Vec<u8> = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            let mut line = String::new();
            for _ in 0..rng.random_range(0..8) {
                if rng.random_bool(0.7) {
                    line.push_str(FRAGMENTS[rng.random_range(0..FRAGMENTS.len())]);
                } else {
                    line.push_str(&rng.random_range(0..1000u32).to_string());
                }
            }
            line
        };
        let stream = if rng.random_bool(0.5) {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        output.line(stream, &line);
    }
    let summary = output.finish();
    assert_eq!(summary.lines, 5_000);
    assert_eq!(summary.tail.len(), 5);
}
