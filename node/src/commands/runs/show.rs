//! `labmesh runs show ID`.

use serde::Serialize;

use super::*;

/// `runs show --json`.
#[derive(Serialize)]
pub(super) struct ShowJson<'a> {
    #[serde(flatten)]
    record: &'a RunRecord,
    payload: &'a RunPayload,
    /// The log's full path on the host that ran it.
    log_path: Option<String>,
    start_event: Option<uuid::Uuid>,
    end_event: Option<uuid::Uuid>,
    events: &'a [uuid::Uuid],
}

pub(super) fn show(settings: &Settings, args: &RunsShowArgs) -> anyhow::Result<u8> {
    let now = Utc::now();
    let want = args.id.trim();
    if want.is_empty() {
        return Err(UsageError(
            "runs show: give a run id (or a prefix of one); `labmesh runs list` shows them".into(),
        )
        .into());
    }
    let folded = load(settings, None, None, None, now)?;
    let run = find(&folded, want)?;
    let log_path = log_path(settings, &run.payload);
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        let doc = ShowJson {
            record: &run.record,
            payload: &run.payload,
            log_path,
            start_event: run.start_event,
            end_event: run.end_event,
            events: &run.events,
        };
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        write_show(
            &mut out,
            &settings.name,
            run,
            log_path,
            now,
            color_enabled(),
        )?;
    }
    out.flush()?;
    Ok(exit::OK)
}

/// The run `want` names: the one whose id it is, else the one whose id it begins.
pub(super) fn find<'a>(folded: &'a Folded, want: &str) -> anyhow::Result<&'a RunDetail> {
    if let Some(exact) = folded.runs.iter().find(|r| r.record.id == want) {
        return Ok(exact);
    }
    let candidates: Vec<&RunDetail> = folded
        .runs
        .iter()
        .filter(|r| r.record.id.starts_with(want))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        [] if folded.runs.is_empty() => anyhow::bail!("no run {want:?}: {NO_RUNS}"),
        [] => anyhow::bail!(
            "no run id starts with {want:?} ({} runs recorded; `labmesh runs list` shows them)",
            folded.runs.len()
        ),
        many => {
            const NAMED: usize = 10;
            let mut names: Vec<String> = many
                .iter()
                .take(NAMED)
                .map(|r| {
                    format!(
                        "{} ({} {} on {}, {})",
                        r.record.id,
                        kind_name(r.record.kind),
                        r.record.service,
                        r.record.host,
                        rfc3339_local(r.record.started)
                    )
                })
                .collect();
            if many.len() > NAMED {
                names.push(format!("and {} more", many.len() - NAMED));
            }
            Err(UsageError(format!(
                "run id prefix {want:?} is ambiguous, {} runs match: {}; give more of the id",
                many.len(),
                names.join(", ")
            ))
            .into())
        }
    }
}

/// `<data>/<log>`: where the run's log is on the host that ran it.
pub(super) fn log_path(settings: &Settings, payload: &RunPayload) -> Option<String> {
    let log = payload.context.log.trim();
    (!log.is_empty()).then(|| settings.data_dir.join(log).display().to_string())
}

pub(super) fn write_show(
    out: &mut impl Write,
    this_host: &str,
    run: &RunDetail,
    log_path: Option<String>,
    now: DateTime<Utc>,
    color: bool,
) -> io::Result<()> {
    let rec = &run.record;
    let c = &run.payload.context;
    let end = &run.payload.end;
    let what = format!(
        "{} {}{}",
        kind_name(rec.kind),
        rec.service,
        rec.backend
            .as_deref()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default()
    );
    let mut rows: Vec<(&str, String)> = vec![("run", rec.id.clone()), ("what", what)];
    let mut outcome = paint(outcome_name(rec.outcome), outcome_color(rec.outcome), color);
    if let Some(code) = end.exit_code {
        outcome.push_str(&format!(", exit code {code}"));
    }
    if let Some(signal) = &end.signal {
        outcome.push_str(&format!(", signal {signal}"));
    }
    if rec.outcome == Outcome::Abandoned && run.end_event.is_none() {
        outcome.push_str(" (started, never ended: the wrapper is gone or silent for 7 days)");
    }
    rows.push(("outcome", outcome));
    rows.push((
        "started",
        format!("{} ({})", rfc3339_local(rec.started), ago(rec.started, now)),
    ));
    match rec.duration() {
        Some(d) => rows.push(("duration", secs(d))),
        None if rec.outcome == Outcome::Running => rows.push((
            "duration",
            format!("{} so far", secs(elapsed(rec.started, now))),
        )),
        None => {}
    }
    if !c.command.is_empty() {
        rows.push(("command", shell_words(&c.command)));
    }
    if !c.script.is_empty() {
        rows.push(("script", c.script.clone()));
    }
    if !c.cwd.is_empty() {
        rows.push(("cwd", c.cwd.clone()));
    }
    if let Some(git) = git_line(c) {
        rows.push(("git", git));
    }
    if let Some(remote) = &c.git_remote {
        rows.push(("remote", remote.clone()));
    }
    let mut host = rec.host.clone();
    if !c.hostname.is_empty() && c.hostname != rec.host {
        host.push_str(&format!(" (hostname {})", c.hostname));
    }
    if !c.target.is_empty() && c.target != rec.host && c.target != c.hostname {
        host.push_str(&format!(", target {}", c.target));
    }
    rows.push(("host", host));
    if !c.os.is_empty() {
        let os = match &c.os_version {
            Some(v) => format!("{} {v}", c.os),
            None => c.os.clone(),
        };
        rows.push(("os", os));
    }
    if let Some(gpu) = &c.gpu {
        rows.push(("gpu", gpu.clone()));
    }
    if let Some(sync) = &end.repo_sync {
        let mut text = format!(
            "{} in {}",
            if sync.ok { "ok" } else { "FAILED" },
            secs(sync.duration_seconds)
        );
        if sync.bytes > 0 {
            text.push_str(&format!(", {} received", format_size(sync.bytes)));
        }
        if let Some(before) = &sync.commit_before {
            text.push_str(&format!(", from {}", prefix(before, COMMIT_PREFIX)));
        }
        rows.push(("git pull", text));
    }
    if let Some(phase) = &end.failing_phase {
        rows.push(("failed in", phase.clone()));
    }
    let d = end.diagnostics;
    if d.warnings + d.errors + d.clippy_warnings + d.clippy_errors > 0 {
        let mut text = format!("{} warning(s), {} error(s)", d.warnings, d.errors);
        if d.clippy_warnings + d.clippy_errors > 0 {
            text.push_str(&format!(
                " (clippy: {} warning(s), {} error(s))",
                d.clippy_warnings, d.clippy_errors
            ));
        }
        rows.push(("diagnostics", text));
    }
    if let Some(t) = rec.tests {
        rows.push(("tests", tests_long(t)));
    }
    match (&end.artifact, rec.artifact_bytes) {
        (Some(path), Some(bytes)) => {
            rows.push(("artifact", format!("{path}, {}", format_size(bytes))))
        }
        (Some(path), None) => rows.push(("artifact", format!("{path} (not found at the end)"))),
        (None, Some(bytes)) => rows.push(("artifact", format_size(bytes))),
        (None, None) => {}
    }
    if let Some(path) = log_path {
        let on = if rec.host == this_host {
            String::new()
        } else {
            format!(" (on {})", rec.host)
        };
        rows.push(("log", format!("{path}{on}")));
    }
    let mut events = Vec::new();
    if let Some(id) = run.start_event {
        events.push(format!("start {id}"));
    }
    if let Some(id) = run.end_event {
        events.push(format!("end {id}"));
    }
    if run.events.len() > events.len() {
        events.push(format!("{} events in all", run.events.len()));
    }
    rows.push(("events", events.join(", ")));

    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in &rows {
        writeln!(out, "{key:<width$}  {value}")?;
    }
    if !end.phases.is_empty() {
        writeln!(out)?;
        writeln!(out, "phases:")?;
        let name_width = end
            .phases
            .iter()
            .map(|p| p.name.chars().count())
            .max()
            .unwrap_or(0);
        for p in &end.phases {
            let failing = if end.failing_phase.as_deref() == Some(p.name.as_str()) {
                "  <- failed here"
            } else {
                ""
            };
            let pad = name_width.saturating_sub(p.name.chars().count());
            writeln!(
                out,
                "  {}{}  {:>8}{failing}",
                p.name,
                " ".repeat(pad),
                secs(p.duration_seconds)
            )?;
        }
    }
    if !end.tail.is_empty() {
        writeln!(out)?;
        writeln!(out, "last {} line(s):", end.tail.len())?;
        for line in &end.tail {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

/// `abc1234 on main, dirty`.
pub(super) fn git_line(c: &RunContext) -> Option<String> {
    if c.git_commit.is_none() && c.git_branch.is_none() {
        return None;
    }
    let mut text = c.git_commit.as_deref().unwrap_or("(no commit)").to_owned();
    if let Some(branch) = &c.git_branch {
        text.push_str(&format!(" on {branch}"));
    }
    match c.git_dirty {
        Some(true) => text.push_str(", dirty (uncommitted changes)"),
        Some(false) => text.push_str(", clean"),
        None => {}
    }
    Some(text)
}
