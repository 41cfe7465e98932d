//! `labmesh`: the one binary every host runs. `labmesh agent` is the long-running peer; every
//! other subcommand is a short client. This file only parses the command line and maps errors to
//! exit codes; the work lives in the modules.

mod admit;
mod agent;
mod alerting_config;
mod alerting_driver;
mod alerting_send;
mod api;
mod api_alerts;
mod api_host;
mod api_status;
mod checks;
mod cli;
mod cli_host;
mod cmd_admit;
mod cmd_alerts;
mod cmd_certs;
mod cmd_check;
mod cmd_digest;
mod cmd_emit;
mod cmd_events;
mod cmd_fsck;
mod cmd_probe;
mod cmd_score;
mod cmd_status;
mod cmd_sync;
mod cmd_world;
mod digest_build;
mod digest_schedule;
mod exit;
mod expectations;
mod host_history;
mod http_client;
mod identity;
mod metrics;
mod metrics_host;
mod metrics_mesh;
mod output;
mod peer;
mod probe_driver;
mod probes;
mod score_card;
mod settings;
mod status_view;
mod sync_driver;
mod sync_peers;
mod timespec;
mod web;
mod workers;
mod world_driver;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, EventsCommand};
use crate::settings::Settings;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(cli);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // Never panic on a closed or full stderr: the exit code still tells.
            let _ = writeln!(std::io::stderr(), "labmesh: {}", exit::describe(&err));
            ExitCode::from(exit::code_for(&err))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Agent(args) => {
            let settings = Settings::resolve_with(&cli.global, Some(args))?;
            agent::run(settings)
        }
        Command::Emit(args) => cmd_emit::run(&Settings::resolve(&cli.global)?, args),
        Command::Events(EventsCommand::List(args)) => {
            cmd_events::list(&Settings::resolve(&cli.global)?, args)
        }
        Command::Events(EventsCommand::Tail(args)) => {
            cmd_events::tail(&Settings::resolve(&cli.global)?, args)
        }
        Command::Fsck(args) => cmd_fsck::run(&Settings::resolve(&cli.global)?, args),
        Command::Status(args) => cmd_status::run(&Settings::resolve(&cli.global)?, args),
        Command::World(args) => cmd_world::run(&Settings::resolve(&cli.global)?, args),
        Command::Probe(args) => cmd_probe::run(&Settings::resolve(&cli.global)?, args),
        Command::Admit(args) => cmd_admit::run(&Settings::resolve(&cli.global)?, args),
        Command::Sync(cmd) => cmd_sync::run(&Settings::resolve(&cli.global)?, cmd),
        Command::Certs(cmd) => cmd_certs::run(&Settings::resolve(&cli.global)?, cmd),
        Command::Check(cmd) => cmd_check::run(&Settings::resolve(&cli.global)?, cmd),
        Command::Alerts(args) => cmd_alerts::alerts(&Settings::resolve(&cli.global)?, args),
        Command::Expect(args) => cmd_alerts::expect(&Settings::resolve(&cli.global)?, args),
        Command::Digest(args) => cmd_digest::run(&Settings::resolve(&cli.global)?, args),
        Command::Silence(cmd) => cmd_alerts::silence(&Settings::resolve(&cli.global)?, cmd),
        Command::Join(args) => {
            let mut agent_args = args.agent.clone();
            agent_args.join = Some(args.bundle.clone());
            let settings = Settings::resolve_with(&cli.global, Some(&agent_args))?;
            agent::run(settings)
        }
    }
}
