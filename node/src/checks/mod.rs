//! Health checks: `[[check]]` tables in the config file, run by the agent.
//!
//! Kinds: `http` (status code in a range, optionally a string in the body), `tcp` (a connect),
//! `command` (exit 0 ok, 1 warning, anything else critical; stdout and stderr captured, 4 KiB
//! at most), `docker` (the engine's health verdict for a container) and `ttl` (fed from outside
//! by `labmesh check pass|warn|fail NAME` or `POST /v1/checks/NAME/pass|warn|fail`; silence
//! for a ttl is a critical result).
//!
//! # Which event is written when
//!
//! A check is a state machine (`machine.rs`): `ok → failing → unhealthy → recovering → ok`,
//! with `fall` consecutive failures to become unhealthy and `rise` consecutive successes to
//! become ok again. A warning counts as a failure. Events are about *services* (several
//! checks may watch one service), and all come from source `labmesh-checks` with the check's
//! `service`:
//!
//! 1. A failed probe below `fall` in a row writes nothing: a blip is not an incident.
//! 2. The `fall`-th failure writes `service_unhealthy` (severity `error`, `warning` when the
//!    result is a warning, e.g. command exit 1) and opens the episode's `correlation_id`. If
//!    another check of the same service is already unhealthy, the service is already down: it
//!    writes `healthcheck_failed` instead (reason `another_check_unhealthy`).
//! 3. While unhealthy, further failures write `healthcheck_failed` only when the status
//!    changes (warning ⇄ critical; reason `status_changed`) or as a reminder after 2·fall,
//!    4·fall, 8·fall, … failures in the episode (reason `still_failing`): the incident's
//!    `occurrence_count` grows and shows that the outage goes on, while a day-long outage of
//!    a 30 s check costs about a dozen events, not 2880.
//! 4. The `rise`-th success in a row writes `service_recovered` (severity `info`, with
//!    `down_for_ms`) when no other check of the service is still unhealthy; otherwise nothing
//!    (the service is still down) and the check's state alone shows it.
//! 5. A failure while recovering goes back to unhealthy without a new event: the episode
//!    goes on.
//!
//! Payloads carry `check`, `kind`, `target`, `status` (ok|warning|critical), `output` (capped
//! at 4 KiB), `latency_ms`, `consecutive_failures`, `failures` (in the episode), `fall`,
//! `rise`, `reason`, `unhealthy_checks` (the service's checks unhealthy after the event) and
//! `unhealthy_since`.
//!
//! On restart, the latest such event of each service from this node tells which checks were
//! unhealthy: they start unhealthy, so a restart neither repeats `service_unhealthy` nor
//! misses the `service_recovered` of a service that came back while the agent was down.

pub mod command;
pub mod config;
pub mod events;
mod fields;
pub mod machine;
pub mod probe;
pub mod run;

pub use config::CheckDef;
pub use run::{Checks, ReportError};
