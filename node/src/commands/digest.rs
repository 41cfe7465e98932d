//! `labmesh digest --now [--receiver R] [--json]`: the weekly mesh digest of the last 7 days,
//! printed, or sent through one of the agent's receivers (token-protected `POST /v1/digest`).

use serde_json::{Value, json};

use crate::cli::{DigestArgs, exit};
use labmesh::client;
use labmesh::config::Settings;
use labmesh::error::UsageError;

pub fn run(settings: &Settings, args: &DigestArgs) -> anyhow::Result<u8> {
    if !args.now {
        return Err(UsageError(
            "the agent sends the digest on its schedule ([alerting] digest = \"Mon 08:00\"); \
             give --now to build it now"
                .into(),
        )
        .into());
    }
    let doc: Value = match &args.receiver {
        None => {
            let resp = client::request(settings.api_addr, "GET", "/v1/digest", None, None)?;
            if resp.status != 200 {
                anyhow::bail!("the agent answered {}: {}", resp.status, resp.body);
            }
            resp.json()?
        }
        Some(r) => {
            crate::commands::alerts::post(settings, "/v1/digest", &json!({ "receiver": r }))?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if let Some(r) = &args.receiver {
        println!("digest sent through {r}");
    } else {
        println!("{}", doc["text"].as_str().unwrap_or_default());
    }
    Ok(exit::OK)
}
