//! The `[[check]]` error messages: each names the line, the key and the fix.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    check: Vec<Spanned<RawCheck>>,
}

/// Parses and validates `text`; the error as the loader prints it after the file name.
fn load(text: &str) -> Result<Vec<CheckDef>, String> {
    let file: File = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let (line, _) = line_col(text, span.start);
        format!("line {line}: {}", e.message())
    })?;
    validate_all(text, &file.check).map_err(|e| describe(text, &e))
}

fn error(text: &str) -> String {
    load(text).unwrap_err()
}

#[test]
fn every_kind_with_defaults() {
    let defs = load(
        r#"
[[check]]
name = "web"
kind = "http"
url = "http://127.0.0.1:8080/health"

[[check]]
name = "db"
kind = "tcp"
address = "db.lan:5432"
service = "postgres"
interval = "10s"
timeout = 2
fall = 5
rise = 1

[[check]]
name = "disk"
kind = "command"
command = "df -h / | tail -1"

[[check]]
name = "pg"
kind = "command"
command = ["pg_isready", "-h", "127.0.0.1"]
expect_status_is_not_here = false
"#,
    );
    // The last table has a key no kind has: serde's unknown-field error, with its line.
    let e = defs.unwrap_err();
    assert!(
        e.starts_with("line 26: unknown field `expect_status_is_not_here`"),
        "{e}"
    );
    let defs = load(
        r#"
[[check]]
name = "web"
kind = "http"
url = "http://127.0.0.1:8080/health"

[[check]]
name = "db"
kind = "tcp"
address = "db.lan:5432"
service = "postgres"
interval = "10s"
timeout = 2
fall = 5
rise = 1

[[check]]
name = "disk"
kind = "command"
command = "df -h / | tail -1"

[[check]]
name = "pg"
kind = "command"
command = ["pg_isready", "-h", "127.0.0.1"]

[[check]]
name = "jellyfin"
kind = "docker"
container = "jellyfin"

[[check]]
name = "backup"
kind = "ttl"
ttl = "25h"
"#,
    )
    .unwrap();
    assert_eq!(defs.len(), 6);
    let web = &defs[0];
    assert_eq!(
        (
            web.service.as_str(),
            web.interval,
            web.timeout,
            web.fall,
            web.rise
        ),
        ("web", DEFAULT_INTERVAL, DEFAULT_TIMEOUT, 3, 2)
    );
    assert!(
        matches!(&web.probe, Probe::Http { expect, body_contains: None, .. } if expect == &[(200, 399)])
    );
    let db = &defs[1];
    assert_eq!(
        (
            db.service.as_str(),
            db.interval,
            db.timeout,
            db.fall,
            db.rise
        ),
        (
            "postgres",
            Duration::from_secs(10),
            Duration::from_secs(2),
            5,
            1
        )
    );
    assert_eq!(
        defs[2].probe,
        Probe::Command {
            argv: vec!["/bin/sh".into(), "-c".into(), "df -h / | tail -1".into()],
            pass_env: Vec::new(),
        }
    );
    assert_eq!(defs[3].probe.target(), "pg_isready -h 127.0.0.1");
    assert_eq!(defs[4].probe.kind(), "docker");
    // A ttl check counts each report: one fail is unhealthy, one pass recovers.
    assert_eq!((defs[5].fall, defs[5].rise), (1, 1));
    assert_eq!(
        defs[5].probe,
        Probe::Ttl {
            ttl: Duration::from_secs(25 * 3600)
        }
    );
}

#[test]
fn expect_status_forms() {
    let expect = |v: &str| {
        let text = format!(
            "[[check]]\nname = \"w\"\nkind = \"http\"\nurl = \"http://x/\"\nexpect_status = {v}\n"
        );
        load(&text).map(|d| match &d[0].probe {
            Probe::Http { expect, .. } => expect.clone(),
            _ => Vec::new(),
        })
    };
    assert_eq!(expect("204").unwrap(), [(204, 204)]);
    assert_eq!(expect("\"200..299\"").unwrap(), [(200, 299)]);
    assert_eq!(expect("[200, 401]").unwrap(), [(200, 200), (401, 401)]);
    let e = expect("\"299..200\"").unwrap_err();
    assert!(
        e.starts_with("line 5, column 17 (`check.expect_status`)"),
        "{e}"
    );
    assert!(expect("700").is_err());
}

#[test]
fn missing_fields_name_the_table_and_the_fix() {
    let e = error("name = 1\n");
    assert!(e.contains("unknown field `name`"), "{e}");
    let e = error("[[check]]\nkind = \"tcp\"\naddress = \"a:1\"\n");
    assert!(e.starts_with("line 1"), "{e}");
    assert!(
        e.contains("(`check.name`): missing; add e.g. name = \"web\""),
        "{e}"
    );
    let e = error("[[check]]\nname = \"db\"\nkind = \"tcp\"\n");
    assert!(e.starts_with("line 1"), "{e}");
    assert!(
        e.contains(
            "(`check.address`): missing in tcp check \"db\"; add e.g. address = \"127.0.0.1:5432\""
        ),
        "{e}"
    );
    let e = error("[[check]]\nname = \"db\"\n");
    assert!(
        e.contains("(`check.kind`): missing in check \"db\"; add kind = \"http\""),
        "{e}"
    );
}

#[test]
fn bad_values_name_line_and_key() {
    let base = "[[check]]\nname = \"web\"\nkind = \"http\"\n";
    let e = error(&format!("{base}url = \"not a url\"\n"));
    assert!(
        e.starts_with("line 4, column 7 (`check.url`): \"not a url\" is not a URL"),
        "{e}"
    );
    assert!(
        e.contains("use e.g. \"http://127.0.0.1:8080/health\""),
        "{e}"
    );
    let e = error(&format!("{base}url = \"ftp://nas/x\"\n"));
    assert!(e.contains("scheme \"ftp\""), "{e}");
    let url = "url = \"http://127.0.0.1/\"\n";
    for bad in ["0", "\"0s\"", "-5", "\"-5s\"", "0.0"] {
        let e = error(&format!("{base}{url}interval = {bad}\n"));
        assert!(
            e.starts_with("line 5, column 12 (`check.interval`): must be more than zero"),
            "{bad}: {e}"
        );
    }
    let e = error(&format!("{base}{url}interval = \"often\"\n"));
    assert!(
        e.contains("(`check.interval`): \"often\" is not a duration"),
        "{e}"
    );
    let e = error(&format!("{base}{url}interval = \"10ms\"\n"));
    assert!(e.contains("at least 100ms"), "{e}");
    let e = error(&format!("{base}{url}fall = 0\n"));
    assert!(
        e.starts_with("line 5, column 8 (`check.fall`): 0 is out of range"),
        "{e}"
    );
    let e = error("[[check]]\nname = \"x\"\nkind = \"htpp\"\n");
    assert!(
        e.starts_with(
            "line 3, column 8 (`check.kind`): \"htpp\" is not a kind of check; use http, tcp"
        ),
        "{e}"
    );
    let e = error("[[check]]\nname = \"a b\"\nkind = \"tcp\"\naddress = \"h:1\"\n");
    assert!(e.starts_with("line 2, column 8 (`check.name`)"), "{e}");
    let e = error("[[check]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"db.lan\"\n");
    assert!(
        e.contains("(`check.address`): \"db.lan\" is not HOST:PORT"),
        "{e}"
    );
    let e = error("[[check]]\nname = \"c\"\nkind = \"command\"\ncommand = []\n");
    assert!(e.contains("(`check.command`): is empty"), "{e}");
}

#[test]
fn keys_of_another_kind_are_rejected() {
    let e =
        error("[[check]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"h:1\"\nurl = \"http://h/\"\n");
    assert!(
        e.starts_with("line 5, column 7 (`check.url`): does not apply to a tcp check; remove it (a tcp check takes address)"),
        "{e}"
    );
    let e = error("[[check]]\nname = \"b\"\nkind = \"ttl\"\nttl = \"1h\"\ninterval = \"5m\"\n");
    assert!(
        e.contains("(`check.interval`): does not apply to a ttl check"),
        "{e}"
    );
    assert!(e.contains("labmesh check pass NAME"), "{e}");
}

#[test]
fn duplicate_names_point_at_both() {
    let text = "[[check]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"h:1\"\n\n[[check]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"h:2\"\n";
    let e = error(text);
    assert!(
        e.starts_with(
            "line 7, column 8 (`check.name`): \"db\" is already the name of the check on line 2"
        ),
        "{e}"
    );
}
