//! `labmesh fsck`: check every event file, change nothing, exit 1 when any is torn, invalid or
//! misplaced (or, with `--verify`, not signed by the node it names).

use std::io::{IsTerminal, Write};

use sync::fsck::{self, Problem};

use crate::cli::FsckArgs;
use crate::cli::exit;
use labmesh::config::Settings;

pub fn run(settings: &Settings, args: &FsckArgs) -> anyhow::Result<u8> {
    let show_progress = std::io::stderr().is_terminal() && !args.json;
    let trust = if args.verify {
        let certs_dir = settings.certs_dir();
        let identity = certs::NodeIdentity::load(&certs_dir)?.ok_or_else(|| {
            anyhow::anyhow!(
                "fsck --verify needs this node's certificates in {} (the mesh CA and the certificates of signers); run the agent once, or join the mesh first",
                certs_dir.display()
            )
        })?;
        Some(labmesh::trust::event_trust(&identity, Some(&certs_dir), false)?.0)
    } else {
        None
    };
    let signers = trust.as_ref().map(|t| &*t.directory);
    let report = fsck::check(&settings.data_dir, settings.max_event_bytes, signers, |n| {
        if show_progress {
            eprint!("\rchecked {n} files...");
        }
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "checking {}: {e}",
            settings.data_dir.join("events").display()
        )
    })?;
    if show_progress {
        eprint!("\r\x1b[K");
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        for f in &report.findings {
            let label = match f.problem {
                Problem::Torn => "TORN",
                Problem::Invalid => "INVALID",
                Problem::Misplaced => "MISPLACED",
                Problem::Conflict => "CONFLICT",
                Problem::TempFile => "TEMP",
                Problem::UnexpectedFolder => "FOLDER",
                Problem::Signature => "SIGNATURE",
            };
            writeln!(out, "{label:<10} {}: {}", f.path.display(), f.detail)?;
        }
        writeln!(
            out,
            "checked {} event files in {}: {} ok, {} torn, {} invalid, {} misplaced; {} id conflicts, {} leftover temp files",
            report.files_checked,
            settings.data_dir.join("events").display(),
            report.ok,
            report.torn,
            report.invalid,
            report.misplaced,
            report.conflicts,
            report.temp_files
        )?;
        if args.verify {
            writeln!(
                out,
                "verified {} origin signatures: {} bad or missing",
                report.signatures_checked, report.bad_signatures
            )?;
        }
        if !report.is_clean() {
            writeln!(
                out,
                "a running `labmesh agent` moves such files to {} with a .reason file beside each",
                settings.data_dir.join("quarantine").display()
            )?;
        }
    }
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::NO
    })
}
