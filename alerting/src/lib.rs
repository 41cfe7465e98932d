//! One alerter for the mesh, and notifications with no loss and no repeats.
//!
//! The alerter is elected deterministically from membership (highest `alerter_priority`, then
//! smallest name, among live non-transient nodes), so every node computes the same answer without
//! an extra protocol. Rules on gossiped metrics, event patterns and watchdogs feed an alert state
//! machine (`pending` → `firing` → `resolved`), then grouping, silences, routing and notifiers.
//! A ledger of `notification_sent` events, synced like every event, keeps a new alerter or a
//! healed partition from sending again what was already sent. The logic is sans-IO: it is driven
//! by time and inputs, so the agent, the turmoil simulation and tests all run the same code.
