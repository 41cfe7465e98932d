//! `labmesh run`: wrapping a build, test, deploy or maintenance command and recording it as
//! events, and the run history read back from them (`labmesh runs`).
//!
//! The pure parts live here, apart from any process or disk: what a command's output says
//! (warnings, test counts), what must never be stored (secrets), and what a history of runs
//! means (success rates, trends, the first failing commit, duration regressions).

pub mod ansi;
pub mod context;
pub mod history;
pub mod logs;
pub mod metrics;
pub mod output;
pub mod records;
pub mod redact;
pub mod regressions;
pub mod schema;
pub mod test_summary;
