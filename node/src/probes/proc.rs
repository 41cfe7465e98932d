//! Pure parsers of Linux `/proc` files: text in, numbers or a precise error out. Nothing here
//! reads a file, so every case (an old kernel without a steal column, a truncated line, a counter
//! that went backwards) is a unit test on fixture text.

use std::collections::HashMap;

use thiserror::Error;

/// What went wrong reading one `/proc` file; the message names the file and the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file}: {detail}")]
pub struct ParseError {
    pub file: &'static str,
    pub detail: String,
}

fn err(file: &'static str, detail: impl Into<String>) -> ParseError {
    ParseError {
        file,
        detail: detail.into(),
    }
}

/// The aggregate `cpu` line of `/proc/stat`, in clock ticks since boot. Columns a kernel does
/// not have (steal appeared in 2.6.11) are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: Option<u64>,
    pub irq: Option<u64>,
    pub softirq: Option<u64>,
    pub steal: Option<u64>,
    /// Number of `cpuN` lines (online CPUs).
    pub cores: u32,
}

const CPU_FIELDS: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

impl CpuTimes {
    /// All the time the kernel accounted. `guest` and `guest_nice` are left out on purpose:
    /// the kernel already counts them inside `user` and `nice`.
    pub fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait.unwrap_or(0)
            + self.irq.unwrap_or(0)
            + self.softirq.unwrap_or(0)
            + self.steal.unwrap_or(0)
    }
}

/// Parses `/proc/stat`: the aggregate `cpu` line and the count of `cpuN` lines.
pub fn parse_stat(text: &str) -> Result<CpuTimes, ParseError> {
    const FILE: &str = "/proc/stat";
    let mut line = None;
    let mut cores = 0u32;
    for l in text.lines() {
        let mut words = l.split_whitespace();
        match words.next() {
            Some("cpu") => line = Some(words.collect::<Vec<_>>()),
            Some(w) if w.starts_with("cpu") && w[3..].bytes().all(|b| b.is_ascii_digit()) => {
                cores += 1;
            }
            _ => {}
        }
    }
    let Some(fields) = line else {
        return Err(err(FILE, "no aggregate `cpu` line"));
    };
    if fields.len() < 4 {
        return Err(err(
            FILE,
            format!(
                "the `cpu` line has {} columns; at least 4 (user nice system idle) expected",
                fields.len()
            ),
        ));
    }
    let mut values = [None; 8];
    for (i, slot) in values.iter_mut().enumerate() {
        if let Some(word) = fields.get(i) {
            *slot = Some(word.parse::<u64>().map_err(|_| {
                err(
                    FILE,
                    format!(
                        "column {} ({}) of the `cpu` line is not a number: {word:?}",
                        i + 1,
                        CPU_FIELDS[i]
                    ),
                )
            })?);
        }
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = values;
    Ok(CpuTimes {
        user: user.unwrap_or(0),
        nice: nice.unwrap_or(0),
        system: system.unwrap_or(0),
        idle: idle.unwrap_or(0),
        iowait,
        irq,
        softirq,
        steal,
        cores,
    })
}

/// CPU use between two `/proc/stat` samples, in percent of all CPU time (every core together).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuShare {
    /// Time not idle and not waiting for I/O (user, nice, system, irq, softirq, steal).
    pub busy_pct: f64,
    pub iowait_pct: Option<f64>,
    /// Time a hypervisor gave this VM's virtual CPUs to someone else; `None` when the kernel has
    /// no steal column.
    pub steal_pct: Option<f64>,
}

/// Why two samples give no CPU figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CpuDeltaError {
    #[error("no CPU time passed between the two /proc/stat samples")]
    NoTimePassed,
    #[error("the /proc/stat counters went backwards (a CPU went offline?)")]
    WentBackwards,
}

/// Percentages from two samples taken some time apart (`earlier` first).
pub fn cpu_share(earlier: &CpuTimes, later: &CpuTimes) -> Result<CpuShare, CpuDeltaError> {
    let delta = |a: u64, b: u64| b.checked_sub(a).ok_or(CpuDeltaError::WentBackwards);
    let opt_delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => delta(a, b).map(Some),
        _ => Ok(None),
    };
    let total = delta(earlier.total(), later.total())?;
    let idle = delta(earlier.idle, later.idle)?;
    let iowait = opt_delta(earlier.iowait, later.iowait)?;
    let steal = opt_delta(earlier.steal, later.steal)?;
    if total == 0 {
        return Err(CpuDeltaError::NoTimePassed);
    }
    let pct = |part: u64| (part as f64 * 100.0 / total as f64).clamp(0.0, 100.0);
    let waiting = idle + iowait.unwrap_or(0);
    Ok(CpuShare {
        busy_pct: pct(total.saturating_sub(waiting)),
        iowait_pct: iowait.map(pct),
        steal_pct: steal.map(pct),
    })
}

/// The memory figures of `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    /// `MemAvailable`: what new work can get without swapping. Kernels before 3.14 lack it; then
    /// it is estimated as MemFree + Buffers + Cached and `available_estimated` is true.
    pub available: u64,
    pub available_estimated: bool,
    pub swap_total: u64,
    pub swap_free: u64,
    /// Swap pages also still in RAM: high values mean the host was recently short of memory.
    pub swap_cached: Option<u64>,
}

/// Parses `/proc/meminfo` (`Key:   value kB` lines).
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    const FILE: &str = "/proc/meminfo";
    let mut map: HashMap<&str, &str> = HashMap::new();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(':') {
            map.insert(key.trim(), value.trim());
        }
    }
    let get = |key: &'static str| -> Result<Option<u64>, ParseError> {
        let Some(value) = map.get(key) else {
            return Ok(None);
        };
        let mut words = value.split_whitespace();
        let number = words
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| err(FILE, format!("`{key}` is not a number: {value:?}")))?;
        match words.next() {
            None => Ok(Some(number)),
            Some("kB") => number
                .checked_mul(1024)
                .map(Some)
                .ok_or_else(|| err(FILE, format!("`{key}` is too large: {value:?}"))),
            Some(unit) => Err(err(FILE, format!("`{key}` has an unknown unit {unit:?}"))),
        }
    };
    let need = |key: &'static str| get(key)?.ok_or_else(|| err(FILE, format!("no `{key}` line")));
    let total = need("MemTotal")?;
    let (available, available_estimated) = match get("MemAvailable")? {
        Some(a) => (a, false),
        None => {
            let free = need("MemFree")?;
            let cache = get("Buffers")?.unwrap_or(0) + get("Cached")?.unwrap_or(0);
            ((free + cache).min(total), true)
        }
    };
    Ok(MemInfo {
        total,
        available,
        available_estimated,
        swap_total: need("SwapTotal")?,
        swap_free: need("SwapFree")?,
        swap_cached: get("SwapCached")?,
    })
}

/// `/proc/loadavg`: run-queue averages over 1, 5 and 15 minutes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    const FILE: &str = "/proc/loadavg";
    let words: Vec<&str> = text.split_whitespace().collect();
    let field = |i: usize, name: &str| -> Result<f64, ParseError> {
        let word = words
            .get(i)
            .ok_or_else(|| err(FILE, format!("no {name} average (column {})", i + 1)))?;
        word.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                err(
                    FILE,
                    format!("the {name} average is not a number: {word:?}"),
                )
            })
    };
    Ok(LoadAvg {
        one: field(0, "1-minute")?,
        five: field(1, "5-minute")?,
        fifteen: field(2, "15-minute")?,
    })
}

/// `/proc/uptime`: seconds since boot.
pub fn parse_uptime(text: &str) -> Result<f64, ParseError> {
    const FILE: &str = "/proc/uptime";
    let word = text
        .split_whitespace()
        .next()
        .ok_or_else(|| err(FILE, "empty"))?;
    word.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| err(FILE, format!("the uptime is not a number: {word:?}")))
}

/// One interface's counters from `/proc/net/dev`, since boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetCounters {
    pub iface: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses `/proc/net/dev` (two header lines, then `iface: 16 counters`).
pub fn parse_net_dev(text: &str) -> Result<Vec<NetCounters>, ParseError> {
    const FILE: &str = "/proc/net/dev";
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let iface = name.trim();
        // The two header lines contain `|`, never `:`; anything else without a name is broken.
        if iface.is_empty() || iface.contains('|') {
            continue;
        }
        let numbers: Vec<u64> = rest
            .split_whitespace()
            .map(|w| w.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                err(
                    FILE,
                    format!("line {} ({iface}): a counter is not a number", n + 1),
                )
            })?;
        if numbers.len() < 12 {
            return Err(err(
                FILE,
                format!(
                    "line {} ({iface}): {} counters; at least 12 expected",
                    n + 1,
                    numbers.len()
                ),
            ));
        }
        out.push(NetCounters {
            iface: iface.to_owned(),
            rx_bytes: numbers[0],
            rx_packets: numbers[1],
            rx_errors: numbers[2],
            rx_dropped: numbers[3],
            tx_bytes: numbers[8],
            tx_packets: numbers[9],
            tx_errors: numbers[10],
            tx_dropped: numbers[11],
        });
    }
    Ok(out)
}

/// Bytes per second received and sent by `iface` between two readings `secs` apart; `None`
/// when the interface is new, its counters were reset, or no time passed.
pub fn net_rate(earlier: &[NetCounters], later: &NetCounters, secs: f64) -> Option<(f64, f64)> {
    let before = earlier.iter().find(|c| c.iface == later.iface)?;
    if secs <= 0.0 {
        return None;
    }
    let rx = later.rx_bytes.checked_sub(before.rx_bytes)?;
    let tx = later.tx_bytes.checked_sub(before.tx_bytes)?;
    Some((rx as f64 / secs, tx as f64 / secs))
}

#[cfg(test)]
#[path = "proc_tests.rs"]
mod tests;
