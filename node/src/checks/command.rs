//! The command probe: runs a program (or a shell line) with a timeout, in its own process group
//! so that a timeout kills the whole tree (a shell and what it started), and captures stdout and
//! stderr interleaved, as a terminal shows them, up to [`OUTPUT_CAP`] bytes. The rest is read
//! and dropped, so a chatty command never blocks on a full pipe.
//!
//! Exit codes follow the Nagios plugin convention: 0 ok, 1 warning, anything else (or a kill by
//! a signal, or the timeout) critical.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::machine::Status;
use super::probe::{OUTPUT_CAP, ProbeResult, cap};

/// After the process exits, how long to wait for the pipe to close (a daemonised grandchild
/// may hold it open forever).
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// What every command check gets from the agent's environment: enough to find programs and
/// print text. Anything else (receiver webhooks, SMTP passwords, tokens) only by name, in the
/// check's `env`.
pub const BASE_ENV: [&str; 9] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

pub async fn run(argv: &[String], pass_env: &[String], timeout: Duration) -> ProbeResult {
    let started = Instant::now();
    let (status, output) = match execute(argv, pass_env, timeout).await {
        Ok(found) => found,
        Err(e) => (Status::Critical, e),
    };
    ProbeResult {
        status,
        output,
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// The status for an exit code (`None`: killed by a signal).
pub fn status_for_exit(code: Option<i32>) -> Status {
    match code {
        Some(0) => Status::Ok,
        Some(1) => Status::Warning,
        _ => Status::Critical,
    }
}

async fn execute(
    argv: &[String],
    pass_env: &[String],
    timeout: Duration,
) -> Result<(Status, String), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no command to run".into());
    };
    let (reader, writer) =
        std::io::pipe().map_err(|e| format!("cannot create a pipe for the output: {e}"))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| format!("cannot create a pipe for the output: {e}"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_clear();
    for name in BASE_ENV
        .iter()
        .copied()
        .chain(pass_env.iter().map(String::as_str))
    {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program:?}: {e}"))?;
    // Our copies of the write end must close, or the read end never sees EOF.
    drop(cmd);
    let pgid = child.id();
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
        .map_err(|e| format!("cannot read the command's output: {e}"))?;
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    let mut eof = false;
    let deadline = tokio::time::Instant::now() + timeout;
    let exit = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| e.to_string()),
            n = pipe.read(&mut buf), if !eof => match n {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => keep(&mut output, &buf[..n]),
            },
            () = tokio::time::sleep_until(deadline) => {
                kill_group(pgid);
                let _ = child.kill().await;
                let text = String::from_utf8_lossy(&output).into_owned();
                let mut out = format!("timed out after {}s (killed)", timeout.as_secs_f64());
                if !text.trim().is_empty() {
                    out.push('\n');
                    out.push_str(&text);
                }
                return Ok((Status::Critical, cap(&out, OUTPUT_CAP)));
            }
        }
    };
    // Whatever is still in the pipe (or until a grandchild that kept it open gives up).
    let drain = async {
        while !eof {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => keep(&mut output, &buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;
    kill_group(pgid);
    let exit = exit?;
    let text = String::from_utf8_lossy(&output).trim_end().to_owned();
    let status = status_for_exit(exit.code());
    let text = match exit.code() {
        Some(0) => text,
        Some(code) => prefix(&format!("exit {code}"), &text),
        None => prefix("killed by a signal", &text),
    };
    Ok((status, cap(&text, OUTPUT_CAP)))
}

fn prefix(head: &str, text: &str) -> String {
    if text.is_empty() {
        head.to_owned()
    } else {
        format!("{head}: {text}")
    }
}

fn keep(output: &mut Vec<u8>, chunk: &[u8]) {
    let room = OUTPUT_CAP.saturating_sub(output.len());
    output.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

/// Kills what is left of the command's process group (children it left behind).
fn kill_group(pgid: Option<u32>) {
    let pid = pgid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(line: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), line.into()]
    }

    #[tokio::test]
    async fn exit_codes_map_to_statuses() {
        let ok = run(&sh("echo fine"), &[], Duration::from_secs(5)).await;
        assert_eq!((ok.status, ok.output.as_str()), (Status::Ok, "fine"));
        let warn = run(&sh("echo slow >&2; exit 1"), &[], Duration::from_secs(5)).await;
        assert_eq!(warn.status, Status::Warning);
        assert_eq!(warn.output, "exit 1: slow");
        let crit = run(&sh("exit 2"), &[], Duration::from_secs(5)).await;
        assert_eq!(
            (crit.status, crit.output.as_str()),
            (Status::Critical, "exit 2")
        );
    }

    #[tokio::test]
    async fn stdout_and_stderr_interleave() {
        let r = run(
            &sh("echo a; echo b >&2; echo c"),
            &[],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.output, "a\nb\nc");
    }

    #[tokio::test]
    async fn output_is_capped_and_a_chatty_command_still_finishes() {
        let r = run(
            &sh("head -c 1000000 /dev/zero | tr '\\0' x; echo"),
            &[],
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r.status, Status::Ok);
        assert!(r.output.len() <= OUTPUT_CAP, "{}", r.output.len());
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let started = Instant::now();
        let r = run(
            &sh("echo started; sleep 30; echo never"),
            &[],
            Duration::from_millis(300),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(r.status, Status::Critical);
        assert!(r.output.starts_with("timed out after 0.3s"), "{}", r.output);
        assert!(r.output.contains("started"), "{}", r.output);
    }

    #[tokio::test]
    async fn a_missing_program_is_critical_with_its_name() {
        let r = run(
            &["/no/such/program".to_owned()],
            &[],
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(r.status, Status::Critical);
        assert!(r.output.contains("/no/such/program"), "{}", r.output);
    }

    #[tokio::test]
    async fn a_command_sees_only_the_basic_environment_and_what_its_check_names() {
        // Cargo runs tests with its own variables set: one stands for a secret, one is named.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let named = std::env::var("CARGO_PKG_NAME").unwrap();
        let r = run(
            &sh("env"),
            &["CARGO_PKG_NAME".to_owned()],
            Duration::from_secs(5),
        )
        .await;
        assert!(!r.output.contains("CARGO_MANIFEST_DIR="), "{}", r.output);
        assert!(
            r.output.contains(&format!("CARGO_PKG_NAME={named}")),
            "{}",
            r.output
        );
        assert!(r.output.contains("PATH="), "{}", r.output);
    }
}
