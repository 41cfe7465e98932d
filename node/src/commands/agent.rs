//! `labmesh agent` and `labmesh join BUNDLE` (the agent, installing a join bundle first).

use labmesh::config::Settings;

use crate::cli::{AgentArgs, Cli, JoinArgs, exit};

pub fn run(cli: &Cli, args: &AgentArgs) -> anyhow::Result<u8> {
    let settings = Settings::resolve(&cli.overrides(Some(args)))?;
    labmesh::agent::run(settings)?;
    Ok(exit::OK)
}

pub fn join(cli: &Cli, args: &JoinArgs) -> anyhow::Result<u8> {
    let mut agent = args.agent.clone();
    agent.join = Some(args.bundle.clone());
    run(cli, &agent)
}
