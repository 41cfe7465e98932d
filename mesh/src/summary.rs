//! The compact host summary each node gossips under [`crate::keys::SUMMARY`]: a few hundred
//! bytes of JSON with short keys, enough for peers to rank nodes ("which one can take this
//! job?") and for the alerter's rules, without asking each one. Figures a node cannot measure
//! are left out, never sent as 0. The node crate fills it from its probes; everyone reads it
//! with [`Summary::parse`], the one reader of the key.

use serde::{Deserialize, Serialize};

/// Summary format version (`v`); a reader skips summaries of a version it does not know.
pub const VERSION: u32 = 1;

/// What one node tells the others about itself. Bytes and percentages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub v: u32,
    /// When the sample was taken, Unix seconds.
    pub t: i64,
    /// CPU busy %, all cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// CPU steal %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steal: Option<f64>,
    /// 1-minute load average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_avail: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_total: Option<u64>,
    /// Swap used, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_total: Option<u64>,
    /// SwapCached, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_cached: Option<u64>,
    /// Used % of the fullest real filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<f64>,
    /// Most bytes available on any one real filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free: Option<u64>,
    /// Number of NVIDIA GPUs (0 when none).
    pub gpus: u32,
    /// VRAM used and total, all GPUs together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_total: Option<u64>,
    /// Most free VRAM on any one GPU (a job that fits nowhere else must fit there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_free: Option<u64>,
    /// Containers whose own HEALTHCHECK says unhealthy.
    pub unhealthy: u32,
    /// 0–100: the node's score card (`alerting::score`), as the node computed it.
    pub score: u8,
}

impl Summary {
    /// The gossiped text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The summary a node publishes among its gossiped key-values, if any and readable.
    pub fn from_key_values(kv: &std::collections::BTreeMap<String, String>) -> Option<Summary> {
        kv.get(crate::keys::SUMMARY).and_then(|t| Summary::parse(t))
    }

    /// Reads a peer's summary; `None` for garbage or an unknown version.
    pub fn parse(text: &str) -> Option<Summary> {
        serde_json::from_str::<Summary>(text)
            .ok()
            .filter(|s| s.v == VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gossiped_text_stays_small_and_round_trips() {
        // Worst case: every field present with large values.
        let s = Summary {
            v: VERSION,
            t: 1_764_473_000,
            cpu: Some(100.0),
            steal: Some(0.5),
            load: Some(1234.5),
            mem_avail: Some(12 << 30),
            mem_total: Some(2 << 40),
            swap: Some(0),
            swap_total: Some(4 << 30),
            swap_cached: Some(0),
            disk: Some(41.0),
            disk_free: Some(100 << 40),
            gpus: 8,
            vram_used: Some((8 * 141) << 30),
            vram_total: Some((8 * 141) << 30),
            vram_free: Some(141 << 30),
            unhealthy: 12,
            score: 100,
        };
        let text = s.to_json();
        assert!(text.len() < 400, "{} bytes: {text}", text.len());
        assert_eq!(Summary::parse(&text), Some(s));
        assert_eq!(
            Summary::parse(r#"{"v":99,"t":0,"gpus":0,"unhealthy":0,"score":1}"#),
            None
        );
        assert_eq!(Summary::parse("not json"), None);
    }
}
