//! `labmesh run [FLAGS] -- COMMAND...`: runs a command, passing its output through untouched,
//! and records it: `<kind>_started` before it starts, one end event when it ends, and its
//! output as redacted JSON lines in `<data>/logs/runs/<run-id>.jsonl`.
//!
//! Events are written the way `labmesh emit` writes them (one fsynced file each, picked up by
//! the agent if one runs), so a run needs no agent. Signals: Ctrl-C in a terminal reaches the
//! command by itself (same process group); a SIGINT, SIGTERM or SIGHUP sent to the wrapper alone
//! is forwarded to the command. Either way the wrapper stays to record the run as cancelled, and
//! exits with the command's code (128 + the signal when a signal ended it).
//!
//! `labmesh run phase NAME`, inside a wrapped command, appends to the run's phase file; the
//! wrapper reads it at the end (the phases, and the one running when the command failed).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sync::event::{NewEvent, Severity};
use sync::store::EventWriter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::cli::run::{RunArgs, RunSub};
use labmesh::config::Settings;
use labmesh::error::UsageError;
use labmesh::runs::context::{self, GitFacts};
use labmesh::runs::history::RunKind;
use labmesh::runs::output::{OutputSummary, Stream};
use labmesh::runs::redact::Redactor;
use labmesh::runs::schema::{
    self, PHASE_FILE_ENV, Phase, RUN_ID_ENV, RUN_LOG_DIR, RepoSync, RunContext, RunEnd, RunPayload,
    Stage,
};

pub fn run(settings: &Settings, args: &RunArgs) -> anyhow::Result<u8> {
    if let Some(RunSub::Phase { name }) = &args.sub {
        return phase(name);
    }
    if args.command.is_empty() {
        return Err(UsageError(
            "labmesh run: give the command after `--`, e.g. `labmesh run --kind build -- cargo build --release`".into(),
        )
        .into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(wrap(settings, args))
}

/// `labmesh run phase NAME`: one line in the run's phase file.
fn phase(name: &str) -> anyhow::Result<u8> {
    let Some(file) = std::env::var_os(PHASE_FILE_ENV) else {
        return Err(UsageError(format!(
            "labmesh run phase {name}: not inside `labmesh run` ({PHASE_FILE_ENV} is not set); run the script as `labmesh run -- ./script.sh`"
        ))
        .into());
    };
    let line = json!({"name": name, "started": Utc::now()}).to_string();
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&file)
        .with_context(|| format!("opening the phase file {}", PathBuf::from(&file).display()))?;
    writeln!(f, "{line}")?;
    Ok(crate::cli::exit::OK)
}

/// Everything a run writes, besides passing the output through.
struct Recorder {
    writer: EventWriter,
    hlc: sync::clock::HybridClock,
    node: String,
    kind: RunKind,
    context: RunContext,
    log: BufWriter<File>,
    redactor: Redactor,
    summary: OutputSummary,
    /// Output bytes in the log so far, the cap, and lines left out past it.
    log_bytes: u64,
    log_cap: u64,
    lines_dropped: u64,
}

impl Recorder {
    fn event(&self, stage: Stage, end: RunEnd) -> anyhow::Result<Value> {
        let severity = match stage {
            Stage::Failed | Stage::Abandoned => Severity::Error,
            Stage::Cancelled => Severity::Warning,
            Stage::Started | Stage::Completed => Severity::Info,
        };
        let payload = RunPayload {
            context: self.context.clone(),
            end,
        };
        let Value::Object(map) = serde_json::to_value(&payload)? else {
            anyhow::bail!("a run payload is not a JSON object");
        };
        let new = NewEvent::new(
            &schema::event_type(self.kind, stage),
            severity,
            &self.context.script,
        )
        .service(&self.context.service)
        .correlation_id(&self.context.run_id)
        .payload(map);
        let event = self
            .hlc
            .stamp_event(new, &self.node)
            .map_err(|e| anyhow::anyhow!("the run event is invalid: {e}"))?;
        self.writer.write(&event)?;
        Ok(serde_json::from_slice(&event.to_file_bytes())?)
    }

    /// A lifecycle record in the seed's JSON log shape.
    fn lifecycle(&mut self, level: &str, event: &str, extra: Value) -> std::io::Result<()> {
        let c = &self.context;
        let mut rec = json!({
            "timestamp": Utc::now(),
            "level": level,
            "event": event,
            "script": c.script,
            "target": c.target,
            "backend": c.backend,
            "git_commit": c.git_commit,
            "git_branch": c.git_branch,
            "run_id": c.run_id,
        });
        if let (Value::Object(rec), Value::Object(extra)) = (&mut rec, extra) {
            rec.extend(extra);
        }
        writeln!(self.log, "{rec}")
    }

    fn output_line(&mut self, stream: Stream, line: &str) -> std::io::Result<()> {
        let clean = self.redactor.line(line).into_owned();
        self.summary.line(stream, &clean);
        let stream = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let record = json!({"timestamp": Utc::now(), "stream": stream, "line": clean}).to_string();
        if self.log_bytes + record.len() as u64 > self.log_cap {
            if self.lines_dropped == 0 {
                self.lifecycle(
                    "WARN",
                    "log_truncated",
                    json!({"max_bytes": self.log_cap, "note": "the run log keeps its first bytes only; the output went on to the terminal"}),
                )?;
            }
            self.lines_dropped += 1;
            return Ok(());
        }
        self.log_bytes += record.len() as u64 + 1;
        writeln!(self.log, "{record}")
    }
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_owned())
}

fn context_of(
    node: &str,
    args: &RunArgs,
    run_id: &str,
    cwd: &Path,
    git: &GitFacts,
    redactor: &Redactor,
) -> RunContext {
    let program = &args.command[0];
    let service = args.service.clone().unwrap_or_else(|| {
        git.top
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file_name(program))
    });
    RunContext {
        run_id: run_id.to_owned(),
        kind: Some(args.kind.into()),
        service,
        backend: args.backend.clone(),
        target: args.target_host.clone().unwrap_or_else(|| node.to_owned()),
        script: args.script.clone().unwrap_or_else(|| file_name(program)),
        command: args.command.iter().map(|a| redactor.text(a)).collect(),
        cwd: cwd.display().to_string(),
        git_commit: git.commit.clone(),
        git_branch: git.branch.clone(),
        git_dirty: git.dirty,
        git_remote: git.remote.clone(),
        hostname: labmesh::config::host_name(),
        os: std::env::consts::OS.to_owned(),
        os_version: context::os_version(),
        gpu: context::gpu_line(),
        wrapper_pid: std::process::id(),
        log: format!("{RUN_LOG_DIR}/{run_id}.jsonl"),
    }
}

async fn wrap(settings: &Settings, args: &RunArgs) -> anyhow::Result<u8> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let run_id = uuid::Uuid::now_v7().hyphenated().to_string();
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let redactor = Redactor::from_env(std::env::vars());
    let mut repo_sync = None;
    if args.git_pull {
        repo_sync = Some(git_pull(&cwd).await);
    }
    let git = context::git_facts(&cwd);
    let context = context_of(&settings.name, args, &run_id, &cwd, &git, &redactor);
    let log_dir = settings.data_dir.join(RUN_LOG_DIR);
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("creating the run log folder {}", log_dir.display()))?;
    let log_path = log_dir.join(format!("{run_id}.jsonl"));
    let phase_path = log_dir.join(format!("{run_id}.phases"));
    let log = File::create(&log_path)
        .with_context(|| format!("creating the run log {}", log_path.display()))?;
    let mut rec = Recorder {
        writer: EventWriter::new(&settings.data_dir, settings.max_event_bytes),
        hlc: sync::clock::HybridClock::for_writer(
            &settings.data_dir,
            settings.store_config().clock,
        ),
        node: settings.name.clone(),
        kind: args.kind.into(),
        context,
        log: BufWriter::new(log),
        redactor,
        summary: OutputSummary::new(),
        log_bytes: 0,
        log_cap: labmesh::runs::logs::run_log_cap(),
        lines_dropped: 0,
    };
    let start_word = format!("{}_start", schema::event_prefix(rec.kind));
    rec.lifecycle("INFO", &start_word, json!({"command": rec.context.command}))?;
    rec.log.flush()?;
    rec.event(Stage::Started, RunEnd::default())?;

    let mut cmd = tokio::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .env(RUN_ID_ENV, &run_id)
        .env(PHASE_FILE_ENV, &phase_path)
        .stdin(std::process::Stdio::inherit());
    let pty = if args.no_pty || !rustix::termios::isatty(std::io::stdout()) {
        None
    } else {
        open_pty()
    };
    let master = match pty {
        Some((master, slave)) => {
            let out = slave.try_clone().context("duplicating the terminal")?;
            cmd.stdout(std::process::Stdio::from(out))
                .stderr(std::process::Stdio::from(slave));
            Some(master)
        }
        None => {
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            None
        }
    };
    let spawned = cmd.spawn();
    // The command holds the terminal's other end now; ours must close, or reading it never
    // ends.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let end = RunEnd {
                started: Some(started_at),
                duration_seconds: Some(clock.elapsed().as_secs_f64()),
                exit_code: Some(127),
                tail: vec![format!(
                    "labmesh run: cannot start {}: {e}",
                    args.command[0]
                )],
                repo_sync,
                ..RunEnd::default()
            };
            rec.lifecycle(
                "ERROR",
                &failed_word(rec.kind),
                json!({"error": e.to_string()}),
            )?;
            rec.log.flush()?;
            rec.event(Stage::Failed, end)?;
            eprintln!(
                "labmesh run: cannot start {:?}: {e} (is it on PATH and executable?)",
                args.command[0]
            );
            return Ok(127);
        }
    };
    let (tx, mut rx) = mpsc::channel::<(Stream, String)>(1024);
    let from_pty = master.map(|m| {
        let file = tokio::fs::File::from_std(std::fs::File::from(m));
        tokio::spawn(pass_through(
            file,
            tokio::io::stdout(),
            Stream::Stdout,
            tx.clone(),
        ))
    });
    let readers = [
        from_pty,
        child.stdout.take().map(|out| {
            tokio::spawn(pass_through(
                out,
                tokio::io::stdout(),
                Stream::Stdout,
                tx.clone(),
            ))
        }),
        child.stderr.take().map(|err| {
            tokio::spawn(pass_through(
                err,
                tokio::io::stderr(),
                Stream::Stderr,
                tx.clone(),
            ))
        }),
    ];
    drop(tx);
    let pid = child.id();
    let mut signals = Signals::new()?;
    let mut cancelled_by: Option<&'static str> = None;
    let mut status = None;
    let mut lines_open = true;
    while status.is_none() || lines_open {
        tokio::select! {
            line = rx.recv(), if lines_open => match line {
                Some((stream, line)) => {
                    rec.output_line(stream, &line)?;
                    // Live followers (`runs log -f`, SSE) see a line as soon as the output
                    // pauses; a burst is written in one go.
                    if rx.is_empty() {
                        rec.log.flush()?;
                    }
                }
                None => lines_open = false,
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s.context("waiting for the command")?);
            }
            name = signals.next(), if status.is_none() => {
                cancelled_by.get_or_insert(name);
                forward(pid, name);
            }
        }
    }
    for r in readers.into_iter().flatten() {
        let _ = r.await;
    }
    let status = status.context("the command's status")?;
    let (exit_code, signal) = exit_of(&status);
    let summary = std::mem::take(&mut rec.summary).finish();
    let phases = read_phases(&phase_path, started_at, Utc::now(), repo_sync.as_ref());
    let _ = std::fs::remove_file(&phase_path);
    let stage = match (cancelled_by, status.success()) {
        (Some(_), _) => Stage::Cancelled,
        (None, true) => Stage::Completed,
        (None, false) => Stage::Failed,
    };
    let artifact = args.artifact.as_ref().map(|p| {
        if p.is_absolute() {
            p.clone()
        } else {
            cwd.join(p)
        }
    });
    let artifact_bytes = artifact
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.len());
    let failing_phase = (stage == Stage::Failed)
        .then(|| phases.last().map(|p| p.name.clone()))
        .flatten();
    let end = RunEnd {
        started: Some(started_at),
        duration_seconds: Some(clock.elapsed().as_secs_f64()),
        exit_code: Some(exit_code),
        signal: cancelled_by.map(str::to_owned).or(signal),
        artifact: artifact.map(|p| p.display().to_string()),
        artifact_bytes,
        diagnostics: summary.diagnostics,
        tests: summary.tests,
        phases,
        failing_phase,
        repo_sync,
        tail: summary.tail.into_iter().map(|t| t.text).collect(),
    };
    let (level, word) = match stage {
        Stage::Completed => (
            "INFO",
            format!("{}_complete", schema::event_prefix(rec.kind)),
        ),
        Stage::Cancelled => ("WARN", format!("{}_cancel", schema::event_prefix(rec.kind))),
        _ => ("ERROR", failed_word(rec.kind)),
    };
    rec.lifecycle(
        level,
        &word,
        json!({"exit_code": exit_code, "duration_seconds": end.duration_seconds, "log_lines_dropped": rec.lines_dropped}),
    )?;
    rec.log.flush()?;
    rec.log.get_ref().sync_all()?;
    let doc = rec.event(stage, end)?;
    if args.json {
        eprintln!("{doc}");
    }
    if let Some(dir) = &args.textfile_dir {
        // The run is recorded either way; a textfile that cannot be written is said, not fatal.
        if let Err(e) = super::textfile::write(settings, dir) {
            eprintln!("labmesh run: {e:#}");
        }
    }
    Ok(u8::try_from(exit_code.clamp(0, 255)).unwrap_or(1))
}

fn failed_word(kind: RunKind) -> String {
    format!("{}_fail", schema::event_prefix(kind))
}

/// The exit code to pass on, and the signal that ended the command (if one did).
fn exit_of(status: &std::process::ExitStatus) -> (i32, Option<String>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(signal_name(sig))),
        (None, None) => (1, None),
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        1 => "SIGHUP".into(),
        2 => "SIGINT".into(),
        9 => "SIGKILL".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// Copies the command's output to ours as it comes (bytes unchanged, flushed each read, so
/// progress bars and prompts show at once) and hands complete lines to the recorder.
async fn pass_through(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    stream: Stream,
    lines: mpsc::Sender<(Stream, String)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        // Our own output going away (a closed pipe) must not stop the command's.
        let _ = to.write_all(chunk).await;
        let _ = to.flush().await;
        pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
            // A terminal ends lines with \r\n.
            let end = if i > 0 && pending[start + i - 1] == b'\r' {
                start + i - 1
            } else {
                start + i
            };
            let line = String::from_utf8_lossy(&pending[start..end]).into_owned();
            start += i + 1;
            if lines.send((stream, line)).await.is_err() {
                return;
            }
        }
        pending.drain(..start);
        // A line with no end in sight (a progress bar redrawn with \r) is cut, not kept whole.
        if pending.len() > 1 << 20 {
            let line = String::from_utf8_lossy(&pending).into_owned();
            pending.clear();
            let _ = lines.send((stream, line)).await;
        }
    }
    if !pending.is_empty() {
        let _ = lines
            .send((stream, String::from_utf8_lossy(&pending).into_owned()))
            .await;
    }
}

/// A pseudo-terminal for the command (master, slave), sized like ours: programs that check
/// for a terminal keep their colours and progress bars. `None` when the system has none to
/// give (then the command gets pipes).
fn open_pty() -> Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use rustix::fs::{Mode, OFlags, open};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).ok()?;
    grantpt(&master).ok()?;
    unlockpt(&master).ok()?;
    let name = ptsname(&master, Vec::new()).ok()?;
    let slave = open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
        let _ = rustix::termios::tcsetwinsize(&slave, size);
    }
    // Output passes as the command wrote it: our own terminal turns \n into \r\n once.
    if let Ok(mut modes) = rustix::termios::tcgetattr(&slave) {
        modes
            .output_modes
            .remove(rustix::termios::OutputModes::OPOST);
        let _ = rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &modes);
    }
    Some((master, slave))
}

/// The signals a wrapper forwards.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("listening for SIGHUP")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

fn forward(pid: Option<u32>, name: &str) {
    use rustix::process::{Pid, Signal, kill_process};
    let signal = match name {
        "SIGINT" => Signal::INT,
        "SIGHUP" => Signal::HUP,
        _ => Signal::TERM,
    };
    let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(Pid::from_raw)
    else {
        return;
    };
    // Already gone is fine: it was going to end anyway.
    let _ = kill_process(pid, signal);
}

/// The phases a run marked, each lasting until the next began or the run ended; `repo_sync`
/// first when the wrapper pulled.
fn read_phases(
    path: &Path,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
    repo_sync: Option<&RepoSync>,
) -> Vec<Phase> {
    let mut marks: Vec<(String, DateTime<Utc>)> = Vec::new();
    if let Some(sync) = repo_sync {
        marks.push(("repo_sync".into(), started));
        let until = started
            + chrono::Duration::milliseconds((sync.duration_seconds * 1000.0).round() as i64);
        marks.push(("command".into(), until));
    }
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let (Some(name), Some(at)) = (
                v["name"].as_str(),
                v["started"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok()),
            ) else {
                continue;
            };
            marks.push((name.chars().take(100).collect(), at.with_timezone(&Utc)));
        }
    }
    let ends: Vec<DateTime<Utc>> = marks
        .iter()
        .skip(1)
        .map(|(_, at)| *at)
        .chain(std::iter::once(ended))
        .collect();
    marks
        .into_iter()
        .zip(ends)
        .map(|((name, at), end)| Phase {
            name,
            started: at,
            duration_seconds: (end - at).num_milliseconds().max(0) as f64 / 1000.0,
        })
        .collect()
}

/// `git pull --ff-only`, its output passed through, measured.
async fn git_pull(cwd: &Path) -> RepoSync {
    let before = context::git_object_bytes(cwd);
    let commit_before = context::git_facts(cwd).commit;
    let t = Instant::now();
    let ok = tokio::process::Command::new("git")
        .args(["pull", "--ff-only"])
        .current_dir(cwd)
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    let after = context::git_object_bytes(cwd);
    RepoSync {
        ok,
        duration_seconds: t.elapsed().as_secs_f64(),
        bytes: match (before, after) {
            (Some(b), Some(a)) => a.saturating_sub(b),
            _ => 0,
        },
        commit_before,
    }
}
