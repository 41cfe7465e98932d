//! A full disk and a read-only data dir: a clear error naming the path, nothing half-written.
//!
//! Each case runs in its own mount namespace (`unshare`, as root or with a user namespace) over a
//! small tmpfs, so the test fills and remounts a file system of its own and nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use labmesh_tests::labmesh_bin;

/// Runs `script` in a private mount namespace with a 512 KiB tmpfs at `$D`. Returns stdout, or
/// None when this machine cannot make namespaces (never in CI, which runs as root).
fn in_tmpfs(script: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let root = rustix::process::geteuid().is_root();
    let mut cmd = Command::new("unshare");
    if !root {
        cmd.arg("--map-root-user");
    }
    let full = format!(
        "set -u\ntrap 'rm -f /tmp/lm-*.$$ /tmp/lines.$$' EXIT\nmount -t tmpfs -o size=512k tmpfs \"$D\" || exit 77\nexport LABMESH_DATA_DIR=\"$D/data\" LABMESH_NAME=testnode LABMESH_CONFIG=/dev/null\n{script}"
    );
    let out = cmd
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &full,
        ])
        .env("D", dir.path())
        .env("BIN", labmesh_bin())
        .output()
        .expect("run unshare");
    if out.status.code() == Some(77) || (!out.status.success() && !root && out.stdout.is_empty()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to make a mount namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "skipped: cannot make a mount namespace here: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    assert!(
        out.status.success(),
        "script failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn full_disk_gives_a_clear_error_and_leaves_nothing_half_written() {
    let Some(out) = in_tmpfs(
        r#"
"$BIN" emit --type before_full >/dev/null || echo "FIRST EMIT FAILED"
dd if=/dev/zero of="$D/fill" bs=4k 2>/dev/null
"$BIN" emit --type x --payload '{"big": "'"$(head -c 3000 /dev/zero | tr '\0' a)"'"}' 2>/tmp/lm-err1.$$; echo "single rc=$?"
echo "single err: $(cat /tmp/lm-err1.$$)"
i=0; while [ $i -lt 300 ]; do echo '{"type":"bulk","payload":{"pad":"'"$(head -c 500 /dev/zero | tr '\0' b)"'"}}'; i=$((i+1)); done > /tmp/lines.$$
"$BIN" emit --from-jsonl /tmp/lines.$$ --batch-size 100 >/tmp/lm-acked.$$ 2>/tmp/lm-err2.$$; echo "bulk rc=$?"
echo "bulk err: $(cat /tmp/lm-err2.$$)"
echo "acked: $(wc -l < /tmp/lm-acked.$$)"
rm -f /tmp/lines.$$
echo "temps: $(find "$D/data" -name '.*.tmp' | wc -l)"
echo "events: $(find "$D/data/events" -name '*.json' | wc -l)"
rm -f "$D/fill"
"$BIN" fsck >/dev/null; echo "fsck rc=$?"
"#,
    ) else {
        return;
    };
    assert!(!out.contains("FIRST EMIT FAILED"), "{out}");
    assert!(out.contains("single rc=1"), "{out}");
    let err = out.lines().find(|l| l.starts_with("single err:")).unwrap();
    assert!(err.contains("No space left on device"), "{out}");
    assert!(
        err.contains("/data/events/"),
        "the error names the path: {out}"
    );
    assert!(
        err.contains("the disk is full"),
        "the error gives the fix: {out}"
    );
    assert!(out.contains("bulk rc=1"), "{out}");
    assert!(out.contains("temps: 0"), "temp files left behind: {out}");
    // Every file that exists is whole: fsck is clean once space is back, and exactly the
    // acknowledged events (plus the first) are on disk.
    assert!(out.contains("fsck rc=0"), "{out}");
    let acked: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("acked: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let events: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("events: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(events, acked + 1, "{out}");
}

#[test]
fn read_only_data_dir_gives_a_clear_error() {
    let Some(out) = in_tmpfs(
        r#"
"$BIN" emit --type before_ro >/dev/null || echo "FIRST EMIT FAILED"
mount -o remount,ro "$D"
"$BIN" emit --type x 2>/tmp/lm-err1.$$; echo "emit rc=$?"
echo "emit err: $(cat /tmp/lm-err1.$$)"
timeout 10 "$BIN" agent --api-addr 127.0.0.1:0 >/dev/null 2>/tmp/lm-err2.$$; echo "agent rc=$?"
echo "agent err: $(cat /tmp/lm-err2.$$)"
"$BIN" events list --jsonl | wc -l | sed 's/^/listed: /'
"#,
    ) else {
        return;
    };
    assert!(!out.contains("FIRST EMIT FAILED"), "{out}");
    assert!(out.contains("emit rc=1"), "{out}");
    let err = out.lines().find(|l| l.starts_with("emit err:")).unwrap();
    assert!(
        err.contains("Read-only file system") && err.contains("/data/events/"),
        "{out}"
    );
    assert!(err.contains("read-only: remount it read-write"), "{out}");
    assert!(out.contains("agent rc=1"), "{out}");
    let err = out.lines().find(|l| l.starts_with("agent err:")).unwrap();
    assert!(
        err.contains("Read-only file system") && err.contains("/data"),
        "{out}"
    );
    // Reading still works on a read-only store.
    assert!(out.contains("listed: 1"), "{out}");
}
