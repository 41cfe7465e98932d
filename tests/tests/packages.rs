//! The Debian package `deploy/deb/build.sh` builds from the binary under test: its files,
//! modes and control fields (`dpkg-deb -c`, `-I`), `lintian` (no errors), and a real
//! `dpkg -i`, reinstall, `dpkg -r` and `dpkg -P` inside a private mount namespace whose /etc,
//! /usr and /var are overlays on tmpfs (the host is untouched).
//!
//! Needs dpkg-deb and binutils (strip, readelf); lintian for the lintian test; root, unshare
//! (util-linux), overlayfs and adduser for the install test. Each test is skipped with a
//! message when what it needs is missing, except under CI, where it fails instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use labmesh_tests::{labmesh_bin, repo_path};

fn has(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when every tool is there; outside CI a test without them returns early with a
/// message, in CI (which installs them) it fails.
fn tools(needed: &[(&str, &str, &str)]) -> bool {
    let missing: Vec<String> = needed
        .iter()
        .filter(|(tool, arg, _)| !has(tool, arg))
        .map(|(tool, _, package)| format!("{tool} (Debian package {package})"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI installs {}: this test must run there",
        missing.join(", ")
    );
    eprintln!("skipped: missing {}", missing.join(", "));
    false
}

const BUILD_TOOLS: [(&str, &str, &str); 3] = [
    ("dpkg-deb", "--version", "dpkg"),
    ("strip", "--version", "binutils"),
    ("readelf", "--version", "binutils"),
];

fn said(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?}: {}", said(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package from the debug binary into `out` (gzip: xz of the debug build's
/// 30 MB takes longer than the rest of the test) and returns its path.
fn build(out: &Path) -> PathBuf {
    let printed = ok(Command::new("bash")
        .arg(repo_path("deploy/deb/build.sh"))
        .arg("--binary")
        .arg(labmesh_bin())
        .arg("--out")
        .arg(out)
        .args(["--compress", "gzip"]));
    let deb = PathBuf::from(printed.trim());
    assert!(deb.is_file(), "build.sh printed {printed:?}, no such file");
    deb
}

fn arch() -> String {
    ok(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_owned()
}

/// The package version: the workspace's, with Debian revision 1.
fn version() -> String {
    format!("{}-1", env!("CARGO_PKG_VERSION"))
}

#[test]
fn the_deb_holds_the_files_modes_and_control_fields() {
    if !tools(&BUILD_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());
    assert_eq!(
        deb.file_name().unwrap().to_string_lossy(),
        format!("labmesh_{}_{}.deb", version(), arch())
    );

    // dpkg-deb -c: path -> (mode string, owner).
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: BTreeMap<String, (String, String)> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_owned();
            (path, (f[0].to_owned(), f[1].to_owned()))
        })
        .collect();
    let want = [
        ("/usr/bin/labmesh", "-rwxr-xr-x"),
        ("/lib/systemd/system/labmesh.service", "-rw-r--r--"),
        ("/etc/labmesh/labmesh.toml", "-rw-r--r--"),
        ("/usr/share/doc/labmesh/copyright", "-rw-r--r--"),
        ("/usr/share/doc/labmesh/changelog.Debian.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/labmesh.1.gz", "-rw-r--r--"),
        ("/usr/share/lintian/overrides/labmesh", "-rw-r--r--"),
    ];
    for (path, mode) in want {
        let (m, owner) = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"));
        assert_eq!((m.as_str(), owner.as_str()), (mode, "root/root"), "{path}");
    }
    for (path, (mode, owner)) in &files {
        assert_eq!(owner, "root/root", "{path}");
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "{path}");
        } else {
            assert!(
                want.iter().any(|(p, _)| p == path),
                "{path} is in the package but not expected:\n{listing}"
            );
        }
    }

    // dpkg-deb -I: the control fields.
    let field = |name: &str| {
        ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name))
            .trim()
            .to_owned()
    };
    assert_eq!(field("Package"), "labmesh");
    assert_eq!(field("Version"), version());
    assert_eq!(field("Architecture"), arch());
    assert_eq!(field("Section"), "admin");
    assert_eq!(field("Priority"), "optional");
    assert!(field("Maintainer").contains('@'), "{}", field("Maintainer"));
    assert!(field("Installed-Size").parse::<u64>().unwrap() > 1000);
    let depends = field("Depends");
    assert!(
        depends.contains("libc6 (>= ") && depends.contains("adduser"),
        "Depends: {depends}"
    );
    assert!(
        field("Description").starts_with("peer-to-peer observability agent for homelabs\n"),
        "{}",
        field("Description")
    );
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for script in ["postinst", "prerm", "postrm", "conffiles", "md5sums"] {
        assert!(
            info.contains(script),
            "no {script} in the control archive:\n{info}"
        );
    }

    // The control archive and the payload themselves.
    let control = dir.path().join("control");
    let root = dir.path().join("root");
    ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/labmesh/labmesh.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        assert_eq!(
            std::fs::read(control.join(script)).unwrap(),
            std::fs::read(repo_path(&format!("deploy/deb/{script}"))).unwrap(),
            "DEBIAN/{script} is deploy/deb/{script}"
        );
        ok(Command::new("sh").arg("-n").arg(control.join(script)));
    }
    for (installed, source) in [
        (
            "lib/systemd/system/labmesh.service",
            "deploy/systemd/labmesh.service",
        ),
        ("etc/labmesh/labmesh.toml", "deploy/labmesh.example.toml"),
        ("usr/share/doc/labmesh/copyright", "deploy/deb/copyright"),
    ] {
        assert_eq!(
            std::fs::read(root.join(installed)).unwrap(),
            std::fs::read(repo_path(source)).unwrap(),
            "{installed} is {source}"
        );
    }
    let sections = ok(Command::new("readelf")
        .args(["-S", "--wide"])
        .arg(root.join("usr/bin/labmesh")));
    assert!(
        !sections.contains(".symtab") && !sections.contains(".debug_info"),
        "/usr/bin/labmesh is stripped:\n{sections}"
    );
    let version_out = ok(Command::new(root.join("usr/bin/labmesh")).arg("--version"));
    assert!(
        version_out.contains(env!("CARGO_PKG_VERSION")),
        "{version_out}"
    );
}

#[test]
fn lintian_finds_no_errors_in_the_deb() {
    if !tools(&[
        BUILD_TOOLS[0],
        BUILD_TOOLS[1],
        BUILD_TOOLS[2],
        ("lintian", "--version", "lintian"),
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());
    // Its own TMPDIR: lintian leaves files behind there (mldbm-elf-*).
    let tmp = dir.path().join("lintian-tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = Command::new("lintian")
        .env("TMPDIR", &tmp)
        .args(["--display-info", "--color", "never"])
        .arg(&deb)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Warnings and notes are allowed (deploy/deb/lintian-overrides silences the unavoidable
    // ones, each with its reason), but shown.
    for line in text.lines() {
        eprintln!("lintian: {line}");
    }
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    // Exit status 2 is lintian failing to run at all (1 would be errors, caught above).
    assert_ne!(
        out.status.code(),
        Some(2),
        "lintian did not run: {}",
        said(&out)
    );
}

/// Installs the package for real, in a private mount namespace whose /etc, /usr and /var are
/// overlays on a tmpfs: dpkg, its database, adduser and the maintainer scripts all run as on
/// a real host, and everything vanishes with the namespace. Prints `key=value` lines.
const DPKG_ROUNDTRIP: &str = r#"
set -eu
deb=$1
t=$2
mkdir -p "$t"
mount -t tmpfs tmpfs "$t"
for d in etc usr var; do
  mkdir -p "$t/$d.up" "$t/$d.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$t/$d.up,workdir=$t/$d.work" "/$d"
done
dpkg --force-confold -i "$deb" >&2
echo "user=$(getent passwd labmesh)"
echo "group=$(getent group labmesh | cut -d: -f1)"
echo "config=$(stat -c '%a %U:%G' /etc/labmesh/labmesh.toml)"
echo "data=$(stat -c '%a %U:%G' /var/lib/labmesh)"
echo "binary=$(stat -c '%a %U:%G' /usr/bin/labmesh)"
echo "version=$(/usr/bin/labmesh --version)"
echo "enabled=$(readlink /etc/systemd/system/multi-user.target.wants/labmesh.service || true)"
echo '[mesh]' >> /etc/labmesh/labmesh.toml
echo 'role = "nas"' >> /etc/labmesh/labmesh.toml
dpkg --force-confold -i "$deb" >&2
echo "kept_config=$(tail -n 1 /etc/labmesh/labmesh.toml)"
echo "config_again=$(stat -c '%a %U:%G' /etc/labmesh/labmesh.toml)"
echo x > /var/lib/labmesh/events.json
dpkg -r labmesh >&2
echo "removed_binary=$(test -e /usr/bin/labmesh && echo present || echo gone)"
echo "removed_config=$(test -e /etc/labmesh/labmesh.toml && echo present || echo gone)"
echo "removed_data=$(test -e /var/lib/labmesh/events.json && echo present || echo gone)"
echo "removed_user=$(getent passwd labmesh >/dev/null && echo present || echo gone)"
dpkg -P labmesh >&2
echo "purged_config=$(test -e /etc/labmesh && echo present || echo gone)"
echo "purged_data=$(test -e /var/lib/labmesh && echo present || echo gone)"
echo "purged_user=$(getent passwd labmesh >/dev/null && echo present || echo gone)"
echo "purged_group=$(getent group labmesh >/dev/null && echo present || echo gone)"
"#;

#[test]
fn the_deb_installs_upgrades_removes_and_purges() {
    let root = rustix::process::geteuid().is_root();
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: this test must run there"
        );
        eprintln!("skipped: dpkg -i needs root");
        return;
    }
    if !tools(&[
        BUILD_TOOLS[0],
        BUILD_TOOLS[1],
        BUILD_TOOLS[2],
        ("unshare", "--version", "util-linux"),
        ("adduser", "--version", "adduser"),
    ]) {
        return;
    }
    let host_had_user = Command::new("getent")
        .args(["passwd", "labmesh"])
        .output()
        .unwrap()
        .status
        .success();
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            DPKG_ROUNDTRIP,
            "sh",
        ])
        .arg(&deb)
        .arg(dir.path().join("namespace"))
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg round trip: {}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |key: &str| {
        *got.get(key)
            .unwrap_or_else(|| panic!("no {key} in the output: {}", said(&out)))
    };

    let user: Vec<&str> = get("user").split(':').collect();
    assert_eq!(user[0], "labmesh", "{}", said(&out));
    assert!(
        user[2].parse::<u32>().unwrap() < 1000,
        "a system uid: {user:?}"
    );
    assert_eq!(user[5], "/var/lib/labmesh");
    assert_eq!(user[6], "/usr/sbin/nologin");
    assert_eq!(get("group"), "labmesh");
    assert_eq!(get("config"), "640 root:labmesh");
    assert_eq!(get("data"), "750 labmesh:labmesh");
    assert_eq!(get("binary"), "755 root:root");
    assert!(get("version").contains(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        get("enabled"),
        "/lib/systemd/system/labmesh.service",
        "postinst enables the unit"
    );
    assert_eq!(
        get("kept_config"),
        r#"role = "nas""#,
        "a reinstall keeps the conffile"
    );
    assert_eq!(get("config_again"), "640 root:labmesh");
    assert_eq!(get("removed_binary"), "gone");
    assert_eq!(
        get("removed_config"),
        "present",
        "remove keeps the conffile"
    );
    assert_eq!(get("removed_data"), "present", "remove keeps the data");
    assert_eq!(get("removed_user"), "present", "remove keeps the user");
    assert_eq!(get("purged_config"), "gone");
    assert_eq!(get("purged_data"), "gone", "purge removes /var/lib/labmesh");
    assert_eq!(get("purged_user"), "gone", "purge removes the user");
    assert_eq!(get("purged_group"), "gone", "purge removes the group");

    // The namespace kept all of it off the host.
    let host_has_user = Command::new("getent")
        .args(["passwd", "labmesh"])
        .output()
        .unwrap()
        .status
        .success();
    assert_eq!(
        host_has_user, host_had_user,
        "the host's users are untouched"
    );
}
