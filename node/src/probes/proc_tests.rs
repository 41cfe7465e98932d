//! Fixture tests of the `/proc` parsers (kept beside `proc.rs` to keep both files short).

use super::*;

/// A 2-vCPU cloud VM under host contention (the steal column is the 8th).
const STAT_T0: &str = "\
cpu  202017 0 42240 148461 4200 0 1834 1253 0 0
cpu0 104030 0 18306 73715 2575 0 645 684 0 0
cpu1 97987 0 23933 74746 1624 0 1189 569 0 0
intr 12345 0 0
ctxt 987654
btime 1764473000
processes 32449
procs_running 2
procs_blocked 0
";

/// One second later (200 ticks on 2 CPUs at USER_HZ 100): 120 user, 20 system, 40 idle,
/// 4 iowait, 16 steal.
const STAT_T1: &str = "\
cpu  202137 0 42260 148501 4204 0 1834 1269 0 0
cpu0 104090 0 18316 73735 2577 0 645 692 0 0
cpu1 98047 0 23943 74766 1626 0 1189 577 0 0
";

#[test]
fn stat_parses_every_column_and_counts_cores() {
    let t = parse_stat(STAT_T0).unwrap();
    assert_eq!(t.user, 202_017);
    assert_eq!(t.idle, 148_461);
    assert_eq!(t.iowait, Some(4200));
    assert_eq!(t.steal, Some(1253));
    assert_eq!(t.cores, 2);
    assert_eq!(
        t.total(),
        202_017 + 42_240 + 148_461 + 4200 + 1834 + 1253,
        "guest columns are already inside user and must not be added"
    );
}

#[test]
fn steal_and_busy_from_two_samples() {
    let a = parse_stat(STAT_T0).unwrap();
    let b = parse_stat(STAT_T1).unwrap();
    let share = cpu_share(&a, &b).unwrap();
    assert!((share.steal_pct.unwrap() - 8.0).abs() < 1e-9, "{share:?}");
    assert!((share.iowait_pct.unwrap() - 2.0).abs() < 1e-9, "{share:?}");
    // busy = 200 - 40 idle - 4 iowait = 156 of 200.
    assert!((share.busy_pct - 78.0).abs() < 1e-9, "{share:?}");
}

#[test]
fn zero_delta_is_an_error_not_a_nan() {
    let a = parse_stat(STAT_T0).unwrap();
    assert_eq!(cpu_share(&a, &a), Err(CpuDeltaError::NoTimePassed));
}

#[test]
fn counters_going_backwards_is_an_error() {
    let a = parse_stat(STAT_T0).unwrap();
    let b = parse_stat(STAT_T1).unwrap();
    assert_eq!(cpu_share(&b, &a), Err(CpuDeltaError::WentBackwards));
}

#[test]
fn all_idle_is_zero_busy() {
    let a = parse_stat("cpu 10 0 10 100 0 0 0 0\n").unwrap();
    let b = parse_stat("cpu 10 0 10 300 0 0 0 0\n").unwrap();
    let share = cpu_share(&a, &b).unwrap();
    assert_eq!(share.busy_pct, 0.0);
    assert_eq!(share.steal_pct, Some(0.0));
}

#[test]
fn old_kernel_without_steal_column() {
    let a = parse_stat("cpu 100 0 50 1000 5 0 1\ncpu0 100 0 50 1000 5 0 1\n").unwrap();
    assert_eq!(a.steal, None);
    assert_eq!(a.softirq, Some(1));
    let b = parse_stat("cpu 200 0 50 1100 5 0 1\n").unwrap();
    let share = cpu_share(&a, &b).unwrap();
    assert_eq!(share.steal_pct, None);
    assert!((share.busy_pct - 50.0).abs() < 1e-9);
}

#[test]
fn stat_errors_are_precise() {
    let e = parse_stat("intr 1 2 3\n").unwrap_err();
    assert_eq!(e.to_string(), "/proc/stat: no aggregate `cpu` line");
    let e = parse_stat("cpu 1 2 3\n").unwrap_err();
    assert!(e.to_string().contains("has 3 columns; at least 4"), "{e}");
    let e = parse_stat("cpu 1 2 3 4 x\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/proc/stat: column 5 (iowait) of the `cpu` line is not a number: \"x\""
    );
    let e = parse_stat("cpu 1 2 -3 4\n").unwrap_err();
    assert!(e.to_string().contains("column 3 (system)"), "{e}");
    assert!(parse_stat("").is_err());
}

const MEMINFO: &str = "\
MemTotal:        8039584 kB
MemFree:          431232 kB
MemAvailable:    1258292 kB
Buffers:           60164 kB
Cached:          1071812 kB
SwapCached:       212480 kB
Active:          4990768 kB
SwapTotal:       4194300 kB
SwapFree:        2726396 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

#[test]
fn meminfo_in_bytes_with_swap_cached() {
    let m = parse_meminfo(MEMINFO).unwrap();
    assert_eq!(m.total, 8_039_584 * 1024);
    assert_eq!(m.available, 1_258_292 * 1024);
    assert!(!m.available_estimated);
    assert_eq!(m.swap_total - m.swap_free, (4_194_300 - 2_726_396) * 1024);
    assert_eq!(m.swap_cached, Some(212_480 * 1024));
}

#[test]
fn meminfo_without_mem_available_estimates_it() {
    let text = MEMINFO.replace("MemAvailable:    1258292 kB\n", "");
    let m = parse_meminfo(&text).unwrap();
    assert!(m.available_estimated);
    assert_eq!(m.available, (431_232 + 60_164 + 1_071_812) * 1024);
}

#[test]
fn meminfo_errors_are_precise() {
    let e = parse_meminfo(&MEMINFO.replace("MemTotal:        8039584 kB\n", "")).unwrap_err();
    assert_eq!(e.to_string(), "/proc/meminfo: no `MemTotal` line");
    let e = parse_meminfo(&MEMINFO.replace("SwapFree:        2726396 kB\n", "")).unwrap_err();
    assert_eq!(e.to_string(), "/proc/meminfo: no `SwapFree` line");
    let e = parse_meminfo("MemTotal: lots kB\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/proc/meminfo: `MemTotal` is not a number: \"lots kB\""
    );
    let e = parse_meminfo("MemTotal: 5 MB\n").unwrap_err();
    assert!(e.to_string().contains("unknown unit \"MB\""), "{e}");
    let e = parse_meminfo("MemTotal: 99999999999999999999 kB\n").unwrap_err();
    assert!(e.to_string().contains("not a number"), "{e}");
    let e = parse_meminfo("MemTotal: 18446744073709551615 kB\n").unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
}

#[test]
fn loadavg_and_uptime() {
    let l = parse_loadavg("3.83 2.10 1.76 8/157 32449\n").unwrap();
    assert_eq!((l.one, l.five, l.fifteen), (3.83, 2.10, 1.76));
    let e = parse_loadavg("0.5 0.4\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/proc/loadavg: no 15-minute average (column 3)"
    );
    assert!(parse_loadavg("a b c").is_err());
    assert_eq!(parse_uptime("2004.63 1484.61\n").unwrap(), 2004.63);
    assert_eq!(
        parse_uptime("").unwrap_err().to_string(),
        "/proc/uptime: empty"
    );
    assert!(parse_uptime("NaN 1").is_err());
}

const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 365492853 1377081    0    0    0     0          0         0 365492853 1377081    0    0    0     0       0          0
  eth0: 169655540    7822    3    1    0     0          0         0   498119    5729    0    2    0     0       0          0
";

#[test]
fn net_dev_counters_and_rates() {
    let c = parse_net_dev(NET_DEV).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].iface, "eth0");
    assert_eq!(c[1].rx_bytes, 169_655_540);
    assert_eq!((c[1].rx_errors, c[1].rx_dropped), (3, 1));
    assert_eq!((c[1].tx_bytes, c[1].tx_dropped), (498_119, 2));
    let mut later = c[1].clone();
    later.rx_bytes += 2000;
    later.tx_bytes += 500;
    assert_eq!(net_rate(&c, &later, 2.0), Some((1000.0, 250.0)));
    assert_eq!(net_rate(&c, &later, 0.0), None);
    later.rx_bytes = 0; // counters reset (driver reload)
    assert_eq!(net_rate(&c, &later, 2.0), None);
    // A line without a space after the colon (old kernels with huge counters).
    let squeezed = parse_net_dev("eth1:123 4 0 0 0 0 0 0 56 7 0 0 0 0 0 0\n").unwrap();
    assert_eq!(squeezed[0].rx_bytes, 123);
}

#[test]
fn net_dev_errors_are_precise() {
    let e = parse_net_dev("eth0: 1 2 3\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/proc/net/dev: line 1 (eth0): 3 counters; at least 12 expected"
    );
    let e = parse_net_dev("eth0: 1 2 x 4 5 6 7 8 9 10 11 12\n").unwrap_err();
    assert!(e.to_string().contains("not a number"), "{e}");
    assert_eq!(parse_net_dev("").unwrap(), vec![]);
}
