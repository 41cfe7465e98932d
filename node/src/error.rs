//! The two errors every part of labmesh can end in, besides its own: bad input (the caller's
//! mistake, exit 2) and an agent that does not answer (exit 3). The binary maps them to exit
//! codes (ARCHITECTURE.md section 9); the library only says which one it is.

/// Bad flags, bad input, bad config: the message names the file, field and fix. Exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The agent did not answer, or not with HTTP. Exit 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentUnreachable(pub String);
