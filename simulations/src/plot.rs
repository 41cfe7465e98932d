//! The convergence plot: event copies still missing across the mesh over virtual time, one
//! line per seed, as an SVG file next to the report.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

/// At most this many seeds are drawn: beyond it the lines are a blur.
const MAX_LINES: usize = 20;

/// Writes the plot of `reports` (one scenario) to `path`, creating its folder.
pub fn write_svg(path: &Path, title: &str, reports: &[Report]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let runs: Vec<&Report> = reports.iter().take(MAX_LINES).collect();
    let x_max = runs
        .iter()
        .flat_map(|r| r.series.last().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(1);
    let y_max = runs
        .iter()
        .flat_map(|r| r.series.iter().map(|p| p.1))
        .max()
        .unwrap_or(1)
        .max(1);
    // Long scenarios (days) read better in hours.
    let (unit, scale) = if x_max > 4 * 3600 {
        ("hours", 3600.0)
    } else {
        ("seconds", 1.0)
    };
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max as f64 / scale, 0u64..y_max + y_max / 20 + 1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(format!("virtual time ({unit})"))
        .y_desc("event copies missing")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, r) in runs.iter().enumerate() {
        let color = Palette99::pick(i).stroke_width(1);
        chart
            .draw_series(LineSeries::new(
                r.series.iter().map(|&(t, m)| (t as f64 / scale, m)),
                color,
            ))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
