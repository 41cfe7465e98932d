//! `labmesh`: the one binary every host runs. `labmesh agent` is the long-running peer; every
//! other subcommand is a short client. This file only parses the command line and maps errors
//! to exit codes; each command is a file under `commands/`, and the work lives in the library.

mod cli;
mod commands;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, exit};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // Never panic on a closed or full stderr: the exit code still tells.
            let _ = writeln!(std::io::stderr(), "labmesh: {}", exit::describe(&err));
            ExitCode::from(exit::code_for(&err))
        }
    }
}
