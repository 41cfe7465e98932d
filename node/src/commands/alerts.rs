//! `labmesh alerts [--json]` and `labmesh silence add|list|clear`: the local agent's view of
//! open alerts, and silences and expectations (`labmesh expect`, `--remove`) written as events
//! through its token-protected API.

use std::io::Write;

use serde_json::{Value, json};

use crate::cli::{AlertsArgs, ExpectArgs, SilenceCommand, exit};
use labmesh::client;
use labmesh::config::Settings;
use labmesh::error::UsageError;
use labmesh::output::shown as text;

fn get(settings: &Settings, path: &str) -> anyhow::Result<Value> {
    let resp = client::request(settings.api_addr, "GET", path, None, None)?;
    if resp.status != 200 {
        anyhow::bail!("the agent answered {}: {}", resp.status, resp.body);
    }
    Ok(resp.json()?)
}

pub fn post(settings: &Settings, path: &str, body: &Value) -> anyhow::Result<Value> {
    send(settings, "POST", path, Some(body))
}

/// A token-protected request to the local agent; 400 and 404 are the user's input errors.
fn send(
    settings: &Settings,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let token = std::fs::read_to_string(settings.token_path()).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the API token {}: {e} (run this as the user that runs the agent, or point --data-dir at its data dir)",
            settings.token_path().display()
        )
    })?;
    let body = body.map(Value::to_string);
    let resp = client::request(
        settings.api_addr,
        method,
        path,
        Some(token.trim()),
        body.as_deref(),
    )?;
    let answer: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
    match resp.status {
        200 => Ok(answer),
        400 | 404 => {
            Err(UsageError(answer["error"].as_str().unwrap_or(&resp.body).to_owned()).into())
        }
        _ => anyhow::bail!("the agent answered {}: {}", resp.status, resp.body),
    }
}

/// Exit 1 when any alert is firing.
pub fn alerts(settings: &Settings, args: &AlertsArgs) -> anyhow::Result<u8> {
    let doc = get(settings, "/v1/alerts")?;
    let rows = doc["alerts"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(out, "alerter: {}", text(&doc["alerter"]))?;
        writeln!(
            out,
            "{:<8} {:<9} {:<20} {:<28} {:<20}  SUMMARY",
            "STATUS", "SEVERITY", "RULE", "SUBJECT", "SINCE"
        )?;
        for a in &rows {
            writeln!(
                out,
                "{:<8} {:<9} {:<20} {:<28} {:<20}  {}",
                text(&a["status"]),
                text(&a["severity"]),
                text(&a["rule"]),
                text(&a["subject"]),
                text(&a["started_at"]),
                text(&a["summary"])
            )?;
        }
    }
    let firing = rows.iter().any(|a| a["status"] == "firing");
    Ok(if firing { exit::NO } else { exit::OK })
}

pub fn silence(settings: &Settings, cmd: &SilenceCommand) -> anyhow::Result<u8> {
    match cmd {
        SilenceCommand::Add {
            matchers,
            duration,
            comment,
            json,
        } => {
            let mut m = serde_json::Map::new();
            for pair in matchers {
                let Some((k, v)) = pair.split_once('=').filter(|(k, _)| !k.trim().is_empty())
                else {
                    return Err(UsageError(format!(
                        "--match {pair:?}: write key=value, e.g. --match node=nas1"
                    ))
                    .into());
                };
                m.insert(k.trim().to_owned(), json!(v.trim()));
            }
            labmesh::config::parse_duration(duration)
                .map_err(|e| UsageError(format!("--for: {e}")))?;
            let created_by = std::env::var("USER").unwrap_or_default();
            let body = json!({
                "matchers": m,
                "duration": duration,
                "comment": comment,
                "created_by": if created_by.is_empty() { Value::Null } else { json!(created_by) },
            });
            let answer = post(settings, "/v1/silences", &body)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let s = &answer["silence"];
                println!("silence {} until {}", text(&s["id"]), text(&s["ends_at"]));
            }
            Ok(exit::OK)
        }
        SilenceCommand::List { json } => {
            let doc = get(settings, "/v1/silences")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(exit::OK);
            }
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<36} {:<20} {:<20} {:<30}  COMMENT",
                "ID", "STARTS", "ENDS", "MATCHERS"
            )?;
            for s in doc["silences"].as_array().cloned().unwrap_or_default() {
                let matchers: Vec<String> = s["matchers"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={}", text(v))).collect())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<36} {:<20} {:<20} {:<30}  {}",
                    text(&s["id"]),
                    text(&s["starts_at"]),
                    text(&s["ends_at"]),
                    matchers.join(","),
                    text(&s["comment"])
                )?;
            }
            Ok(exit::OK)
        }
        SilenceCommand::Clear { id } => {
            if id.is_empty() || id.contains('/') {
                return Err(UsageError(format!("{id:?} is not a silence id")).into());
            }
            post(settings, &format!("/v1/silences/{id}/clear"), &json!({}))?;
            println!("silence {id} cleared");
            Ok(exit::OK)
        }
    }
}

/// `labmesh expect NAME --every 24h [--grace 1h]`, `labmesh expect NAME --remove`, or the
/// declared list without NAME.
pub fn expect(settings: &Settings, args: &ExpectArgs) -> anyhow::Result<u8> {
    let Some(name) = &args.job else {
        let doc = get(settings, "/v1/expectations")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(exit::OK);
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{:<24} {:<8} {:<8} {:<20}  BY",
            "NAME", "EVERY", "GRACE", "SINCE"
        )?;
        for x in doc["expectations"].as_array().cloned().unwrap_or_default() {
            writeln!(
                out,
                "{:<24} {:<8} {:<8} {:<20}  {}",
                text(&x["name"]),
                text(&x["every"]),
                text(&x["grace"]),
                text(&x["declared_at"]),
                text(&x["declared_by"])
            )?;
        }
        return Ok(exit::OK);
    };
    if args.remove {
        // The name goes in the path: one that could leave it is refused here, not mangled.
        if name.is_empty()
            || name.contains(['/', '?', '#', '%'])
            || name.contains(char::is_whitespace)
        {
            return Err(UsageError(format!("{name:?} is not an expectation name")).into());
        }
        let answer = send(
            settings,
            "DELETE",
            &format!("/v1/expectations/{name}"),
            None,
        )?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            println!(
                "no longer expecting {name} (rule {} removed)",
                text(&answer["cleared"]["rule"])
            );
        }
        return Ok(exit::OK);
    }
    let Some(every) = &args.every else {
        return Err(
            UsageError("--every (or --remove) is required, e.g. --every 24h".into()).into(),
        );
    };
    alerting::expectations::rule(name, every, args.grace.as_deref()).map_err(UsageError)?;
    let body = json!({ "name": name, "every": every, "grace": args.grace });
    let answer = post(settings, "/v1/expectations", &body)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "expecting an event from {name} every {every}{} (rule {})",
            args.grace
                .as_deref()
                .map(|g| format!(" (grace {g})"))
                .unwrap_or_default(),
            text(&answer["expectation"]["rule"])
        );
    }
    Ok(exit::OK)
}
