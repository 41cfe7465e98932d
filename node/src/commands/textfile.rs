//! `labmesh run --textfile-dir DIR`: this node's `homelab_*` metrics as a file for
//! node_exporter's textfile collector, for hosts whose Prometheus scrapes node_exporter only.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sync::{EventStore, Query};

use labmesh::api::metrics::{Out, runs, to_prometheus_text};
use labmesh::config::Settings;
use labmesh::runs::metrics::{RunMetrics, end_types};

/// The file written in the textfile directory.
pub const TEXTFILE: &str = "labmesh_runs.prom";

/// Writes `dir/labmesh_runs.prom` from the store's run end events of this node. The file is
/// written beside and renamed into place, so the collector never reads half of it (it ignores
/// names not ending in `.prom`).
pub fn write(settings: &Settings, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut cfg = settings.store_config();
    cfg.read_only = true;
    let (store, _) = EventStore::open(cfg)?;
    let mut figures = RunMetrics::default();
    let query = Query {
        nodes: vec![settings.name.clone()],
        types: end_types(),
        ..Query::default()
    };
    for entry in store.query(&query) {
        if let Ok(event) = store.read_event(&entry) {
            figures.observe(&event);
        }
    }
    let mut out = Out::with_prefix("homelab");
    runs::write_figures(&figures, &mut out);
    let text = to_prometheus_text(&out.encode()?);
    let path = dir.join(TEXTFILE);
    // 0644: node_exporter runs as its own user.
    let result = labmesh::util::replace_file(&path, text.as_bytes(), 0o644);
    result.with_context(|| format!("writing {} (--textfile-dir)", path.display()))?;
    Ok(path)
}
