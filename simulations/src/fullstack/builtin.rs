//! The built-in scenarios: their names on the command line and the script each plays on a
//! cluster whose mesh has formed.

use std::time::Duration;

use serde::Serialize;
use sync::Severity;

use super::run::{Cluster, Fault, Figures, FullstackConfig};

/// What happens during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FullScenario {
    /// Everyone writes; nothing fails.
    Steady,
    /// The first two nodes are cut off from the rest; both sides write; the cut heals.
    Split,
    /// The last node crashes while the others write, and restarts with its data dir.
    Crash,
    /// Clocks are skewed and drift; one node's clock jumps an hour ahead mid-run.
    Skew,
    /// The first node can receive but not send (a one-way cut) while everyone writes.
    Oneway,
    /// The last node crashes and restarts 3 s later, within the peers' QUIC idle timeout, so
    /// their connections to its previous process still look alive.
    Restart,
    /// A `build_failed` alert is pending (inside its group wait) on the alerter when the
    /// alerter crashes; the next alerter must send it, once.
    AlerterCrash,
    /// The last node, a transient laptop, goes down with its data dir kept; the others live
    /// `offline_days` days without it (their clocks jump a day at a time, and they write every
    /// day); it comes back with its clock on the same day. It wrote one event no peer had
    /// just before it went down.
    OfflineDays,
    /// A scenario file played by [`super::scenario_play`]; [`super::run()`] refuses it.
    File,
}

impl FullScenario {
    pub fn parse(name: &str) -> Result<FullScenario, String> {
        match name {
            "steady" => Ok(FullScenario::Steady),
            "split" => Ok(FullScenario::Split),
            "crash" => Ok(FullScenario::Crash),
            "skew" => Ok(FullScenario::Skew),
            "oneway" => Ok(FullScenario::Oneway),
            "restart" => Ok(FullScenario::Restart),
            "alerter-crash" => Ok(FullScenario::AlerterCrash),
            "offline-days" => Ok(FullScenario::OfflineDays),
            other => Err(format!(
                "unknown full-stack scenario {other:?} (steady, split, crash, skew, oneway, restart, alerter-crash, offline-days)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FullScenario::Steady => "steady",
            FullScenario::Split => "split",
            FullScenario::Crash => "crash",
            FullScenario::Skew => "skew",
            FullScenario::Oneway => "oneway",
            FullScenario::Restart => "restart",
            FullScenario::AlerterCrash => "alerter-crash",
            FullScenario::OfflineDays => "offline-days",
            FullScenario::File => "file",
        }
    }
}

/// Plays the built-in scenario's faults and writes, and fills in the figures it measures.
pub(super) fn script(
    c: &mut Cluster<'_>,
    cfg: &FullstackConfig,
    figures: &mut Figures,
) -> Result<(), String> {
    let all = c.everyone();
    let n = cfg.nodes;
    let settle = cfg.settle_limit;
    match cfg.scenario {
        FullScenario::File => {
            return Err("a scenario file is played by fullstack::scenario_play::play".into());
        }
        FullScenario::Steady | FullScenario::Skew => {
            // The first round opens most QUIC connections (gossip has dialled only a few
            // peers by now). Young connections are slow to repair a lost packet: see
            // `FullstackConfig::warmup`. Dissemination counts the later rounds.
            c.write_rounds(&all, 1, cfg.write_every)?;
            c.run_until(settle, Cluster::converged)?;
            c.run_for(cfg.warmup)?;
            c.note("warm");
            c.spread_ms.clear();
            let rest = cfg.writes_per_node.saturating_sub(1);
            let half = rest / 2;
            c.write_rounds(&all, half, cfg.write_every)?;
            if cfg.scenario == FullScenario::Skew {
                c.clocks[0].jump(3_600_000);
                c.note("clock jump n0 +1h");
            }
            c.write_rounds(&all, rest - half, cfg.write_every)?;
            figures.convergence_ms = c.run_until(settle, Cluster::converged)?;
        }
        FullScenario::Split => {
            let left: Vec<usize> = (0..2.min(n - 1)).collect();
            let right: Vec<usize> = (left.len()..n).collect();
            // An alert the whole mesh sees before the split and that pages only after the
            // group wait (30 s): by then each side has its own alerter, and both page.
            c.write_kind(n - 1, "build_failed", Severity::Error)?;
            c.run_for(Duration::from_secs(1))?;
            c.partition(&left, &right);
            let cut_at = c.now_ms();
            // Each side must see the other down: watch left seeing right, then the reverse
            // would need a second watch; both sides run the same detector, so one suffices.
            c.watch = Some((c.now_ms(), left.clone(), right.clone()));
            c.write_rounds(&all, cfg.writes_per_node, cfg.write_every)?;
            c.run_until(settle, |c| {
                c.sees(&left, &right, false) && c.sees(&right, &left, false)
            })?;
            figures.detection_ms = c.detected_ms;
            c.run_until_elapsed(cut_at + cfg.fault_for.as_millis() as u64)?;
            c.heal(&left, &right);
            figures.convergence_ms = c.run_until(settle, Cluster::converged)?;
        }
        FullScenario::Crash => {
            let victim = n - 1;
            let others: Vec<usize> = (0..victim).collect();
            // One round first, so the victim has events of its own on disk when it goes down.
            c.write_rounds(&all, 1, cfg.write_every)?;
            c.crash(victim);
            let cut_at = c.now_ms();
            c.watch = Some((c.now_ms(), others.clone(), vec![victim]));
            c.write_rounds(&others, cfg.writes_per_node, cfg.write_every)?;
            c.run_until(settle, |c| c.sees(&others, &[victim], false))?;
            figures.detection_ms = c.detected_ms;
            c.run_until_elapsed(cut_at + cfg.fault_for.as_millis() as u64)?;
            c.restart(victim);
            figures.convergence_ms = c.run_until(settle, Cluster::converged)?;
        }
        FullScenario::Restart => {
            let victim = n - 1;
            let others: Vec<usize> = (0..victim).collect();
            c.write_rounds(&all, 1, cfg.write_every)?;
            c.crash(victim);
            let cut_at = c.now_ms();
            // Written while the victim is down: it can only get them from its peers after the
            // restart, over whatever connection they use to reach it.
            c.write_rounds(&others, 1, Duration::ZERO)?;
            c.run_until_elapsed(cut_at + cfg.fault_for.as_millis() as u64)?;
            c.restart(victim);
            figures.convergence_ms = c.run_until(settle, Cluster::converged)?;
        }
        FullScenario::AlerterCrash => {
            // Wait for the one alerter, then write an alert it holds in its group wait (30 s)
            // and crash it 5 s later, before it sends; the next alerter must send it once.
            c.run_until(settle, Cluster::alerting_settled)?;
            let alerter = c
                .alerters
                .as_ref()
                .and_then(|(_, a)| a.first()?.first().cloned())
                .and_then(|name| c.names.iter().position(|n| *n == name))
                .ok_or_else(|| format!("seed {}: no alerter was elected", cfg.seed))?;
            let writer = (alerter + 1) % n;
            c.write_kind(writer, "build_failed", Severity::Error)?;
            c.run_for(Duration::from_secs(5))?;
            c.crash(alerter);
            let cut_at = c.now_ms();
            let others: Vec<usize> = (0..n).filter(|&i| i != alerter).collect();
            c.watch = Some((cut_at, others.clone(), vec![alerter]));
            // Past the group wait and the survivors' election (detection, then the settle).
            c.run_for(Duration::from_secs(40))?;
            figures.detection_ms = c.detected_ms;
            c.restart(alerter);
            figures.convergence_ms = c.run_until(settle, Cluster::converged)?;
        }
        FullScenario::OfflineDays => {
            const DAY_MS: i64 = 86_400_000;
            let laptop = n - 1;
            let others: Vec<usize> = (0..laptop).collect();
            // Day 0: a round by everyone, synced everywhere, so the laptop leaves holding the
            // mesh's events as well as its own.
            c.write_rounds(&all, 1, cfg.write_every)?;
            c.run_until(settle, Cluster::converged)?;
            // Written in the same step as the crash, so no peer has it: it reaches them only
            // through a session after the laptop is back, days later.
            c.write(laptop)?;
            c.crash(laptop);
            let cut_at = c.now_ms();
            c.watch = Some((cut_at, others.clone(), vec![laptop]));
            c.run_until(settle, |c| c.sees(&others, &[laptop], false))?;
            figures.detection_ms = c.detected_ms;
            // Days of transport time are out of reach at 1 ms ticks; what days do to sync is
            // in the data, so the clocks jump a day at once and every day's events carry it.
            for day in 1..=cfg.offline_days {
                for &o in &others {
                    c.clocks[o].jump(DAY_MS);
                }
                c.note(&format!("day {day}: clocks of {others:?} +1 day"));
                c.write_rounds(&others, cfg.writes_per_node, cfg.write_every)?;
                // The rest of the day (a fixed wait: `converged` would wait for the laptop's
                // unsent event, which cannot arrive before it is back).
                c.run_for(Duration::from_secs(5))?;
            }
            c.clocks[laptop].jump(i64::from(cfg.offline_days) * DAY_MS);
            c.note(&format!("clock of n{laptop} +{} days", cfg.offline_days));
            c.restart(laptop);
            figures.convergence_ms = c.run_until(settle, Cluster::converged)?;
            // Once back, the laptop's writes must be stamped after the days-newer events it
            // just received (the HLC check in `write`) and reach everyone.
            c.write_rounds(&all, 1, cfg.write_every)?;
        }
        FullScenario::Oneway => {
            let others: Vec<usize> = (1..n).collect();
            for &o in &others {
                c.sim.partition_oneway(c.ips[0], c.ips[o]);
            }
            let pairs = c.all_pairs(&[0], &others);
            let from_ms = c.now_ms();
            c.faults.push(Fault {
                pairs,
                from_ms,
                to_ms: None,
            });
            c.partitioned = true;
            c.note("one-way cut n0 -> everyone");
            c.write_rounds(&all, cfg.writes_per_node, cfg.write_every)?;
            c.run_until_elapsed(from_ms + cfg.fault_for.as_millis() as u64)?;
            c.keep_fault_alerters();
            for &o in &others {
                c.sim.repair_oneway(c.ips[0], c.ips[o]);
            }
            c.partitioned = false;
            let now = c.now_ms();
            c.repairs.push(now);
            c.end_faults();
            c.note("one-way cut repaired");
            figures.convergence_ms = c.run_until(settle, Cluster::converged)?;
        }
    }
    Ok(())
}
