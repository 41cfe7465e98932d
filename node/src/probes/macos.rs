//! macOS figures from the commands every Mac has, without IOKit bindings: `vm_stat` and
//! `sysctl` for memory and swap (and CPU count, load, boot time), `system_profiler
//! SPDisplaysDataType` for the GPU and its Metal family, `sw_vers` for the OS version.
//!
//! The parsers are pure (text in, figures or an error naming the command and the line out) and,
//! like [`super::fallback`], compiled on every OS so that Linux CI type-checks them and runs
//! their tests on the outputs recorded in `testdata/macos/`. The commands themselves only run on
//! a Mac, each under a time limit ([`run`]).

#![cfg_attr(not(target_os = "macos"), allow(dead_code))]

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use thiserror::Error;

use super::{Gpu, Gpus, Load, Memory, Probe};

const VM_STAT: &str = "vm_stat";
const MEMSIZE: &str = "sysctl hw.memsize";
const SWAPUSAGE: &str = "sysctl vm.swapusage";
const NCPU: &str = "sysctl hw.ncpu";
const LOADAVG: &str = "sysctl vm.loadavg";
const BOOTTIME: &str = "sysctl kern.boottime";
const DISPLAYS_JSON: &str = "system_profiler SPDisplaysDataType -json";
const DISPLAYS_TEXT: &str = "system_profiler SPDisplaysDataType";
const SW_VERS: &str = "sw_vers";

const VM_STAT_BIN: &str = "/usr/bin/vm_stat";
const SYSCTL_BIN: &str = "/usr/sbin/sysctl";
const SYSTEM_PROFILER_BIN: &str = "/usr/sbin/system_profiler";
const SW_VERS_BIN: &str = "/usr/bin/sw_vers";

/// How long `vm_stat`, `sysctl` or `sw_vers` may take (they answer in milliseconds).
const COMMAND_LIMIT: Duration = Duration::from_secs(5);
/// How long `system_profiler` may take (it asks the graphics driver; well under a second
/// usually).
const PROFILER_LIMIT: Duration = Duration::from_secs(10);

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// What could not be read in one command's output; the message names the command, and the line
/// where there is one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{command}: {detail}")]
pub struct ParseError {
    pub command: &'static str,
    pub detail: String,
}

fn err(command: &'static str, detail: impl Into<String>) -> ParseError {
    ParseError {
        command,
        detail: detail.into(),
    }
}

/// `line N `text`` for an error message (1-based, the text cut short).
fn at(index: usize, line: &str) -> String {
    format!("line {} `{}`", index + 1, clip(line.trim()))
}

/// At most 80 characters of `s`, for error messages about garbage input.
fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// vm_stat

/// The page counts of `vm_stat` this module uses, and the page size from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmStat {
    pub page_size: u64,
    /// "Pages free": vm_stat already leaves the speculative pages out of it.
    pub free: u64,
    pub active: u64,
    pub inactive: u64,
    pub speculative: u64,
    /// "Pages wired down".
    pub wired: u64,
    pub purgeable: u64,
    pub file_backed: u64,
    pub anonymous: u64,
    /// "Pages occupied by compressor": the RAM the compressed pages take.
    pub compressor: u64,
}

/// The lines [`parse_vm_stat`] needs, in [`VmStat`] field order.
const VM_FIELDS: [&str; 9] = [
    "Pages free",
    "Pages active",
    "Pages inactive",
    "Pages speculative",
    "Pages wired down",
    "Pages purgeable",
    "File-backed pages",
    "Anonymous pages",
    "Pages occupied by compressor",
];

// Memory the way Activity Monitor shows it:
//
//   used      = app memory + wired + compressed, app memory = anonymous - purgeable pages
//   available = free + inactive + speculative + purgeable pages
//
// "used" is Activity Monitor's "Memory Used"; "available" is what can be handed out without
// swapping (free pages, clean or reclaimable cache, purgeable memory). The two overlap
// (anonymous pages on the inactive list count in both), so they need not add up to the total.
// Activity Monitor is closed source: this is the reconstruction monitoring tools commonly use.
impl VmStat {
    fn bytes(&self, pages: u64) -> u64 {
        pages.saturating_mul(self.page_size)
    }

    /// Activity Monitor's "App Memory".
    pub fn app_bytes(&self) -> u64 {
        self.bytes(self.anonymous.saturating_sub(self.purgeable))
    }

    /// Activity Monitor's "Memory Used": app memory + wired + compressed.
    pub fn used_bytes(&self) -> u64 {
        self.app_bytes()
            .saturating_add(self.bytes(self.wired))
            .saturating_add(self.bytes(self.compressor))
    }

    /// Free + inactive + speculative + purgeable.
    pub fn available_bytes(&self) -> u64 {
        self.bytes(
            self.free
                .saturating_add(self.inactive)
                .saturating_add(self.speculative)
                .saturating_add(self.purgeable),
        )
    }
}

/// Parses `vm_stat` output: the page size from the header line
/// `Mach Virtual Memory Statistics: (page size of 16384 bytes)`, then `Key:   count.` lines.
/// Lines it does not need are skipped (newer releases add some); a needed one that is missing,
/// lacks its final `.` (output cut short) or holds no count is an error.
pub fn parse_vm_stat(text: &str) -> Result<VmStat, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .skip_while(|(_, l)| l.trim().is_empty());
    let Some((i, header)) = lines.next() else {
        return Err(err(VM_STAT, "empty output"));
    };
    let size = header
        .trim()
        .strip_prefix("Mach Virtual Memory Statistics: (page size of ")
        .and_then(|r| r.strip_suffix(" bytes)"))
        .ok_or_else(|| {
            err(
                VM_STAT,
                format!(
                    "{}: expected `Mach Virtual Memory Statistics: (page size of N bytes)`",
                    at(i, header)
                ),
            )
        })?;
    let page_size = size
        .parse::<u64>()
        .ok()
        .filter(|p| p.is_power_of_two())
        .ok_or_else(|| {
            err(
                VM_STAT,
                format!("{}: `{}` is not a page size", at(i, header), clip(size)),
            )
        })?;
    let mut found = [None; VM_FIELDS.len()];
    for (i, line) in lines {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches('"');
        let Some(slot) = VM_FIELDS.iter().position(|f| *f == key) else {
            continue;
        };
        let value = value.trim();
        let Some(digits) = value.strip_suffix('.') else {
            return Err(err(
                VM_STAT,
                format!(
                    "{}: no final `.` after the count (output cut short?)",
                    at(i, line)
                ),
            ));
        };
        let count = digits.parse::<u64>().map_err(|_| {
            err(
                VM_STAT,
                format!("{}: `{}` is not a page count", at(i, line), clip(digits)),
            )
        })?;
        found[slot] = Some(count);
    }
    let get = |k: usize| {
        found[k].ok_or_else(|| {
            err(
                VM_STAT,
                format!("no `{}` line (output cut short?)", VM_FIELDS[k]),
            )
        })
    };
    Ok(VmStat {
        page_size,
        free: get(0)?,
        active: get(1)?,
        inactive: get(2)?,
        speculative: get(3)?,
        wired: get(4)?,
        purgeable: get(5)?,
        file_backed: get(6)?,
        anonymous: get(7)?,
        compressor: get(8)?,
    })
}

// ---------------------------------------------------------------------------------------------
// sysctl

/// The value of one sysctl, with or without its `name: ` prefix (`sysctl name` or
/// `sysctl -n name`).
fn sysctl_value<'a>(text: &'a str, name: &str) -> &'a str {
    let t = text.trim();
    t.strip_prefix(name)
        .and_then(|r| r.strip_prefix(':'))
        .map_or(t, str::trim)
}

/// `sysctl -n hw.memsize`: the physical memory in bytes.
pub fn parse_memsize(text: &str) -> Result<u64, ParseError> {
    let v = sysctl_value(text, "hw.memsize");
    if v.is_empty() {
        return Err(err(MEMSIZE, "empty output"));
    }
    v.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| err(MEMSIZE, format!("`{}` is not a byte count", clip(v))))
}

/// `sysctl -n hw.ncpu`: the logical CPUs.
pub fn parse_ncpu(text: &str) -> Result<u32, ParseError> {
    let v = sysctl_value(text, "hw.ncpu");
    if v.is_empty() {
        return Err(err(NCPU, "empty output"));
    }
    v.parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| err(NCPU, format!("`{}` is not a CPU count", clip(v))))
}

/// `sysctl -n vm.loadavg`: `{ 1.92 2.10 2.27 }`.
pub fn parse_loadavg(text: &str) -> Result<Load, ParseError> {
    let v = sysctl_value(text, "vm.loadavg");
    if v.is_empty() {
        return Err(err(LOADAVG, "empty output"));
    }
    let inner = v
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| {
            err(
                LOADAVG,
                format!("`{}`: expected `{{ 1m 5m 15m }}`", clip(v)),
            )
        })?;
    let words: Vec<&str> = inner.split_whitespace().collect();
    let [one, five, fifteen] = words[..] else {
        return Err(err(
            LOADAVG,
            format!("`{}`: expected three load averages", clip(v)),
        ));
    };
    let num = |w: &str| {
        w.replace(',', ".")
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| err(LOADAVG, format!("`{}` is not a load average", clip(w))))
    };
    Ok(Load {
        one: num(one)?,
        five: num(five)?,
        fifteen: num(fifteen)?,
    })
}

/// `sysctl -n kern.boottime`: `{ sec = 1733580000, usec = 123456 } Sat Dec  7 15:00:00 2024`,
/// to the boot moment in seconds since the Unix epoch.
pub fn parse_boottime(text: &str) -> Result<u64, ParseError> {
    let v = sysctl_value(text, "kern.boottime");
    if v.is_empty() {
        return Err(err(BOOTTIME, "empty output"));
    }
    let inner = v
        .strip_prefix('{')
        .and_then(|r| r.split_once('}'))
        .map(|(inner, _)| inner)
        .ok_or_else(|| {
            err(
                BOOTTIME,
                format!("`{}`: expected `{{ sec = N, usec = N }}`", clip(v)),
            )
        })?;
    let mut sec = None;
    for part in inner.split(',') {
        let Some((key, value)) = part.split_once('=') else {
            return Err(err(
                BOOTTIME,
                format!("`{}`: expected `key = value`", clip(part.trim())),
            ));
        };
        let value = value.trim();
        match key.trim() {
            "sec" => {
                sec = Some(value.parse::<u64>().map_err(|_| {
                    err(
                        BOOTTIME,
                        format!("`{}` is not a number of seconds", clip(value)),
                    )
                })?);
            }
            "usec" => {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|u| *u < 1_000_000)
                    .ok_or_else(|| {
                        err(
                            BOOTTIME,
                            format!("`{}` is not a number of microseconds", clip(value)),
                        )
                    })?;
            }
            _ => {}
        }
    }
    sec.ok_or_else(|| err(BOOTTIME, format!("`{}`: no `sec = N`", clip(v))))
}

/// Seconds since boot, from `sysctl -n kern.boottime` and the time now (seconds since the
/// epoch).
pub fn uptime_from_boottime(text: &str, now_unix_s: u64) -> Result<u64, ParseError> {
    let boot = parse_boottime(text)?;
    now_unix_s.checked_sub(boot).ok_or_else(|| {
        err(
            BOOTTIME,
            format!("boot time {boot} is later than now ({now_unix_s})"),
        )
    })
}

/// Swap from `sysctl vm.swapusage`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swap {
    pub total: u64,
    pub used: u64,
    pub free: u64,
    pub encrypted: bool,
}

/// `sysctl vm.swapusage`:
/// `vm.swapusage: total = 2048.00M  used = 1084.25M  free = 963.75M  (encrypted)`; the sizes
/// are binary megabytes with two decimals, so bytes are rounded to the nearest one.
pub fn parse_swapusage(text: &str) -> Result<Swap, ParseError> {
    let v = sysctl_value(text, "vm.swapusage");
    if v.is_empty() {
        return Err(err(SWAPUSAGE, "empty output"));
    }
    let words: Vec<&str> = v.split_whitespace().collect();
    let (mut total, mut used, mut free, mut encrypted) = (None, None, None, false);
    let mut i = 0;
    while i < words.len() {
        let slot = match words[i] {
            "total" => &mut total,
            "used" => &mut used,
            "free" => &mut free,
            "(encrypted)" => {
                encrypted = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let key = words[i];
        if words.get(i + 1) != Some(&"=") {
            return Err(err(
                SWAPUSAGE,
                format!("`{}`: `{key}` is not followed by `= SIZE`", clip(v)),
            ));
        }
        let Some(size) = words.get(i + 2) else {
            return Err(err(
                SWAPUSAGE,
                format!("`{}`: no size after `{key} =` (output cut short?)", clip(v)),
            ));
        };
        let size = size.trim_end_matches(',');
        *slot = Some(parse_size(size).ok_or_else(|| {
            err(
                SWAPUSAGE,
                format!("`{}` is not a size like `1084.25M`", clip(size)),
            )
        })?);
        i += 3;
    }
    let need = |value: Option<u64>, key: &str| {
        value.ok_or_else(|| {
            err(
                SWAPUSAGE,
                format!("`{}`: no `{key} = SIZE` (output cut short?)", clip(v)),
            )
        })
    };
    let swap = Swap {
        total: need(total, "total")?,
        used: need(used, "used")?,
        free: need(free, "free")?,
        encrypted,
    };
    if swap.used > swap.total {
        return Err(err(
            SWAPUSAGE,
            format!("`{}`: more swap used than there is", clip(v)),
        ));
    }
    Ok(swap)
}

/// `1084.25M`, `8 GB`, `1536 MB`: a decimal number and a binary unit (K, M, G, T, with or
/// without B), to bytes rounded to the nearest one. `None` for anything else.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let cut = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = (s[..cut].trim(), s[cut..].trim());
    let unit: u128 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        "T" | "TB" => 1 << 40,
        _ => return None,
    };
    let (int, frac) = number.split_once(['.', ',']).unwrap_or((number, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || frac.len() > 9 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let scaled = int
        .checked_mul(scale)?
        .checked_add(frac_value)?
        .checked_mul(unit)?;
    u64::try_from((scaled + scale / 2) / scale).ok()
}

/// Memory from `vm_stat`, `sysctl hw.memsize` and `sysctl vm.swapusage`.
pub fn memory_from(vm: &VmStat, total: u64, swap: &Swap) -> Memory {
    Memory {
        total_bytes: total,
        available_bytes: vm.available_bytes().min(total),
        used_bytes: vm.used_bytes().min(total),
        swap_total_bytes: swap.total,
        swap_used_bytes: swap.used,
        swap_cached_bytes: None,
    }
}

// ---------------------------------------------------------------------------------------------
// system_profiler SPDisplaysDataType

/// A GPU's memory as system_profiler describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuMemory {
    /// Apple silicon: the GPU shares the system's unified memory; there is no VRAM figure.
    Unified,
    /// A discrete GPU's own VRAM (`spdisplays_vram`, "VRAM (Total)").
    Dedicated(u64),
    /// The most system memory an Intel integrated GPU may borrow (`spdisplays_vram_shared`,
    /// "VRAM (Dynamic, Max)").
    Shared(u64),
    /// Not listed.
    Unknown,
}

/// One GPU from `system_profiler SPDisplaysDataType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacGpu {
    /// The chipset model: "Apple M2 Pro", "AMD Radeon Pro 5500M".
    pub model: String,
    /// GPU cores (Apple silicon lists them).
    pub cores: Option<u32>,
    /// The Metal family the GPU supports ("Metal 3"); `None` when none is listed.
    pub metal: Option<String>,
    pub memory: GpuMemory,
}

impl MacGpu {
    /// One line: "Apple M2 Pro (19-core GPU), Metal 3, unified memory",
    /// "AMD Radeon Pro 5500M, Metal 3, 8 GiB VRAM".
    pub fn describe(&self) -> String {
        let mut line = self.model.clone();
        if let Some(cores) = self.cores {
            line.push_str(&format!(" ({cores}-core GPU)"));
        }
        if let Some(metal) = &self.metal {
            line.push_str(", ");
            line.push_str(metal);
        }
        match self.memory {
            GpuMemory::Unified => line.push_str(", unified memory"),
            GpuMemory::Dedicated(b) => line.push_str(&format!(", {} VRAM", size_text(b))),
            GpuMemory::Shared(b) => line.push_str(&format!(", up to {} shared", size_text(b))),
            GpuMemory::Unknown => {}
        }
        line
    }
}

fn size_text(bytes: u64) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A Metal family as system_profiler gives it (`spdisplays_metal3`,
/// `spdisplays_mtlgpufamilymac2`, `Metal 3`), as a person would say it.
fn metal_name(raw: &str) -> String {
    let v = raw.trim();
    let v = v.strip_prefix("spdisplays_").unwrap_or(v);
    let number = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    if let Some(n) = v.strip_prefix("metal")
        && number(n)
    {
        return format!("Metal {n}");
    }
    if let Some(n) = v.strip_prefix("mtlgpufamilymac")
        && number(n)
    {
        return format!("Metal GPUFamily macOS {n}");
    }
    if let Some(n) = v.strip_prefix("mtlgpufamilyapple")
        && number(n)
    {
        return format!("Metal GPUFamily Apple {n}");
    }
    if v.eq_ignore_ascii_case("supported") {
        return "Metal".to_owned();
    }
    v.strip_prefix("Supported, ").unwrap_or(v).to_owned()
}

/// Parses `system_profiler SPDisplaysDataType -json`: one [`MacGpu`] per entry of the
/// `SPDisplaysDataType` list. An Apple GPU (vendor `sppci_vendor_Apple`, or a model named
/// "Apple …") has unified memory, whatever else the entry says.
pub fn parse_displays_json(text: &str) -> Result<Vec<MacGpu>, ParseError> {
    let c = DISPLAYS_JSON;
    let root: Value = serde_json::from_str(text).map_err(|e| err(c, format!("not JSON: {e}")))?;
    let entries = root
        .get("SPDisplaysDataType")
        .and_then(Value::as_array)
        .ok_or_else(|| err(c, "no `SPDisplaysDataType` list"))?;
    let mut gpus = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let which = format!("entry {}", i + 1);
        let field = |k: &str| {
            entry
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        // `_name` is an untranslated key ("kHW_AppleM1Item") on some releases.
        let model = field("sppci_model")
            .or_else(|| field("_name").filter(|n| !n.starts_with("kHW_")))
            .ok_or_else(|| err(c, format!("{which} has no `sppci_model`")))?;
        let cores = field("sppci_cores")
            .map(|v| {
                v.parse::<u32>().map_err(|_| {
                    err(
                        c,
                        format!("{which}: sppci_cores `{}` is not a core count", clip(v)),
                    )
                })
            })
            .transpose()?;
        let metal = field("spdisplays_mtlgpufamilysupport")
            .or_else(|| field("spdisplays_metalfamily"))
            .or_else(|| field("spdisplays_metal"))
            .map(metal_name);
        let apple = field("spdisplays_vendor")
            .is_some_and(|v| v.to_ascii_lowercase().contains("apple"))
            || model.starts_with("Apple ");
        let size = |key: &str, v: &str| {
            parse_size(v).ok_or_else(|| {
                err(
                    c,
                    format!("{which}: {key} `{}` is not a size like `8 GB`", clip(v)),
                )
            })
        };
        let memory = if apple {
            GpuMemory::Unified
        } else if let Some(v) = field("spdisplays_vram") {
            GpuMemory::Dedicated(size("spdisplays_vram", v)?)
        } else if let Some(v) = field("spdisplays_vram_shared") {
            GpuMemory::Shared(size("spdisplays_vram_shared", v)?)
        } else {
            GpuMemory::Unknown
        };
        gpus.push(MacGpu {
            model: model.to_owned(),
            cores,
            metal,
            memory,
        });
    }
    if gpus.is_empty() {
        return Err(err(c, "lists no GPU"));
    }
    Ok(gpus)
}

/// Parses the plain-text `system_profiler SPDisplaysDataType` (for when `-json` fails): a GPU
/// starts at each `Chipset Model:` line, and its keys are the lines indented as that one (the
/// displays below it are indented further).
pub fn parse_displays_text(text: &str) -> Result<Vec<MacGpu>, ParseError> {
    let c = DISPLAYS_TEXT;
    struct Draft {
        indent: usize,
        gpu: MacGpu,
        apple: bool,
        vram: GpuMemory,
    }
    let mut drafts: Vec<Draft> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "Chipset Model" {
            if value.is_empty() {
                return Err(err(
                    c,
                    format!("{}: no model after `Chipset Model:`", at(i, line)),
                ));
            }
            drafts.push(Draft {
                indent,
                gpu: MacGpu {
                    model: value.to_owned(),
                    cores: None,
                    metal: None,
                    memory: GpuMemory::Unknown,
                },
                apple: value.starts_with("Apple "),
                vram: GpuMemory::Unknown,
            });
            continue;
        }
        let Some(d) = drafts.last_mut() else {
            continue;
        };
        if indent != d.indent {
            continue;
        }
        let size = |v: &str| {
            parse_size(v).ok_or_else(|| {
                err(
                    c,
                    format!("{}: `{}` is not a size like `8 GB`", at(i, line), clip(v)),
                )
            })
        };
        match key {
            "Total Number of Cores" => {
                d.gpu.cores = Some(value.parse::<u32>().map_err(|_| {
                    err(
                        c,
                        format!("{}: `{}` is not a core count", at(i, line), clip(value)),
                    )
                })?);
            }
            "Vendor" => d.apple |= value.starts_with("Apple"),
            "Metal Support" | "Metal Family" | "Metal" if !value.is_empty() => {
                d.gpu.metal = Some(metal_name(value));
            }
            "VRAM (Total)" => d.vram = GpuMemory::Dedicated(size(value)?),
            "VRAM (Dynamic, Max)" => d.vram = GpuMemory::Shared(size(value)?),
            _ => {}
        }
    }
    if drafts.is_empty() {
        return Err(err(c, "no `Chipset Model:` line: lists no GPU"));
    }
    Ok(drafts
        .into_iter()
        .map(|d| MacGpu {
            memory: if d.apple { GpuMemory::Unified } else { d.vram },
            ..d.gpu
        })
        .collect())
}

/// The GPU line of a run's context: the GPU with its own VRAM if there is one (the one macOS
/// switches to for heavy work), else the first, then the names of any others.
pub fn gpu_line(gpus: &[MacGpu]) -> Option<String> {
    let main = gpus
        .iter()
        .position(|g| matches!(g.memory, GpuMemory::Dedicated(_)))
        .unwrap_or(0);
    let mut line = gpus.get(main)?.describe();
    let others: Vec<&str> = gpus
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != main)
        .map(|(_, g)| g.model.as_str())
        .collect();
    if !others.is_empty() {
        line.push_str("; also ");
        line.push_str(&others.join(", "));
    }
    Some(line)
}

/// The GPU probe's answer: one device per GPU, named by [`MacGpu::describe`]. Only a discrete
/// GPU's VRAM is a total; unified and shared memory have none, and nothing is measured in use.
pub fn gpus_of(gpus: &[MacGpu]) -> Gpus {
    Gpus {
        devices: gpus
            .iter()
            .enumerate()
            .map(|(i, g)| Gpu {
                index: i as u32,
                name: Some(g.describe()),
                uuid: None,
                vram_total_bytes: match g.memory {
                    GpuMemory::Dedicated(b) => Some(b),
                    _ => None,
                },
                vram_used_bytes: None,
                vram_free_bytes: None,
                utilization_pct: None,
                temperature_c: None,
                error: None,
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// sw_vers

/// `sw_vers` (`ProductName:\tmacOS`, `ProductVersion:\t14.5`, `BuildVersion:\t23F79`, and on
/// some releases `ProductVersionExtra:\t(a)`) → "macOS 14.5 (23F79)".
pub fn parse_sw_vers(text: &str) -> Result<String, ParseError> {
    let (mut name, mut version, mut extra, mut build) = (None, None, None, None);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(err(
                SW_VERS,
                format!("{}: expected `Key: value`", at(i, line)),
            ));
        };
        let value = Some(value.trim()).filter(|v| !v.is_empty());
        match key.trim() {
            "ProductName" => name = value,
            "ProductVersion" => version = value.map(|v| (i, line, v)),
            "ProductVersionExtra" => extra = value,
            "BuildVersion" => build = value,
            _ => {}
        }
    }
    let name = name.ok_or_else(|| err(SW_VERS, "no `ProductName` line"))?;
    let (i, line, version) = version.ok_or_else(|| err(SW_VERS, "no `ProductVersion` line"))?;
    let is_version = version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !is_version {
        return Err(err(
            SW_VERS,
            format!("{}: `{}` is not a version", at(i, line), clip(version)),
        ));
    }
    let mut out = format!("{name} {version}");
    if let Some(extra) = extra {
        out.push(' ');
        out.push_str(extra);
    }
    if let Some(build) = build {
        out.push_str(&format!(" ({build})"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Running the commands

/// Why a command gave no output to parse.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("{0}: cannot start: {1}")]
    Start(String, std::io::Error),
    #[error("{0}: did not finish within {1:?}")]
    TimedOut(String, Duration),
    #[error("{0}: {1}")]
    Failed(String, ExitStatus),
    #[error("{0}: {1}")]
    Output(String, String),
}

/// Runs `program args` (C locale, no stdin, stderr dropped) and returns its standard output, or
/// why not: it could not start, it failed, or it ran past `limit` (then it is killed).
pub fn run(program: &str, args: &[&str], limit: Duration) -> Result<String, RunError> {
    let shown = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| RunError::Start(shown.clone(), e))?;
    let Some(mut stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(RunError::Output(shown, "no output pipe".to_owned()));
    };
    // Read on a thread, so that a large output never blocks the child while this one waits.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = tx.send(stdout.read_to_end(&mut buf).map(|_| buf));
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::TimedOut(shown, limit));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Output(shown, e.to_string()));
            }
        }
    };
    if !status.success() {
        return Err(RunError::Failed(shown, status));
    }
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    match rx.recv_timeout(left) {
        Ok(Ok(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(Err(e)) => Err(RunError::Output(shown, e.to_string())),
        Err(_) => Err(RunError::Output(
            shown,
            "its output did not end (a child process still holds it?)".to_owned(),
        )),
    }
}

/// Runs a command and parses its output; either failure as one message.
fn read<T>(
    program: &str,
    args: &[&str],
    limit: Duration,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<T, String> {
    let text = run(program, args, limit).map_err(|e| e.to_string())?;
    parse(&text).map_err(|e| e.to_string())
}

/// Memory and swap as of now, from `vm_stat`, `sysctl -n hw.memsize` and `sysctl vm.swapusage`.
pub fn memory_now() -> Result<Memory, String> {
    let vm = read(VM_STAT_BIN, &[], COMMAND_LIMIT, parse_vm_stat)?;
    let total = read(
        SYSCTL_BIN,
        &["-n", "hw.memsize"],
        COMMAND_LIMIT,
        parse_memsize,
    )?;
    let swap = read(
        SYSCTL_BIN,
        &["vm.swapusage"],
        COMMAND_LIMIT,
        parse_swapusage,
    )?;
    Ok(memory_from(&vm, total, &swap))
}

/// This Mac's GPUs, from `system_profiler SPDisplaysDataType -json`, or from its plain-text
/// form when the JSON cannot be had or read (but not after a time-out: that would only double
/// the wait).
pub fn displays_now() -> Result<Vec<MacGpu>, String> {
    let json = match run(
        SYSTEM_PROFILER_BIN,
        &["SPDisplaysDataType", "-json"],
        PROFILER_LIMIT,
    ) {
        Ok(text) => parse_displays_json(&text).map_err(|e| e.to_string()),
        Err(e @ RunError::TimedOut(..)) => return Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    json.or_else(|json_error| {
        read(
            SYSTEM_PROFILER_BIN,
            &["SPDisplaysDataType"],
            PROFILER_LIMIT,
            parse_displays_text,
        )
        .map_err(|text_error| format!("{json_error}; then {text_error}"))
    })
}

/// The GPU probe's answer on a Mac.
pub fn gpus_now() -> Probe<Gpus> {
    match displays_now() {
        Ok(gpus) => Probe::Ok(gpus_of(&gpus)),
        Err(e) => Probe::error(e),
    }
}

/// The GPU line of a run's context on a Mac.
pub fn gpu_line_now() -> Result<String, String> {
    displays_now().and_then(|gpus| gpu_line(&gpus).ok_or_else(|| "no GPU".to_owned()))
}

/// "macOS 14.5 (23F79)", from `sw_vers`.
pub fn os_version_now() -> Result<String, String> {
    read(SW_VERS_BIN, &[], COMMAND_LIMIT, parse_sw_vers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M2_VM_STAT: &str = include_str!("testdata/macos/m2pro-macos14-vm_stat.txt");
    const M2_MEMSIZE: &str = include_str!("testdata/macos/m2pro-macos14-hw.memsize.txt");
    const M2_SWAP: &str = include_str!("testdata/macos/m2pro-macos14-vm.swapusage.txt");
    const M2_NCPU: &str = include_str!("testdata/macos/m2pro-macos14-hw.ncpu.txt");
    const M2_LOADAVG: &str = include_str!("testdata/macos/m2pro-macos14-vm.loadavg.txt");
    const M2_BOOTTIME: &str = include_str!("testdata/macos/m2pro-macos14-kern.boottime.txt");
    const M2_SW_VERS: &str = include_str!("testdata/macos/m2pro-macos14-sw_vers.txt");
    const M2_JSON: &str =
        include_str!("testdata/macos/m2pro-macos14-system_profiler-SPDisplaysDataType.json");
    const M2_TEXT: &str =
        include_str!("testdata/macos/m2pro-macos14-system_profiler-SPDisplaysDataType.txt");

    const INTEL_VM_STAT: &str = include_str!("testdata/macos/intel-mbp16-macos13-vm_stat.txt");
    const INTEL_MEMSIZE: &str = include_str!("testdata/macos/intel-mbp16-macos13-hw.memsize.txt");
    const INTEL_SWAP: &str = include_str!("testdata/macos/intel-mbp16-macos13-vm.swapusage.txt");
    const INTEL_NCPU: &str = include_str!("testdata/macos/intel-mbp16-macos13-hw.ncpu.txt");
    const INTEL_LOADAVG: &str = include_str!("testdata/macos/intel-mbp16-macos13-vm.loadavg.txt");
    const INTEL_BOOTTIME: &str =
        include_str!("testdata/macos/intel-mbp16-macos13-kern.boottime.txt");
    const INTEL_SW_VERS: &str = include_str!("testdata/macos/intel-mbp16-macos13-sw_vers.txt");
    const INTEL_JSON: &str =
        include_str!("testdata/macos/intel-mbp16-macos13-system_profiler-SPDisplaysDataType.json");
    const INTEL_TEXT: &str =
        include_str!("testdata/macos/intel-mbp16-macos13-system_profiler-SPDisplaysDataType.txt");

    const M1_VM_STAT: &str = include_str!("testdata/macos/m1-swap-macos13-vm_stat.txt");
    const M1_MEMSIZE: &str = include_str!("testdata/macos/m1-swap-macos13-hw.memsize.txt");
    const M1_SWAP: &str = include_str!("testdata/macos/m1-swap-macos13-vm.swapusage.txt");
    const M1_NCPU: &str = include_str!("testdata/macos/m1-swap-macos13-hw.ncpu.txt");
    const M1_LOADAVG: &str = include_str!("testdata/macos/m1-swap-macos13-vm.loadavg.txt");
    const M1_BOOTTIME: &str = include_str!("testdata/macos/m1-swap-macos13-kern.boottime.txt");
    const M1_SW_VERS: &str = include_str!("testdata/macos/m1-swap-macos13-sw_vers.txt");
    const M1_JSON: &str =
        include_str!("testdata/macos/m1-swap-macos13-system_profiler-SPDisplaysDataType.json");

    fn m2_pro() -> MacGpu {
        MacGpu {
            model: "Apple M2 Pro".to_owned(),
            cores: Some(19),
            metal: Some("Metal 3".to_owned()),
            memory: GpuMemory::Unified,
        }
    }

    fn intel_gpus() -> Vec<MacGpu> {
        vec![
            MacGpu {
                model: "Intel UHD Graphics 630".to_owned(),
                cores: None,
                metal: Some("Metal 3".to_owned()),
                memory: GpuMemory::Shared(1536 * MIB),
            },
            MacGpu {
                model: "AMD Radeon Pro 5500M".to_owned(),
                cores: None,
                metal: Some("Metal 3".to_owned()),
                memory: GpuMemory::Dedicated(8 * GIB),
            },
        ]
    }

    #[test]
    fn vm_stat_of_an_m2_pro_reads_every_needed_count() {
        let vm = parse_vm_stat(M2_VM_STAT).unwrap();
        assert_eq!(
            vm,
            VmStat {
                page_size: 16_384,
                free: 45_231,
                active: 812_644,
                inactive: 790_513,
                speculative: 12_870,
                wired: 213_554,
                purgeable: 31_207,
                file_backed: 655_302,
                anonymous: 960_725,
                compressor: 152_830,
            }
        );
        // App memory (anonymous - purgeable) + wired + compressed.
        assert_eq!(vm.app_bytes(), (960_725 - 31_207) * 16_384);
        assert_eq!(
            vm.used_bytes(),
            (960_725 - 31_207 + 213_554 + 152_830) * 16_384
        );
        assert_eq!(vm.used_bytes(), 21_232_058_368);
        // Free + inactive + speculative + purgeable.
        assert_eq!(
            vm.available_bytes(),
            (45_231 + 790_513 + 12_870 + 31_207) * 16_384
        );
        assert_eq!(vm.available_bytes(), 14_414_987_264);
    }

    #[test]
    fn an_m2_pro_without_swap_gives_its_memory() {
        let vm = parse_vm_stat(M2_VM_STAT).unwrap();
        let total = parse_memsize(M2_MEMSIZE).unwrap();
        let swap = parse_swapusage(M2_SWAP).unwrap();
        assert_eq!(total, 32 * GIB);
        assert_eq!(
            swap,
            Swap {
                total: 0,
                used: 0,
                free: 0,
                encrypted: true
            }
        );
        assert_eq!(
            memory_from(&vm, total, &swap),
            Memory {
                total_bytes: 34_359_738_368,
                available_bytes: 14_414_987_264,
                used_bytes: 21_232_058_368,
                swap_total_bytes: 0,
                swap_used_bytes: 0,
                swap_cached_bytes: None,
            }
        );
    }

    #[test]
    fn an_intel_mac_has_4_kib_pages() {
        let vm = parse_vm_stat(INTEL_VM_STAT).unwrap();
        assert_eq!(vm.page_size, 4096);
        assert_eq!(
            (vm.free, vm.wired, vm.compressor, vm.anonymous, vm.purgeable),
            (152_340, 598_121, 397_412, 1_621_329, 64_219)
        );
        let total = parse_memsize(INTEL_MEMSIZE).unwrap();
        let swap = parse_swapusage(INTEL_SWAP).unwrap();
        assert_eq!(
            memory_from(&vm, total, &swap),
            Memory {
                total_bytes: 16 * GIB,
                available_bytes: (152_340 + 1_388_760 + 41_288 + 64_219) * 4096,
                used_bytes: (1_621_329 - 64_219 + 598_121 + 397_412) * 4096,
                swap_total_bytes: 1024 * MIB,
                swap_used_bytes: 0,
                swap_cached_bytes: None,
            }
        );
        assert_eq!(memory_from(&vm, total, &swap).used_bytes, 10_455_625_728);
    }

    #[test]
    fn an_m1_in_swap_reports_the_swap_used() {
        let vm = parse_vm_stat(M1_VM_STAT).unwrap();
        let swap = parse_swapusage(M1_SWAP).unwrap();
        assert_eq!(
            swap,
            Swap {
                total: 2048 * MIB,
                used: 1_136_918_528, // 1084.25 MiB
                free: 1_010_565_120, // 963.75 MiB
                encrypted: true,
            }
        );
        let mem = memory_from(&vm, parse_memsize(M1_MEMSIZE).unwrap(), &swap);
        assert_eq!(
            mem,
            Memory {
                total_bytes: 8 * GIB,
                available_bytes: 2_512_879_616,
                used_bytes: 6_765_723_648,
                swap_total_bytes: 2_147_483_648,
                swap_used_bytes: 1_136_918_528,
                swap_cached_bytes: None,
            }
        );
    }

    #[test]
    fn used_and_available_never_exceed_the_total() {
        let vm = VmStat {
            page_size: 16_384,
            free: u64::MAX / 2,
            active: 0,
            inactive: u64::MAX,
            speculative: 7,
            wired: u64::MAX,
            purgeable: 10,
            file_backed: 0,
            anonymous: 3, // fewer than the purgeable ones
            compressor: 1,
        };
        assert_eq!(vm.app_bytes(), 0);
        let swap = Swap {
            total: 0,
            used: 0,
            free: 0,
            encrypted: false,
        };
        let mem = memory_from(&vm, GIB, &swap);
        assert_eq!((mem.used_bytes, mem.available_bytes), (GIB, GIB));
    }

    #[test]
    fn sysctl_figures_of_each_mac() {
        assert_eq!(parse_ncpu(M2_NCPU), Ok(12));
        assert_eq!(parse_ncpu(INTEL_NCPU), Ok(12));
        assert_eq!(parse_ncpu(M1_NCPU), Ok(8));
        assert_eq!(parse_ncpu("hw.ncpu: 10\n"), Ok(10));
        assert_eq!(parse_memsize("hw.memsize: 17179869184\n"), Ok(16 * GIB));
        assert_eq!(
            parse_loadavg(M2_LOADAVG),
            Ok(Load {
                one: 1.92,
                five: 2.10,
                fifteen: 2.27
            })
        );
        assert_eq!(
            parse_loadavg(INTEL_LOADAVG),
            Ok(Load {
                one: 3.41,
                five: 2.87,
                fifteen: 2.65
            })
        );
        assert_eq!(
            parse_loadavg("vm.loadavg: { 4,18 3,96 3,77 }"),
            parse_loadavg(M1_LOADAVG)
        );
        assert_eq!(parse_boottime(M2_BOOTTIME), Ok(1_733_580_000));
        assert_eq!(parse_boottime(INTEL_BOOTTIME), Ok(1_730_713_811));
        assert_eq!(
            parse_boottime("kern.boottime: { sec = 1735203337, usec = 90311 } Thu Dec 26"),
            parse_boottime(M1_BOOTTIME)
        );
        // An hour, a minute and a second after boot.
        assert_eq!(
            uptime_from_boottime(M2_BOOTTIME, 1_733_580_000 + 3661),
            Ok(3661)
        );
        let e = uptime_from_boottime(M2_BOOTTIME, 1_700_000_000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sysctl kern.boottime: boot time 1733580000 is later than now (1700000000)"
        );
    }

    #[test]
    fn swapusage_with_or_without_its_name() {
        let bare = "total = 2048.00M  used = 1084.25M  free = 963.75M  (encrypted)\n";
        assert_eq!(parse_swapusage(bare), parse_swapusage(M1_SWAP));
        let plain =
            parse_swapusage("vm.swapusage: total = 3.00G  used = 0.50G  free = 2.50G").unwrap();
        assert_eq!(
            plain,
            Swap {
                total: 3 * GIB,
                used: GIB / 2,
                free: 5 * GIB / 2,
                encrypted: false
            }
        );
        // A locale with a decimal comma.
        assert_eq!(
            parse_swapusage("total = 2048,00M  used = 1084,25M  free = 963,75M  (encrypted)"),
            parse_swapusage(M1_SWAP)
        );
    }

    #[test]
    fn system_profiler_json_of_each_mac() {
        assert_eq!(parse_displays_json(M2_JSON), Ok(vec![m2_pro()]));
        assert_eq!(parse_displays_json(INTEL_JSON), Ok(intel_gpus()));
        // `_name` is the untranslated "kHW_AppleM1Item": the model comes from sppci_model.
        assert_eq!(
            parse_displays_json(M1_JSON),
            Ok(vec![MacGpu {
                model: "Apple M1".to_owned(),
                cores: Some(7),
                metal: Some("Metal 3".to_owned()),
                memory: GpuMemory::Unified,
            }])
        );
    }

    #[test]
    fn system_profiler_text_reads_as_the_json_does() {
        assert_eq!(parse_displays_text(M2_TEXT), Ok(vec![m2_pro()]));
        assert_eq!(parse_displays_text(INTEL_TEXT), Ok(intel_gpus()));
    }

    #[test]
    fn apple_silicon_says_unified_and_invents_no_vram() {
        // Even were an Apple GPU's entry to list a VRAM figure, it shares system memory.
        let json = r#"{"SPDisplaysDataType":[{"sppci_model":"Apple M3 Max","spdisplays_vendor":"sppci_vendor_Apple","spdisplays_vram":"48 GB","sppci_cores":"40","spdisplays_mtlgpufamilysupport":"spdisplays_metal4"}]}"#;
        let gpus = parse_displays_json(json).unwrap();
        assert_eq!(gpus[0].memory, GpuMemory::Unified);
        assert_eq!(
            gpus[0].describe(),
            "Apple M3 Max (40-core GPU), Metal 4, unified memory"
        );
        let probe = gpus_of(&[m2_pro()]);
        assert_eq!(probe.devices.len(), 1);
        let d = &probe.devices[0];
        assert_eq!(
            d.name.as_deref(),
            Some("Apple M2 Pro (19-core GPU), Metal 3, unified memory")
        );
        assert_eq!(
            (d.vram_total_bytes, d.vram_used_bytes, d.vram_free_bytes),
            (None, None, None)
        );
        assert_eq!((d.index, d.error.as_deref()), (0, None));
    }

    #[test]
    fn an_intel_mac_reports_the_discrete_gpu_first_in_its_line() {
        let gpus = intel_gpus();
        assert_eq!(
            gpu_line(&gpus).as_deref(),
            Some("AMD Radeon Pro 5500M, Metal 3, 8 GiB VRAM; also Intel UHD Graphics 630")
        );
        assert_eq!(
            gpus[0].describe(),
            "Intel UHD Graphics 630, Metal 3, up to 1536 MiB shared"
        );
        let probe = gpus_of(&gpus);
        let vram: Vec<_> = probe.devices.iter().map(|d| d.vram_total_bytes).collect();
        assert_eq!(vram, [None, Some(8 * GIB)]);
        assert_eq!(
            gpu_line(&[m2_pro()]).as_deref(),
            Some("Apple M2 Pro (19-core GPU), Metal 3, unified memory")
        );
        assert_eq!(gpu_line(&[]), None);
    }

    #[test]
    fn metal_families_read_as_a_person_says_them() {
        assert_eq!(metal_name("spdisplays_metal3"), "Metal 3");
        assert_eq!(metal_name("spdisplays_metal4"), "Metal 4");
        assert_eq!(
            metal_name("spdisplays_mtlgpufamilymac2"),
            "Metal GPUFamily macOS 2"
        );
        assert_eq!(metal_name("Metal 3"), "Metal 3");
        assert_eq!(
            metal_name("Supported, Metal GPUFamily macOS 2"),
            "Metal GPUFamily macOS 2"
        );
        assert_eq!(metal_name("spdisplays_supported"), "Metal");
        // An older key, for a Mac still on macOS 11 or 12.
        let json = r#"{"SPDisplaysDataType":[{"sppci_model":"Radeon Pro 560X","spdisplays_metalfamily":"spdisplays_mtlgpufamilymac2","spdisplays_vram":"4 GB"}]}"#;
        let gpus = parse_displays_json(json).unwrap();
        assert_eq!(
            gpus[0].describe(),
            "Radeon Pro 560X, Metal GPUFamily macOS 2, 4 GiB VRAM"
        );
    }

    #[test]
    fn sw_vers_of_each_mac() {
        assert_eq!(
            parse_sw_vers(M2_SW_VERS).as_deref(),
            Ok("macOS 14.5 (23F79)")
        );
        assert_eq!(
            parse_sw_vers(INTEL_SW_VERS).as_deref(),
            Ok("macOS 13.6.7 (22G720)")
        );
        assert_eq!(
            parse_sw_vers(M1_SW_VERS).as_deref(),
            Ok("macOS 13.6.1 (22G313)")
        );
        let rapid = "ProductName:\t\tmacOS\nProductVersion:\t\t13.4.1\nProductVersionExtra:\t(a)\nBuildVersion:\t\t22F770820d\n";
        assert_eq!(
            parse_sw_vers(rapid).as_deref(),
            Ok("macOS 13.4.1 (a) (22F770820d)")
        );
        assert_eq!(
            parse_sw_vers("ProductName:\tMac OS X\nProductVersion:\t10.15.7\n").as_deref(),
            Ok("Mac OS X 10.15.7")
        );
    }

    #[test]
    fn malformed_vm_stat_is_an_error_naming_the_line() {
        let e = |t: &str| parse_vm_stat(t).unwrap_err().to_string();
        assert_eq!(e(""), "vm_stat: empty output");
        assert_eq!(e("\n\n"), "vm_stat: empty output");
        assert_eq!(
            e("Pages free: 12."),
            "vm_stat: line 1 `Pages free: 12.`: expected `Mach Virtual Memory Statistics: (page size of N bytes)`"
        );
        assert_eq!(
            e("Mach Virtual Memory Statistics: (page size of 0 bytes)"),
            "vm_stat: line 1 `Mach Virtual Memory Statistics: (page size of 0 bytes)`: `0` is not a page size"
        );
        let garbage = M2_VM_STAT.replace("812644.", "81x644.");
        assert_eq!(
            e(&garbage),
            "vm_stat: line 3 `Pages active:                                 81x644.`: `81x644` is not a page count"
        );
        let negative = M2_VM_STAT.replace("213554.", "-213554.");
        assert!(e(&negative).contains("`-213554` is not a page count"));
        let huge = M2_VM_STAT.replace("45231.", "99999999999999999999999.");
        assert!(e(&huge).starts_with("vm_stat: line 2 "), "{}", e(&huge));
        // Cut in the middle of the compressor count: the final `.` is missing.
        let cut = M2_VM_STAT.find("152830.").unwrap() + 3;
        assert_eq!(
            e(&M2_VM_STAT[..cut]),
            "vm_stat: line 17 `Pages occupied by compressor:                 152`: no final `.` after the count (output cut short?)"
        );
        let without = M2_VM_STAT.replace("Pages wired down:", "Pages wired:");
        assert_eq!(
            e(&without),
            "vm_stat: no `Pages wired down` line (output cut short?)"
        );
        // Garbage that is not even text the parser expects: long, non-ASCII, no panic.
        let long = format!(
            "Mach Virtual Memory Statistics: (page size of 16384 bytes)\nPages free: {}.\n",
            "é".repeat(500)
        );
        let msg = e(&long);
        assert!(msg.contains('…') && msg.chars().count() < 300, "{msg}");
    }

    /// Every prefix of every recording parses or fails; none panics. A `vm_stat` cut before the
    /// end of its last needed line always fails; the JSON cut anywhere always fails.
    #[test]
    fn truncated_recordings_fail_and_never_panic() {
        for text in [M2_VM_STAT, INTEL_VM_STAT, M1_VM_STAT] {
            let needed_end = text.find("Pages occupied by compressor").unwrap()
                + text[text.find("Pages occupied by compressor").unwrap()..]
                    .find('.')
                    .unwrap()
                + 1;
            let full = parse_vm_stat(text).unwrap();
            for cut in 0..text.len() {
                let r = parse_vm_stat(&text[..cut]);
                if cut < needed_end {
                    assert!(r.is_err(), "cut at {cut}: {r:?}");
                } else {
                    assert_eq!(r, Ok(full), "cut at {cut}");
                }
            }
        }
        for text in [M2_JSON, INTEL_JSON, M1_JSON] {
            for cut in (0..text.trim_end().len()).filter(|c| text.is_char_boundary(*c)) {
                assert!(parse_displays_json(&text[..cut]).is_err(), "cut at {cut}");
            }
        }
        for text in [M2_TEXT, INTEL_TEXT] {
            for cut in 0..text.len() {
                let _ = parse_displays_text(&text[..cut]);
            }
        }
        for text in [M2_SW_VERS, M2_SWAP, M1_SWAP, M2_LOADAVG, M2_BOOTTIME] {
            for cut in 0..text.len() {
                let s = &text[..cut];
                let _ = (
                    parse_sw_vers(s),
                    parse_swapusage(s),
                    parse_loadavg(s),
                    parse_boottime(s),
                );
            }
        }
    }

    #[test]
    fn malformed_sysctl_values_are_errors() {
        let e = |r: Result<u64, ParseError>| r.unwrap_err().to_string();
        assert_eq!(e(parse_memsize("")), "sysctl hw.memsize: empty output");
        assert_eq!(
            e(parse_memsize("34359738368x")),
            "sysctl hw.memsize: `34359738368x` is not a byte count"
        );
        assert_eq!(
            e(parse_memsize("0")),
            "sysctl hw.memsize: `0` is not a byte count"
        );
        assert_eq!(
            parse_ncpu("twelve").unwrap_err().to_string(),
            "sysctl hw.ncpu: `twelve` is not a CPU count"
        );
        let load = |t: &str| parse_loadavg(t).unwrap_err().to_string();
        assert_eq!(load(""), "sysctl vm.loadavg: empty output");
        assert_eq!(
            load("{ 1.92 2.10"),
            "sysctl vm.loadavg: `{ 1.92 2.10`: expected `{ 1m 5m 15m }`"
        );
        assert_eq!(
            load("{ 1.92 2.10 }"),
            "sysctl vm.loadavg: `{ 1.92 2.10 }`: expected three load averages"
        );
        assert_eq!(
            load("{ 1.92 NaN 2.27 }"),
            "sysctl vm.loadavg: `NaN` is not a load average"
        );
        assert_eq!(
            load("{ 1.92 -2 2.27 }"),
            "sysctl vm.loadavg: `-2` is not a load average"
        );
        assert_eq!(
            e(parse_boottime("{ sec = 17335x, usec = 1 }")),
            "sysctl kern.boottime: `17335x` is not a number of seconds"
        );
        assert_eq!(
            e(parse_boottime("{ usec = 123456 } Sat Dec  7")),
            "sysctl kern.boottime: `{ usec = 123456 } Sat Dec  7`: no `sec = N`"
        );
        assert_eq!(
            e(parse_boottime("{ sec = 1733580000, usec = 9999999 }")),
            "sysctl kern.boottime: `9999999` is not a number of microseconds"
        );
        assert_eq!(
            e(parse_boottime("{ sec = 1733580000")),
            "sysctl kern.boottime: `{ sec = 1733580000`: expected `{ sec = N, usec = N }`"
        );
    }

    #[test]
    fn malformed_swapusage_is_an_error() {
        let e = |t: &str| parse_swapusage(t).unwrap_err().to_string();
        assert_eq!(e(""), "sysctl vm.swapusage: empty output");
        assert_eq!(
            e("vm.swapusage: total = 2048.00M  used = 1084.25M  free ="),
            "sysctl vm.swapusage: `total = 2048.00M  used = 1084.25M  free =`: no size after `free =` (output cut short?)"
        );
        assert_eq!(
            e("vm.swapusage: total = 2048.00M  used = 1084.25M"),
            "sysctl vm.swapusage: `total = 2048.00M  used = 1084.25M`: no `free = SIZE` (output cut short?)"
        );
        assert_eq!(
            e("total = lotsM  used = 0.00M  free = 0.00M"),
            "sysctl vm.swapusage: `lotsM` is not a size like `1084.25M`"
        );
        assert_eq!(
            e("total = 2048.00Q  used = 0.00M  free = 0.00M"),
            "sysctl vm.swapusage: `2048.00Q` is not a size like `1084.25M`"
        );
        assert_eq!(
            e("total 2048.00M  used = 0.00M  free = 0.00M"),
            "sysctl vm.swapusage: `total 2048.00M  used = 0.00M  free = 0.00M`: `total` is not followed by `= SIZE`"
        );
        assert_eq!(
            e("total = 1024.00M  used = 2048.00M  free = 0.00M"),
            "sysctl vm.swapusage: `total = 1024.00M  used = 2048.00M  free = 0.00M`: more swap used than there is"
        );
        let huge = format!("total = {}M  used = 0.00M  free = 0.00M", "9".repeat(40));
        assert!(e(&huge).contains("is not a size"), "{}", e(&huge));
    }

    #[test]
    fn malformed_system_profiler_output_is_an_error() {
        let j = |t: &str| parse_displays_json(t).unwrap_err().to_string();
        assert_eq!(
            j(""),
            "system_profiler SPDisplaysDataType -json: not JSON: EOF while parsing a value at line 1 column 0"
        );
        assert!(j("garbage").starts_with("system_profiler SPDisplaysDataType -json: not JSON: "));
        assert_eq!(
            j(r#"{"SPHardwareDataType": []}"#),
            "system_profiler SPDisplaysDataType -json: no `SPDisplaysDataType` list"
        );
        assert_eq!(
            j(r#"{"SPDisplaysDataType": []}"#),
            "system_profiler SPDisplaysDataType -json: lists no GPU"
        );
        assert_eq!(
            j(r#"{"SPDisplaysDataType": [{"_name": "kHW_AppleM1Item"}]}"#),
            "system_profiler SPDisplaysDataType -json: entry 1 has no `sppci_model`"
        );
        assert_eq!(
            j(r#"{"SPDisplaysDataType": [{"sppci_model": "Apple M1", "sppci_cores": "eight"}]}"#),
            "system_profiler SPDisplaysDataType -json: entry 1: sppci_cores `eight` is not a core count"
        );
        assert_eq!(
            j(r#"{"SPDisplaysDataType": [{"sppci_model": "Radeon", "spdisplays_vram": "8 GQ"}]}"#),
            "system_profiler SPDisplaysDataType -json: entry 1: spdisplays_vram `8 GQ` is not a size like `8 GB`"
        );
        let t = |text: &str| parse_displays_text(text).unwrap_err().to_string();
        assert_eq!(
            t(""),
            "system_profiler SPDisplaysDataType: no `Chipset Model:` line: lists no GPU"
        );
        assert_eq!(
            t(&M2_TEXT.replace("Cores: 19", "Cores: 1x9")),
            "system_profiler SPDisplaysDataType: line 8 `Total Number of Cores: 1x9`: `1x9` is not a core count"
        );
        assert_eq!(
            t(&INTEL_TEXT.replace("VRAM (Total): 8 GB", "VRAM (Total): eight")),
            "system_profiler SPDisplaysDataType: line 22 `VRAM (Total): eight`: `eight` is not a size like `8 GB`"
        );
        assert_eq!(
            t("Graphics/Displays:\n\n    X:\n\n      Chipset Model:\n"),
            "system_profiler SPDisplaysDataType: line 5 `Chipset Model:`: no model after `Chipset Model:`"
        );
    }

    #[test]
    fn malformed_sw_vers_is_an_error() {
        let e = |t: &str| parse_sw_vers(t).unwrap_err().to_string();
        assert_eq!(e(""), "sw_vers: no `ProductName` line");
        assert_eq!(
            e("ProductName:\tmacOS\n"),
            "sw_vers: no `ProductVersion` line"
        );
        assert_eq!(
            e("ProductName:\tmacOS\nProductVersion:\t14.\n"),
            "sw_vers: line 2 `ProductVersion:\t14.`: `14.` is not a version"
        );
        assert_eq!(
            e("ProductName:\tmacOS\nProductVersion:\t14.5\nBuildVers"),
            "sw_vers: line 3 `BuildVers`: expected `Key: value`"
        );
    }

    #[test]
    fn sizes_are_binary_and_rounded_to_the_byte() {
        assert_eq!(parse_size("8 GB"), Some(8 * GIB));
        assert_eq!(parse_size("1536 MB"), Some(1536 * MIB));
        assert_eq!(parse_size("1084.25M"), Some(1_136_918_528));
        // 605.88 MiB is not a whole number of bytes: the nearest one.
        assert_eq!(parse_size("605.88M"), Some(635_311_227));
        assert_eq!(parse_size(".5K"), Some(512));
        for bad in [
            "",
            "M",
            ".M",
            "1.2.3M",
            "1e3M",
            "-1M",
            "12 parsecs",
            "1.0000000001M",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(size_text(8 * GIB), "8 GiB");
        assert_eq!(size_text(1536 * MIB), "1536 MiB");
        assert_eq!(size_text(1000), "1000 bytes");
    }

    #[cfg(unix)]
    #[test]
    fn commands_run_with_a_time_limit() {
        let limit = Duration::from_secs(5);
        assert_eq!(run("sh", &["-c", "printf 'a\\nb'"], limit).unwrap(), "a\nb");
        // The C locale, whatever this process runs in.
        assert_eq!(
            run("sh", &["-c", "printf %s \"$LC_ALL\""], limit).unwrap(),
            "C"
        );
        // More output than a pipe holds does not block the child.
        let big = run("sh", &["-c", "head -c 300000 /dev/zero"], limit).unwrap();
        assert_eq!(big.len(), 300_000);
        let failed = run("sh", &["-c", "exit 3"], limit).unwrap_err();
        assert!(matches!(failed, RunError::Failed(..)), "{failed}");
        assert!(failed.to_string().starts_with("sh -c exit 3: "), "{failed}");
        let missing = run("/nonexistent/vm_stat", &[], limit).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("/nonexistent/vm_stat: cannot start: "),
            "{missing}"
        );
        let started = Instant::now();
        let slow = run("sh", &["-c", "exec sleep 10"], Duration::from_millis(200)).unwrap_err();
        assert!(matches!(slow, RunError::TimedOut(..)), "{slow}");
        assert_eq!(
            slow.to_string(),
            "sh -c exec sleep 10: did not finish within 200ms"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
