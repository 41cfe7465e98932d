//! `deploy/install.sh` in a throwaway root (`--root DIR`): every file, mode and owner it
//! installs (the owners as DIR/etc/passwd and DIR/etc/group record them), a second run that
//! changes nothing, `--join` with a real bundle (the imported node then joins its CA's mesh
//! with the installed config), `--upgrade`, `--uninstall` and `--purge`.
//!
//! Needs root (the installer sets owners) and useradd (Debian's `passwd`); skipped with a
//! message otherwise, except under CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use labmesh_tests::{Agent, Peer, issue_bundle, labmesh_bin, repo_path, wait_until};

const ACCOUNT_FILES: [&str; 8] = [
    "etc/passwd",
    "etc/passwd-",
    "etc/group",
    "etc/group-",
    "etc/shadow",
    "etc/shadow-",
    "etc/gshadow",
    "etc/gshadow-",
];

fn can_run() -> bool {
    let root = rustix::process::geteuid().is_root();
    let useradd = Command::new("useradd")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && useradd {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root with useradd (Debian package `passwd`): this test must run there"
    );
    eprintln!("skipped: install.sh needs root and useradd");
    false
}

/// `deploy/install.sh --root ROOT ARGS...`, with no LABMESH_* variable of the test's own
/// environment leaking in.
fn install(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_path("deploy/install.sh"))
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LABMESH_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run deploy/install.sh")
}

fn said(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the installer, asserts it succeeded, and returns its stdout.
fn install_ok(root: &Path, args: &[&str]) -> String {
    let out = install(root, args);
    assert!(out.status.success(), "install.sh {args:?}: {}", said(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn bin() -> String {
    labmesh_bin().display().to_string()
}

/// One entry of a tree: (mode, uid, gid, size, content hash; 0 for a directory).
type Entry = (u32, u32, u32, u64, u64);

fn hash_file(path: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(&std::fs::read(path).unwrap());
    h.finish()
}

/// Every path under `root` (relative, "" for the root itself) with its mode, owner, size and
/// content hash.
fn listing(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let hash = if meta.is_file() { hash_file(&path) } else { 0 };
            let size = if meta.is_dir() { 0 } else { meta.len() };
            out.insert(
                rel,
                (
                    meta.permissions().mode() & 0o7777,
                    meta.uid(),
                    meta.gid(),
                    size,
                    hash,
                ),
            );
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn field(file: &Path, name: &str, index: usize) -> Option<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f[0] == name)
        .map(|f| f[index].clone())
}

/// The labmesh user's passwd line fields (uid, gid, home, shell), when it exists.
fn passwd(root: &Path) -> Option<(u32, u32, String, String)> {
    let p = root.join("etc/passwd");
    Some((
        field(&p, "labmesh", 2)?.parse().unwrap(),
        field(&p, "labmesh", 3)?.parse().unwrap(),
        field(&p, "labmesh", 5)?,
        field(&p, "labmesh", 6)?,
    ))
}

fn group_gid(root: &Path, group: &str) -> Option<u32> {
    field(&root.join("etc/group"), group, 2).map(|g| g.parse().unwrap())
}

fn group_members(root: &Path, group: &str) -> Vec<String> {
    field(&root.join("etc/group"), group, 3)
        .unwrap_or_default()
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The labmesh uid and gid, asserting the account is what the installer promises.
fn account(root: &Path) -> (u32, u32) {
    let (uid, gid, home, shell) = passwd(root).expect("labmesh in ROOT/etc/passwd");
    assert!(uid > 0 && uid < 1000, "a system uid, got {uid}");
    assert_eq!(
        Some(gid),
        group_gid(root, "labmesh"),
        "primary group labmesh"
    );
    assert_eq!(home, "/var/lib/labmesh");
    assert_eq!(shell, "/usr/sbin/nologin");
    (uid, gid)
}

fn assert_entry(list: &BTreeMap<String, Entry>, path: &str, mode: u32, uid: u32, gid: u32) {
    let (m, u, g, _, _) = list
        .get(path)
        .unwrap_or_else(|| panic!("{path} is not installed; have {:?}", list.keys()));
    assert_eq!(
        (*m, *u, *g),
        (mode, uid, gid),
        "{path}: mode {m:o} owner {u}:{g}, want mode {mode:o} owner {uid}:{gid}"
    );
}

fn assert_same_content(root: &Path, path: &str, source: &Path) {
    assert_eq!(
        hash_file(&root.join(path)),
        hash_file(source),
        "{path} is not a copy of {}",
        source.display()
    );
}

/// The live `seeds = ...` lines of the config, each with the section it is in.
fn seed_lines(config: &Path) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut seeds = Vec::new();
    for line in std::fs::read_to_string(config).unwrap().lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_owned();
        } else if t.starts_with("seeds") {
            seeds.push((section.clone(), t.to_owned()));
        }
    }
    seeds
}

fn data_dir(root: &Path) -> PathBuf {
    root.join("var/lib/labmesh")
}

fn config(root: &Path) -> PathBuf {
    root.join("etc/labmesh/labmesh.toml")
}

#[test]
fn install_puts_every_file_with_its_mode_and_owner_and_a_second_run_changes_nothing() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = install_ok(&root, &["--binary", &bin()]);
    let (uid, gid) = account(&root);
    assert!(
        group_members(&root, "docker").is_empty() && group_gid(&root, "docker").is_none(),
        "no docker group in a fresh root, and none made up"
    );

    let list = listing(&root);
    assert_entry(&list, "usr/bin/labmesh", 0o755, 0, 0);
    assert_same_content(&root, "usr/bin/labmesh", &labmesh_bin());
    assert_entry(&list, "etc/systemd/system/labmesh.service", 0o644, 0, 0);
    assert_same_content(
        &root,
        "etc/systemd/system/labmesh.service",
        &repo_path("deploy/systemd/labmesh.service"),
    );
    assert_entry(&list, "etc/labmesh", 0o755, 0, 0);
    assert_entry(&list, "etc/labmesh/labmesh.toml", 0o640, 0, gid);
    assert_same_content(
        &root,
        "etc/labmesh/labmesh.toml",
        &repo_path("deploy/labmesh.example.toml"),
    );
    assert_entry(&list, "var/lib/labmesh", 0o750, uid, gid);
    // Nothing else: no leftover temp files, only the parents of what is installed and the
    // account files useradd wrote.
    let expected = [
        "usr",
        "usr/bin",
        "usr/bin/labmesh",
        "etc",
        "etc/systemd",
        "etc/systemd/system",
        "etc/systemd/system/labmesh.service",
        "etc/labmesh",
        "etc/labmesh/labmesh.toml",
        "var",
        "var/lib",
        "var/lib/labmesh",
    ];
    for path in list.keys() {
        assert!(
            expected.contains(&path.as_str()) || ACCOUNT_FILES.contains(&path.as_str()),
            "install.sh left {path} in the root"
        );
    }
    for parent in [
        "usr",
        "usr/bin",
        "etc",
        "var",
        "var/lib",
        "etc/systemd/system",
    ] {
        assert_entry(&list, parent, 0o755, 0, 0);
    }
    for cmd in ["systemctl daemon-reload", "systemctl enable --now labmesh"] {
        assert!(
            out.contains(&format!("would run: {cmd}")),
            "--root prints `{cmd}` instead of running it:\n{out}"
        );
    }
    assert!(
        out.contains("labmesh certs issue") && out.contains("--join") && out.contains(":7370"),
        "the next step (joining) is printed:\n{out}"
    );

    let again = install_ok(&root, &["--binary", &bin()]);
    assert_eq!(
        listing(&root),
        list,
        "a second run changed the root:\n{again}"
    );
    assert!(again.contains("up to date"), "{again}");

    // --dry-run changes nothing either, even with a seed to write.
    install_ok(
        &root,
        &["--binary", &bin(), "--dry-run", "--seed", "a.lan:7370"],
    );
    assert_eq!(listing(&root), list, "--dry-run changed the root");
}

#[test]
fn the_user_joins_the_docker_group_when_it_exists() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\ndocker:x:998:alice\n").unwrap();
    install_ok(&root, &["--binary", &bin()]);
    account(&root);
    assert_eq!(group_members(&root, "docker"), ["alice", "labmesh"]);
    let list = listing(&root);
    install_ok(&root, &["--binary", &bin()]);
    assert_eq!(listing(&root), list, "a second run changed the root");
    assert_eq!(group_members(&root, "docker"), ["alice", "labmesh"]);
}

#[test]
fn join_imports_the_bundle_as_labmesh_and_the_node_joins_with_the_installed_config() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = Peer::start(dir.path(), "ca", &["--gossip-interval", "100ms"]);
    let bundle = dir.path().join("node2.bundle.json");
    issue_bundle(&ca.data, "ca", "node2", &bundle);
    let bundle = bundle.display().to_string();
    let root = dir.path().join("root");
    let join = [
        "--binary",
        &bin(),
        "--join",
        &bundle,
        "--seed",
        "127.0.0.1:7370",
    ];

    let out = install_ok(&root, &join);
    assert!(
        out.contains("would run: systemctl restart labmesh"),
        "--join restarts the agent:\n{out}"
    );
    let (uid, gid) = account(&root);
    let list = listing(&root);
    for file in ["node.key", "node.pem", "ca.pem", "mesh-name"] {
        let path = format!("var/lib/labmesh/certs/{file}");
        let (_, u, g, _, _) = list
            .get(&path)
            .unwrap_or_else(|| panic!("{path} is not imported; have {:?}", list.keys()));
        assert_eq!((*u, *g), (uid, gid), "{path} is owned by labmesh");
    }
    assert_entry(&list, "var/lib/labmesh/certs/node.key", 0o600, uid, gid);
    let want = vec![(
        "[mesh]".to_owned(),
        r#"seeds = ["127.0.0.1:7370"]"#.to_owned(),
    )];
    assert_eq!(seed_lines(&config(&root)), want);

    install_ok(&root, &join);
    assert_eq!(seed_lines(&config(&root)), want, "the seed is written once");
    assert_eq!(listing(&root), list, "a second --join changed the root");

    // A new seed replaces the old one: the CA node's real address, for the start below.
    install_ok(&root, &["--binary", &bin(), "--seed", &ca.gossip]);
    assert_eq!(
        seed_lines(&config(&root)),
        [("[mesh]".to_owned(), format!(r#"seeds = ["{}"]"#, ca.gossip))]
    );

    // The installed config parses, and with the imported identity and the seed from it the
    // node joins the CA's mesh under the bundle's name.
    let conf = config(&root);
    let node = Agent::start_with(&data_dir(&root), &["--gossip-interval", "100ms"], |cmd| {
        cmd.env("LABMESH_CONFIG", &conf).env_remove("LABMESH_NAME");
    });
    assert_eq!(node.get_json("/v1/status")["node"], "node2");
    wait_until(
        "the CA node to see node2 alive",
        Duration::from_secs(30),
        || {
            ca.agent()
                .get_json("/v1/nodes")
                .as_array()
                .is_some_and(|nodes| {
                    nodes
                        .iter()
                        .any(|n| n["node"] == "node2" && n["liveness"] == "alive")
                })
        },
    );
}

#[test]
fn a_node_that_started_alone_is_told_how_to_join_instead() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    install_ok(&root, &["--binary", &bin()]);
    // As the service would: the installed config, the installed data dir; alone, the agent
    // makes its own mesh CA there.
    let conf = config(&root);
    let mut alone = Agent::start_with(&data_dir(&root), &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &conf);
    });
    alone.stop_with(rustix::process::Signal::TERM);
    assert!(data_dir(&root).join("certs/ca.key").exists());

    let ca = Peer::start(dir.path(), "ca", &[]);
    let bundle = dir.path().join("testnode.bundle.json");
    issue_bundle(&ca.data, "ca", "testnode", &bundle);
    let out = install(
        &root,
        &[
            "--binary",
            &bin(),
            "--join",
            &bundle.display().to_string(),
            "--seed",
            &ca.gossip,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        err.contains("certs.own-mesh") && err.contains(&data_dir(&root).display().to_string()),
        "the error names the certs folder and how to set it aside: {}",
        said(&out)
    );
    // The files the agent wrote as root are the labmesh user's again.
    let (uid, gid) = account(&root);
    for (path, (_, u, g, _, _)) in listing(&root) {
        if path == "var/lib/labmesh" || path.starts_with("var/lib/labmesh/") {
            assert_eq!((u, g), (uid, gid), "{path} is owned by labmesh");
        }
    }
}

#[test]
fn upgrade_replaces_the_binary_and_nothing_else() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");

    let out = install(&root, &["--upgrade", "--binary", &bin()]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not installed"),
        "{}",
        said(&out)
    );

    install_ok(&root, &["--binary", &bin()]);
    // A changed config must survive the upgrade untouched.
    std::fs::write(config(&root), "[mesh]\nrole = \"nas\"\n").unwrap();
    let before = listing(&root);

    // Another binary: the same program with bytes appended (it still runs).
    let newer = dir.path().join("labmesh-newer");
    let mut bytes = std::fs::read(labmesh_bin()).unwrap();
    bytes.extend_from_slice(b"upgrade");
    std::fs::write(&newer, bytes).unwrap();
    std::fs::set_permissions(&newer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let newer = newer.display().to_string();

    let out = install_ok(&root, &["--upgrade", "--binary", &newer]);
    assert!(
        out.contains("would run: systemctl try-restart labmesh"),
        "--upgrade restarts a running agent:\n{out}"
    );
    let after = listing(&root);
    let changed: BTreeSet<&String> = after
        .keys()
        .chain(before.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert_eq!(
        changed.into_iter().collect::<Vec<_>>(),
        ["usr/bin/labmesh"],
        "only the binary changed"
    );
    assert_entry(&after, "usr/bin/labmesh", 0o755, 0, 0);
    assert_same_content(&root, "usr/bin/labmesh", Path::new(&newer));

    let out = install_ok(&root, &["--upgrade", "--binary", &newer]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(listing(&root), after);
}

#[test]
fn uninstall_keeps_the_data_dir_and_purge_removes_it() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    install_ok(&root, &["--binary", &bin()]);
    let kept = data_dir(&root).join("events/kept.json");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::write(&kept, "{}").unwrap();

    let out = install_ok(&root, &["--uninstall"]);
    assert!(
        out.contains("would run: systemctl disable --now labmesh"),
        "{out}"
    );
    for gone in [
        "usr/bin/labmesh",
        "etc/systemd/system/labmesh.service",
        "etc/labmesh",
    ] {
        assert!(!root.join(gone).exists(), "--uninstall left {gone}");
    }
    assert!(passwd(&root).is_none(), "the labmesh user is removed");
    assert!(
        group_gid(&root, "labmesh").is_none(),
        "the labmesh group is removed"
    );
    assert!(kept.exists(), "--uninstall keeps the data dir");
    install_ok(&root, &["--uninstall"]);
    assert!(kept.exists());

    // A reinstall gives the kept data (written here as root) back to the new labmesh user.
    install_ok(&root, &["--binary", &bin()]);
    let (uid, gid) = account(&root);
    let meta = std::fs::metadata(&kept).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));

    install_ok(&root, &["--uninstall", "--purge"]);
    assert!(!data_dir(&root).exists(), "--purge removes the data dir");
    assert!(passwd(&root).is_none());
    install_ok(&root, &["--uninstall", "--purge"]);
}

/// The checks that need no root: syntax, the manual, usage errors.
#[test]
fn install_sh_parses_documents_every_flag_and_refuses_bad_usage() {
    let script = repo_path("deploy/install.sh");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "bash -n: {}", said(&syntax));
    if let Ok(out) = Command::new("shellcheck").arg(&script).output() {
        assert!(out.status.success(), "shellcheck: {}", said(&out));
    }

    let help = Command::new("bash")
        .arg(&script)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success(), "{}", said(&help));
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--binary",
        "--join",
        "--seed",
        "--upgrade",
        "--uninstall",
        "--purge",
        "--root",
        "--dry-run",
        "--user",
        "/usr/bin/labmesh",
        "/etc/labmesh/labmesh.toml",
        "/var/lib/labmesh",
        "labmesh certs issue",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for (args, says) in [
        (&["--bogus"][..], "unknown argument"),
        (&["--join", "/nonexistent"][..], "--seed"),
        (&["--seed", "nas.lan"][..], "HOST:PORT"),
        (&["--purge"][..], "--uninstall"),
        (&["--upgrade", "--seed", "a:1"][..], "--seed"),
    ] {
        let out = install(&root, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", said(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            said(&out)
        );
    }
    assert!(!root.exists(), "a usage error writes nothing");
}
