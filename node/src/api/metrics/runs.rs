//! `homelab_*`: the seed's build and test metrics, from this node's own run events
//! ([`crate::runs::metrics`]). Only events not folded yet are read from disk, so a scrape costs an
//! index lookup once the history is in.

use std::sync::Mutex;

use prometheus_client::registry::Unit;
use sync::Query;

use super::Out;
use crate::api::ApiState;
use crate::runs::metrics::{RunMetrics, SampleValue, end_types, help};

/// Folds the run end events this node wrote and has not folded yet into `cache`.
pub fn refresh(state: &ApiState, cache: &Mutex<RunMetrics>) {
    let entries = state.store.query(&Query {
        nodes: vec![state.node.clone()],
        types: end_types(),
        ..Query::default()
    });
    let mut m = cache.lock().unwrap_or_else(|e| e.into_inner());
    for entry in entries {
        if m.has_seen(&entry.id) {
            continue;
        }
        // A file gone between the index and the read (pruned) is simply not counted.
        if let Ok(event) = state.store.read_event(&entry) {
            m.observe(&event);
        }
    }
}

/// Writes the families into `out` (a registry with the `homelab` prefix).
pub fn write(cache: &Mutex<RunMetrics>, out: &mut Out) {
    let m = cache.lock().unwrap_or_else(|e| e.into_inner());
    write_figures(&m, out);
}

/// [`write`] from figures at hand (`labmesh run --textfile-dir`).
pub fn write_figures(m: &RunMetrics, out: &mut Out) {
    let samples = m.samples();
    let mut names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let of = samples.iter().filter(|s| s.name == name);
        let unit = if name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else if name.ends_with("_bytes") {
            Some(Unit::Bytes)
        } else {
            None
        };
        let base = name
            .strip_suffix("_seconds")
            .or_else(|| name.strip_suffix("_bytes"))
            .unwrap_or(name);
        let counters: Vec<_> = of
            .clone()
            .filter_map(|s| match s.value {
                SampleValue::Counter(v) => Some((s.labels.clone(), v)),
                SampleValue::Gauge(_) => None,
            })
            .collect();
        if !counters.is_empty() {
            out.counters(base, help(name), unit.clone(), counters);
        }
        let gauges: Vec<_> = of
            .filter_map(|s| match s.value {
                SampleValue::Gauge(v) => Some((s.labels.clone(), v)),
                SampleValue::Counter(_) => None,
            })
            .collect();
        if !gauges.is_empty() {
            out.gauges(base, help(name), unit, gauges);
        }
    }
}
