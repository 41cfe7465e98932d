//! Exit codes (ARCHITECTURE.md section 9): 0 ok, 1 the answer is no or the operation failed,
//! 2 usage or input error, 3 cannot reach the agent.

use labmesh::error::{AgentUnreachable, UsageError};

pub const OK: u8 = 0;
pub const NO: u8 = 1;
pub const USAGE: u8 = 2;
pub const UNREACHABLE: u8 = 3;

/// The exit code for an error from a command.
pub fn code_for(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some() {
        USAGE
    } else if err.downcast_ref::<AgentUnreachable>().is_some() {
        UNREACHABLE
    } else if let Some(sync::StoreError::Invalid(_)) = err.downcast_ref::<sync::StoreError>() {
        USAGE
    } else if let Some(e) = err.downcast_ref::<labmesh::agent::AgentError>() {
        if e.is_usage() { USAGE } else { NO }
    } else {
        NO
    }
}

/// The error and its causes on one line, with a hint when we know the usual fix.
pub fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    if let Some(hint) = err
        .downcast_ref::<sync::StoreError>()
        .and_then(|e| e.hint())
    {
        text.push_str(&format!(" ({hint})"));
    }
    text
}
