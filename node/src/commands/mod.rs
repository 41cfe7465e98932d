//! One file per command; [`run`] picks the one the command line names.

mod admit;
mod agent;
mod alerts;
mod certs;
mod check;
mod containers;
mod digest;
mod emit;
mod events;
mod fsck;
mod probe;
mod prometheus_sd;
mod run;
mod runs;
mod score;
mod status;
mod sync;
mod textfile;
mod world;

use labmesh::config::Settings;

use crate::cli::{Cli, Command, EventsCommand};

/// Runs the command; returns the exit code.
pub fn run(cli: &Cli) -> anyhow::Result<u8> {
    let settings = || Settings::resolve(&cli.overrides(None));
    match &cli.command {
        Command::Agent(args) => agent::run(cli, args),
        Command::Join(args) => agent::join(cli, args),
        Command::Emit(args) => emit::run(&settings()?, args),
        Command::Events(EventsCommand::List(args)) => events::list(&settings()?, args),
        Command::Events(EventsCommand::Tail(args)) => events::tail(&settings()?, args),
        Command::Fsck(args) => fsck::run(&settings()?, args),
        Command::Status(args) => status::run(&settings()?, args),
        Command::World(args) => world::run(&settings()?, args),
        Command::Probe(args) => probe::run(&settings()?, args),
        Command::Admit(args) => admit::run(&settings()?, args),
        Command::Sync(cmd) => sync::run(&settings()?, cmd),
        Command::Certs(cmd) => certs::run(&settings()?, cmd),
        Command::Check(cmd) => check::run(&settings()?, cmd),
        Command::Alerts(args) => alerts::alerts(&settings()?, args),
        Command::Expect(args) => alerts::expect(&settings()?, args),
        Command::Digest(args) => digest::run(&settings()?, args),
        Command::Silence(cmd) => alerts::silence(&settings()?, cmd),
        Command::Run(args) => run::run(&settings()?, args),
        Command::Runs(cmd) => runs::run(&settings()?, cmd),
        Command::PrometheusSd(args) => prometheus_sd::run(&settings()?, args),
        Command::Containers(args) => containers::run(&settings()?, args),
    }
}
