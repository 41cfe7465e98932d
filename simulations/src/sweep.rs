//! The scaling sweep: one partition-and-heal scenario at growing N.

use crate::scenario::{Fault, LinkSpec, LossModel, Rates, Scenario};

/// Sizes the sweep runs by default.
pub const SIZES: [usize; 4] = [10, 100, 300, 1000];

/// 10 virtual minutes of workload at `n` nodes: halves split at 2 min, healed at 5 min, then a
/// 2 min quiet tail. `alerting: false` runs sync and the world only. Per node per hour: 0.5 incidents, 0.5 deployments, 2 metric samples.
pub fn scenario(n: usize, alerting: bool) -> Scenario {
    let half: Vec<usize> = (0..n / 2).collect();
    Scenario {
        name: format!("sweep-{n}"),
        nodes: n,
        duration_s: 600,
        quiet_s: 120,
        rates: Rates {
            incidents_per_hour: 0.5,
            deployments_per_hour: 0.5,
            metrics_per_hour: 2.0,
            incident_s: 300,
        },
        link: LinkSpec {
            latency_ms: 2,
            jitter_ms: 3,
            loss: 0.001,
        },
        node_links: Vec::new(),
        clock_offsets: Vec::new(),
        transient: Vec::new(),
        faults: vec![
            Fault::Partition {
                at_s: 120,
                groups: vec![half],
            },
            Fault::Heal { at_s: 300 },
        ],
        tick_ms: 1000,
        alerting,
        detect_ms: 10_000,
        receiver_outages: Vec::new(),
        notify_ms: 200,
        max_sessions: crate::scenario::default_max_sessions(),
        loss_model: Default::default(),
        differ_delay_ms: 2_000,
    }
}

/// Settings the sweep varies beside N: link loss, what loss means, the sync tick and the
/// differ delay. Each list left out keeps the base scenario's value; the grid is every
/// combination, in the order given.
#[derive(Debug, Default)]
pub struct Grid {
    pub loss: Vec<f64>,
    pub loss_model: Option<LossModel>,
    pub tick_ms: Vec<u64>,
    pub differ_ms: Vec<u64>,
}

fn list<T: std::str::FromStr>(flag: &str, spec: Option<&str>) -> Result<Vec<T>, String> {
    spec.map_or(Ok(Vec::new()), |s| {
        s.split(',')
            .map(|x| {
                x.trim().parse().map_err(|_| {
                    format!("{flag}: {x:?} is not a number (a comma list, e.g. 0,0.05)")
                })
            })
            .collect()
    })
}

impl Grid {
    pub fn from_args(
        loss: Option<&str>,
        model: Option<&str>,
        tick: Option<&str>,
        differ: Option<&str>,
    ) -> Result<Grid, String> {
        let grid = Grid {
            loss: list("--loss", loss)?,
            loss_model: match model {
                None => None,
                Some("message") => Some(LossModel::Message),
                Some("packet") => Some(LossModel::Packet),
                Some(other) => {
                    return Err(format!(
                        "--loss-model wants message or packet, got {other:?}"
                    ));
                }
            },
            tick_ms: list("--tick", tick)?,
            differ_ms: list("--differ", differ)?,
        };
        if let Some(l) = grid.loss.iter().find(|l| !(0.0..=1.0).contains(*l)) {
            return Err(format!("--loss: {l} is not a fraction from 0 to 1"));
        }
        if grid.tick_ms.contains(&0) {
            return Err("--tick: must be positive (ms)".into());
        }
        Ok(grid)
    }

    /// The base scenario once per combination, named after what differs from it.
    pub fn scenarios(&self, base: &Scenario) -> Vec<Scenario> {
        let or_base = |v: &[u64], b: u64| if v.is_empty() { vec![b] } else { v.to_vec() };
        let losses = if self.loss.is_empty() {
            vec![base.link.loss]
        } else {
            self.loss.clone()
        };
        let mut out = Vec::new();
        for &loss in &losses {
            for tick in or_base(&self.tick_ms, base.tick_ms) {
                for differ in or_base(&self.differ_ms, base.differ_delay_ms) {
                    let mut s = base.clone();
                    s.link.loss = loss;
                    s.tick_ms = tick;
                    s.differ_delay_ms = differ;
                    if let Some(m) = self.loss_model {
                        s.loss_model = m;
                    }
                    let mut name = base.name.clone();
                    if !self.loss.is_empty() {
                        name.push_str(&format!("-loss{loss}"));
                    }
                    if self.loss_model == Some(LossModel::Packet) {
                        name.push_str("-pkt");
                    }
                    if !self.tick_ms.is_empty() {
                        name.push_str(&format!("-tick{tick}"));
                    }
                    if !self.differ_ms.is_empty() {
                        name.push_str(&format!("-differ{differ}"));
                    }
                    s.name = name;
                    out.push(s);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_every_combination_named_by_what_it_changes() {
        let grid = Grid::from_args(Some("0,0.05"), Some("packet"), None, Some("1000,2000,4000"))
            .expect("valid");
        let runs = grid.scenarios(&scenario(100, false));
        assert_eq!(runs.len(), 6);
        assert_eq!(runs[0].name, "sweep-100-loss0-pkt-differ1000");
        assert_eq!(runs[5].name, "sweep-100-loss0.05-pkt-differ4000");
        assert!(
            runs.iter()
                .all(|s| s.loss_model == LossModel::Packet && s.tick_ms == 1000)
        );
        assert_eq!(runs[5].link.loss, 0.05);
        assert_eq!(runs[5].differ_delay_ms, 4000);
        // Nothing asked: the base scenario alone, unchanged.
        let one = Grid::default().scenarios(&scenario(10, true));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "sweep-10");
        assert!(Grid::from_args(Some("2"), None, None, None).is_err());
        assert!(Grid::from_args(None, Some("bits"), None, None).is_err());
        assert!(Grid::from_args(None, None, Some("0"), None).is_err());
    }
}
