//! Network faults between the [`Hosts`] of a multi-host test, made with nft inside each host's
//! namespace (this kernel has no netem): random loss per host or per link, one-way and two-way
//! cuts, and delay with jitter on a link through a userspace [`DelayProxy`].
//!
//! Every fault is a guard: dropping it removes its rules, so a failing assertion never leaves
//! a cut or a lossy link behind; dropping [`NetFaults`] removes its table from every host.
//!
//! How a delayed link is routed: in host A, nft DNATs what A sends to B's gossip port to a proxy
//! listening on the bridge address in the test's own namespace; the proxy forwards to B from an
//! address of its own, and B's answers come back the same way (conntrack turns the proxy's
//! address back into B's, so A's QUIC connection sees B where it dialled it). B's own dials to
//! A go through a second proxy the same way. Nothing in the agents changes: the advertised
//! gossip addresses stay the hosts' own, so chitchat's view of who is where is the real one.
//!
//! NAT only applies to new conntrack flows, and the agents' flows never go idle. So each delay
//! moves its flows into a conntrack zone of its own (`ct zone set`), where they are new and get
//! NATted at once; removing the delay moves them back to zone 0, where they were never NATted.
//! A delay can therefore be added and removed at any time, as often as a test likes. (Removing
//! one under running agents changes the address the far side sees its peer at, from the proxy's
//! back to the host's: QUIC's migration absorbs that.)
//!
//! Traffic through a proxy comes from the bridge address, which [`Hosts::partition`]'s blackhole
//! routes do not cover: delay links within one side of a partition, or cut the hosts' links.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};

use crate::delay_proxy::{DelayConfig, DelayProxy};
use crate::netns::Hosts;

/// The gossip port every agent in [`Hosts`] binds (see `Hosts::agent_with_config`).
pub const GOSSIP_PORT: u16 = 7370;

const TABLE: &str = "lmchaos";

/// The chaos table of each host: empty chains, in the hooks and at the priorities the faults
/// need (`raw` runs before conntrack, so a zone set there decides which flow a packet is).
const SETUP: &str = "table inet lmchaos {
  chain raw_out { type filter hook output priority raw; policy accept; }
  chain raw_pre { type filter hook prerouting priority raw; policy accept; }
  chain nat_out { type nat hook output priority -100; policy accept; }
  chain filter_out { type filter hook output priority filter; policy accept; }
  chain filter_in { type filter hook input priority filter; policy accept; }
}
";

/// Runs one nft command in a host's namespace; returns the handle nft echoes for a new rule.
fn nft(ns: &str, command: &str) -> Result<Option<u64>, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-e", "-a", command])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft {command:?} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| {
            l.rsplit_once("# handle ")
                .map(|(_, h)| h.trim().parse().ok())
        })
        .flatten())
}

/// The nft rules of one fault; removed on drop.
#[must_use = "the fault is removed as soon as its guard is dropped"]
pub struct Fault {
    rules: Vec<(String, &'static str, u64)>,
}

impl Fault {
    fn empty() -> Fault {
        Fault { rules: Vec::new() }
    }

    /// Adds (`insert` true: at the head of the chain) one rule in `ns`, remembered for removal.
    fn rule(&mut self, ns: &str, chain: &'static str, rule: &str, insert: bool) {
        let verb = if insert { "insert" } else { "add" };
        let handle = nft(ns, &format!("{verb} rule inet {TABLE} {chain} {rule}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("nft printed no handle for {rule:?} in {ns}"));
        self.rules.push((ns.to_owned(), chain, handle));
    }

    /// Packets this fault's rules have dropped so far: proof that a fault bit, and how hard.
    pub fn dropped_packets(&self) -> u64 {
        self.counted()
    }

    /// The sum of the rules' nft counters (0 for a rule without one).
    fn counted(&self) -> u64 {
        self.rules
            .iter()
            .map(|(ns, chain, handle)| {
                let out = Command::new("ip")
                    .args([
                        "netns", "exec", ns, "nft", "-a", "list", "chain", "inet", TABLE, chain,
                    ])
                    .output()
                    .expect("run nft");
                let suffix = format!("# handle {handle}");
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .find(|l| l.trim_end().ends_with(&suffix))
                    .and_then(|l| l.split("counter packets ").nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Removes the rules now (also what drop does).
    pub fn remove(mut self) {
        self.clear();
    }

    fn clear(&mut self) {
        for (ns, chain, handle) in self.rules.drain(..).rev() {
            if let Err(e) = nft(
                ns.as_str(),
                &format!("delete rule inet {TABLE} {chain} handle {handle}"),
            ) {
                eprintln!("cannot remove a fault: {e}");
            }
        }
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A delayed link: the DNAT rules and the two proxies (one per direction of dialling).
#[must_use = "the delay is removed as soon as its guard is dropped"]
pub struct DelayedLink {
    // Declared first so it drops first: traffic goes straight to the peer again before the
    // proxies stop, and never into a closed port.
    rules: Fault,
    /// Counters on what still goes straight to the peer (see [`DelayedLink::bypassed`]).
    escapes: Fault,
    /// Carries what the first host dials (to the second host's gossip port).
    pub forward: DelayProxy,
    /// Carries what the second host dials.
    pub backward: DelayProxy,
}

impl DelayedLink {
    /// Datagrams that went straight between the two hosts' gossip ports since the delay was
    /// set up, past the proxies: 0 when the delay holds for every packet.
    pub fn bypassed(&self) -> u64 {
        self.escapes.counted()
    }

    /// Datagrams both proxies forwarded, both directions.
    pub fn forwarded(&self) -> u64 {
        self.forward.forwarded() + self.backward.forwarded()
    }

    pub fn remove(self) {
        let DelayedLink {
            rules,
            escapes,
            forward,
            backward,
        } = self;
        rules.remove();
        escapes.remove();
        drop((forward, backward));
    }
}

/// The chaos tables of a test's hosts; drop before the hosts (declare it after them).
pub struct NetFaults {
    names: Vec<String>,
    ips: Vec<String>,
    bridge_ip: String,
    /// The conntrack zone the next delay's flows go to (see the module doc).
    next_zone: AtomicU16,
}

impl NetFaults {
    pub fn new(hosts: &Hosts) -> NetFaults {
        let faults = NetFaults {
            names: hosts.names.clone(),
            ips: (0..hosts.names.len()).map(|i| hosts.ip(i)).collect(),
            bridge_ip: format!("{}.254", hosts.subnet),
            next_zone: AtomicU16::new(1),
        };
        for ns in &faults.names {
            let mut child = Command::new("ip")
                .args(["netns", "exec", ns, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run nft");
            {
                use std::io::Write;
                let mut stdin = child.stdin.take().unwrap();
                stdin.write_all(SETUP.as_bytes()).unwrap();
            }
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "nft setup in {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        faults
    }

    /// Host `host` drops `percent` % of the UDP it sends (every peer, both QUIC directions of
    /// its own traffic). TCP (the tests' HTTP calls) is left alone.
    pub fn loss(&self, host: usize, percent: u32) -> Fault {
        let mut f = Fault::empty();
        f.rule(
            &self.names[host],
            "filter_out",
            &random_drop("", percent),
            false,
        );
        f
    }

    /// Every host in `hosts` drops `percent` % of the UDP it sends.
    pub fn loss_on(&self, hosts: &[usize], percent: u32) -> Fault {
        let mut f = Fault::empty();
        for &h in hosts {
            f.rule(
                &self.names[h],
                "filter_out",
                &random_drop("", percent),
                false,
            );
        }
        f
    }

    /// `percent` % loss each way on the link between `a` and `b` only.
    pub fn link_loss(&self, a: usize, b: usize, percent: u32) -> Fault {
        let mut f = Fault::empty();
        for (from, to) in [(a, b), (b, a)] {
            let m = format!("ip daddr {} ", self.ips[to]);
            f.rule(
                &self.names[from],
                "filter_out",
                &random_drop(&m, percent),
                false,
            );
        }
        f
    }

    /// `from` can no longer send to `to`; `to` still reaches `from` (an asymmetric link).
    pub fn one_way_cut(&self, from: usize, to: usize) -> Fault {
        let mut f = Fault::empty();
        let ip = &self.ips[to];
        f.rule(
            &self.names[from],
            "filter_out",
            &format!("ip daddr {ip} counter drop"),
            true,
        );
        f
    }

    /// Nothing passes between `a` and `b`, either way; their other links are untouched.
    pub fn link_cut(&self, a: usize, b: usize) -> Fault {
        let mut f = Fault::empty();
        for (from, to) in [(a, b), (b, a)] {
            let ip = &self.ips[to];
            f.rule(
                &self.names[from],
                "filter_out",
                &format!("ip daddr {ip} counter drop"),
                true,
            );
            f.rule(
                &self.names[from],
                "filter_in",
                &format!("ip saddr {ip} counter drop"),
                true,
            );
        }
        f
    }

    /// Every datagram between `a` and `b`'s gossip ports takes `cfg`'s delay (and jitter and
    /// loss) each way, through two proxies on the bridge address.
    pub fn delay_link(&self, a: usize, b: usize, cfg: DelayConfig) -> DelayedLink {
        let listen: SocketAddr = format!("{}:0", self.bridge_ip).parse().unwrap();
        let upstream =
            |h: usize| -> SocketAddr { format!("{}:{GOSSIP_PORT}", self.ips[h]).parse().unwrap() };
        let forward = DelayProxy::start(listen, upstream(b), cfg).expect("start delay proxy");
        let backward = DelayProxy::start(
            listen,
            upstream(a),
            DelayConfig {
                seed: cfg.seed.wrapping_add(1),
                ..cfg
            },
        )
        .expect("start delay proxy");
        // A zone per delay: its flows are new there, so they are NATted even though the same
        // 5-tuples have been live (and un-NATted) in zone 0 all along.
        let zone = self.next_zone.fetch_add(1, Ordering::Relaxed);
        let mut rules = Fault::empty();
        for (from, to, proxy) in [(a, b, &forward), (b, a, &backward)] {
            let ns = &self.names[from];
            let peer = &self.ips[to];
            let via = proxy.addr();
            let to_peer = format!("ip daddr {peer} udp dport {GOSSIP_PORT}");
            // Zone rule last: a packet that entered the zone before the NAT rule existed would
            // make a flow there that is never NATted. Removal runs backwards, zone rule first.
            rules.rule(
                ns,
                "nat_out",
                &format!("{to_peer} ct zone {zone} dnat ip to {via}"),
                false,
            );
            // The proxy's answers must meet their flow in its zone to be un-NATted.
            rules.rule(
                ns,
                "raw_pre",
                &format!(
                    "ip saddr {} udp sport {} ct zone set {zone}",
                    via.ip(),
                    via.port()
                ),
                true,
            );
            rules.rule(
                ns,
                "raw_out",
                &format!("{to_peer} ct zone set {zone}"),
                true,
            );
        }
        // After NAT (priority -100) a delayed packet is addressed to the proxy: whatever still
        // matches the peer's gossip port here escaped the delay.
        let mut escapes = Fault::empty();
        for (from, to) in [(a, b), (b, a)] {
            let peer = &self.ips[to];
            escapes.rule(
                &self.names[from],
                "filter_out",
                &format!("ip daddr {peer} udp dport {GOSSIP_PORT} counter"),
                true,
            );
        }
        DelayedLink {
            rules,
            escapes,
            forward,
            backward,
        }
    }
}

impl Drop for NetFaults {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = nft(ns, &format!("delete table inet {TABLE}"));
        }
    }
}

fn random_drop(matcher: &str, percent: u32) -> String {
    format!(
        "{matcher}meta l4proto udp numgen random mod 100 < {} counter drop",
        percent.min(100)
    )
}

/// Runs `f` on a thread inside host namespace `ns` (sockets it opens live there); returns what
/// `f` returns. For probes that must send from a host, e.g. checking that a fault applies.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Starts a UDP echo server at `addr` inside host namespace `ns`; it answers until the returned
/// guard drops.
pub fn udp_echo(ns: &str, addr: SocketAddr) -> EchoServer {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let path = format!("/run/netns/{ns}");
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let sock = std::net::UdpSocket::bind(addr).unwrap();
            sock.set_read_timeout(Some(std::time::Duration::from_millis(50)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        })
    };
    ready_rx.recv().expect("echo server started");
    EchoServer {
        stop,
        thread: Some(thread),
    }
}

pub struct EchoServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
