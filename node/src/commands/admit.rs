//! `labmesh admit`: asks the local agent (`GET /v1/admit`) whether this host, or with
//! `--anywhere` which node, can take a job. When no agent runs, the question about this host is
//! answered by measuring it directly. Exit 0 yes, 1 no, 2 bad input, 3 no agent (--anywhere).

use std::io::Write;
use std::path::PathBuf;

use serde_json::Value;

use crate::cli::AdmitArgs;
use crate::cli::exit;
use labmesh::admit::{self, Request, gather};
use labmesh::client;
use labmesh::config::{AdmitSection, Settings, resolve_floors};
use labmesh::error::UsageError;
use labmesh::output::text;

fn size(flag: &str, text: &Option<String>) -> Result<Option<u64>, UsageError> {
    text.as_deref()
        .map(|t| admit::parse_size(t).map_err(|e| UsageError(format!("--{flag}: {e}"))))
        .transpose()
}

/// Percent-encodes a query value (everything but unreserved characters and `/`).
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn run(settings: &Settings, args: &AdmitArgs) -> anyhow::Result<u8> {
    let req = Request {
        mem: size("mem", &args.mem)?,
        vram: size("vram", &args.vram)?,
        disk: size("disk", &args.disk)?,
    };
    if req.is_empty() {
        return Err(UsageError(
            "say what the job needs: at least one of --mem, --vram or --disk (e.g. --mem 8G)"
                .into(),
        )
        .into());
    }
    // Validate the floor flags here, so a typo is a usage error and not a remote 400.
    let floors = resolve_floors(
        Some(&args.floors.overrides()),
        &AdmitSection::default(),
        settings.floors,
        &|k| k.to_owned(),
    )?;
    let path = match &args.path {
        Some(p) => std::path::absolute(p)
            .map_err(|e| UsageError(format!("--path {}: {e}", p.display())))?,
        None => PathBuf::from("/"),
    };
    let mut query = Vec::new();
    for (key, value) in [
        ("mem", &args.mem),
        ("vram", &args.vram),
        ("disk", &args.disk),
        ("min_free_mem", &args.floors.min_free_mem),
        ("min_free_vram", &args.floors.min_free_vram),
        ("min_free_disk", &args.floors.min_free_disk),
    ] {
        if let Some(v) = value {
            query.push(format!("{key}={}", encode(v.trim())));
        }
    }
    if args.anywhere {
        query.push("anywhere=true".into());
    } else {
        query.push(format!("path={}", encode(&path.to_string_lossy())));
    }
    let target = format!("/v1/admit?{}", query.join("&"));
    let answer = match client::request(settings.api_addr, "GET", &target, None, None) {
        Ok(resp) if resp.status == 200 => resp.json()?,
        Ok(resp) if resp.status == 400 => {
            let msg = resp
                .json()
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned));
            return Err(UsageError(msg.unwrap_or(resp.body)).into());
        }
        Ok(resp) => anyhow::bail!(
            "the agent at {} answered {}: {}",
            settings.api_addr,
            resp.status,
            resp.body
        ),
        Err(e) if !args.anywhere => {
            // No agent: measure this host directly (NVML and statvfs; memory read now).
            tracing::debug!(error = %e, "no agent; measuring this host directly");
            let gpu = labmesh::probes::gpu::GpuProbe::new().sample();
            let mut answer = gather::answer_here(&settings.name, &req, &floors, &gpu, &path);
            answer["source"] = Value::from(format!(
                "measured here: no agent answered at {}",
                settings.api_addr
            ));
            answer
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &answer)?;
        writeln!(out)?;
    } else if args.anywhere {
        print_ranking(&mut out, &answer)?;
    } else {
        print_here(&mut out, &answer)?;
    }
    Ok(if answer["admit"] == Value::Bool(true) {
        exit::OK
    } else {
        exit::NO
    })
}

fn print_here(out: &mut impl Write, answer: &Value) -> std::io::Result<()> {
    let yes = answer["admit"] == Value::Bool(true);
    writeln!(
        out,
        "{}: {}",
        text(&answer["node"]),
        if yes { "yes" } else { "no" }
    )?;
    for c in answer["checks"].as_array().into_iter().flatten() {
        let mark = if c["ok"] == Value::Bool(true) {
            "ok  "
        } else {
            "NO  "
        };
        writeln!(out, "  {mark}{}", text(&c["reason"]))?;
    }
    let (path, measured) = (&answer["path"], &answer["measured_path"]);
    if answer["checks"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["resource"] == "disk"))
        && !measured.is_null()
        && path != measured
    {
        writeln!(
            out,
            "  (disk measured at {}, the nearest existing folder of {})",
            text(measured),
            text(path)
        )?;
    }
    if let Some(source) = answer["source"].as_str() {
        writeln!(out, "  ({source})")?;
    }
    Ok(())
}

fn print_ranking(out: &mut impl Write, answer: &Value) -> std::io::Result<()> {
    let nodes = answer["nodes"].as_array().cloned().unwrap_or_default();
    match answer["best"].as_str() {
        Some(best) => writeln!(out, "best: {best}")?,
        None => writeln!(out, "no live node can take it")?,
    }
    let mut rows = vec![
        ["NODE", "ADMIT", "SCORE", "AGE", "REASON"]
            .map(String::from)
            .to_vec(),
    ];
    for n in &nodes {
        let mut name = text(&n["node"]);
        if n["self"] == Value::Bool(true) {
            name.push_str(" *");
        }
        rows.push(vec![
            name,
            if n["admit"] == Value::Bool(true) {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
            text(&n["score"]),
            n["summary_age_s"]
                .as_i64()
                .map_or(String::new(), |a| format!("{a}s")),
            text(&n["reason"]),
        ]);
    }
    for line in labmesh::output::table("", &rows) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("/srv/my models"), "/srv/my%20models");
        assert_eq!(encode("1.5GiB"), "1.5GiB");
        assert_eq!(encode("a&b=c"), "a%26b%3Dc");
    }
}
