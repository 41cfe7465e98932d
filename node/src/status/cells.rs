//! The cells of the status screen: host figures from a gossiped summary, ages, fields.

use serde_json::Value;

use crate::output::format_size;

fn pct(v: &Value) -> String {
    v.as_f64().map(|p| format!("{p:.0}%")).unwrap_or_default()
}

/// CPU %, steal %, memory used %, swap used, fullest disk %, VRAM used/total, score. A figure
/// the node does not send is blank (`-` for VRAM on a node without GPUs).
pub fn summary_cells(s: &Value) -> [String; 7] {
    if s.is_null() {
        return Default::default();
    }
    let mem = match (s["mem_avail"].as_u64(), s["mem_total"].as_u64()) {
        (Some(avail), Some(total)) if total > 0 => {
            let used = total.saturating_sub(avail);
            format!("{:.0}%", used as f64 * 100.0 / total as f64)
        }
        _ => String::new(),
    };
    let swap = match (s["swap"].as_u64(), s["swap_total"].as_u64()) {
        (_, Some(0)) => "-".to_owned(),
        (Some(used), _) => format_size(used),
        _ => String::new(),
    };
    let vram = match (s["vram_used"].as_u64(), s["vram_total"].as_u64()) {
        (Some(used), Some(total)) => format!("{}/{}", format_size(used), format_size(total)),
        _ if s["gpus"].as_u64() == Some(0) => "-".to_owned(),
        _ => String::new(),
    };
    [
        pct(&s["cpu"]),
        pct(&s["steal"]),
        mem,
        swap,
        pct(&s["disk"]),
        vram,
        s["score"]
            .as_u64()
            .map(|v| v.to_string())
            .unwrap_or_default(),
    ]
}

/// A field as text, empty when null or missing.
pub fn text(v: &Value, key: &str) -> String {
    crate::output::text(&v[key])
}

/// Milliseconds for people: `250ms`, `1.5s`, `3m`, `2h`.
pub fn age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m", ms / 60_000),
        _ => format!("{}h", ms / 3_600_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_for_a_gpu_host_and_a_bare_one() {
        let s = json!({
            "cpu": 12.3, "steal": 0.4, "mem_avail": 4u64 << 30, "mem_total": 16u64 << 30,
            "swap": 512u64 << 20, "swap_total": 4u64 << 30, "disk": 71.0, "gpus": 1,
            "vram_used": 2u64 << 30, "vram_total": 24u64 << 30, "score": 83,
        });
        assert_eq!(
            summary_cells(&s),
            ["12%", "0%", "75%", "512 MiB", "71%", "2 GiB/24 GiB", "83"].map(String::from)
        );

        let bare = json!({"gpus": 0, "swap_total": 0, "score": 40});
        let cells = summary_cells(&bare);
        assert_eq!((cells[3].as_str(), cells[5].as_str()), ("-", "-"));

        assert_eq!(summary_cells(&Value::Null), <[String; 7]>::default());
    }
}
