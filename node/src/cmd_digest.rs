//! `labmesh digest --now [--receiver R] [--json]`: the weekly mesh digest of the last 7 days,
//! printed, or sent through one of the agent's receivers (token-protected `POST /v1/digest`).

use clap::Args;
use serde_json::{Value, json};

use crate::exit::{self, UsageError};
use crate::http_client;
use crate::settings::Settings;

#[derive(Debug, Clone, Args)]
pub struct DigestArgs {
    /// Build the digest now (otherwise the agent sends it on `[alerting] digest`'s schedule).
    #[arg(long)]
    pub now: bool,
    /// Send it through this receiver (`[[receiver]]` name) instead of printing it.
    #[arg(long, value_name = "NAME")]
    pub receiver: Option<String>,
    /// Print JSON: `{"text", "top_action", "cards"}`.
    #[arg(long)]
    pub json: bool,
}

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
            let resp = http_client::request(settings.api_addr, "GET", "/v1/digest", None, None)?;
            if resp.status != 200 {
                anyhow::bail!("the agent answered {}: {}", resp.status, resp.body);
            }
            resp.json()?
        }
        Some(r) => crate::cmd_alerts::post(settings, "/v1/digest", &json!({ "receiver": r }))?,
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
