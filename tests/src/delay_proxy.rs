//! A userspace UDP delay proxy: this kernel has no netem, so latency, jitter and (optionally)
//! loss on a link are made here instead.
//!
//! The proxy listens on one address and forwards everything it receives to one upstream
//! address. Each client (by source address) gets its own upstream socket, so the upstream sees
//! one stable peer per client and its replies find their way back to the right client. Every
//! datagram, in both directions, waits `delay ± jitter` on a timer thread before it is sent on,
//! and is dropped with probability `loss_percent`. Jitter reorders datagrams, as netem's does.
//!
//! Threads, not tokio: the proxy must keep forwarding while a test blocks on `wait_until`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a blocked receive waits before it looks at the stop flag: bounds how long dropping
/// a proxy takes.
const POLL: Duration = Duration::from_millis(50);

/// Larger than any UDP payload, so a datagram is never truncated on its way through.
const MAX_DATAGRAM: usize = 65_536;

/// What the proxy does to each datagram, in each direction.
#[derive(Debug, Clone, Copy)]
pub struct DelayConfig {
    /// Mean one-way delay.
    pub delay: Duration,
    /// Each datagram's delay is drawn uniformly from `delay - jitter ..= delay + jitter`.
    pub jitter: Duration,
    /// Share of datagrams dropped, 0–100.
    pub loss_percent: u32,
    /// Seeds the draws, so a run's delays and losses can be replayed.
    pub seed: u64,
}

impl DelayConfig {
    pub fn new(delay: Duration, jitter: Duration) -> DelayConfig {
        DelayConfig {
            delay,
            jitter,
            loss_percent: 0,
            seed: 7,
        }
    }

    pub fn with_loss(mut self, percent: u32) -> DelayConfig {
        self.loss_percent = percent.min(100);
        self
    }
}

/// Counts of what passed through, both directions together.
#[derive(Debug, Default)]
struct ProxyStats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// A running proxy; its threads stop and its sockets close on drop.
pub struct DelayProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    timer: Arc<Timer>,
    threads: Vec<JoinHandle<()>>,
}

impl DelayProxy {
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream`.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        cfg: DelayConfig,
    ) -> io::Result<DelayProxy> {
        let front = Arc::new(UdpSocket::bind(listen)?);
        front.set_read_timeout(Some(POLL))?;
        let addr = front.local_addr()?;
        let timer = Arc::new(Timer::new(cfg));
        let timer_thread = {
            let timer = timer.clone();
            std::thread::spawn(move || timer.run())
        };
        let front_thread = {
            let timer = timer.clone();
            std::thread::spawn(move || front_loop(&front, upstream, &timer))
        };
        Ok(DelayProxy {
            addr,
            upstream,
            timer,
            threads: vec![timer_thread, front_thread],
        })
    }

    /// Where clients send to reach the upstream through the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Datagrams sent on after their delay, both directions.
    pub fn forwarded(&self) -> u64 {
        self.timer.stats.forwarded.load(Ordering::Relaxed)
    }

    /// Datagrams dropped by the loss setting, both directions.
    pub fn dropped(&self) -> u64 {
        self.timer.stats.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.timer.stop.store(true, Ordering::Relaxed);
        self.timer.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads what clients send; opens one upstream socket (and its reply reader) per client.
fn front_loop(front: &Arc<UdpSocket>, upstream: SocketAddr, timer: &Arc<Timer>) {
    let mut sessions: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !timer.stop.load(Ordering::Relaxed) {
        let (n, client) = match front.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => {
                eprintln!("delay proxy: receive failed: {e}");
                // Never spin on an error that repeats.
                std::thread::sleep(POLL);
                continue;
            }
        };
        let session = match sessions.get(&client) {
            Some(s) => s.clone(),
            None => {
                let sock = match open_session(front) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("delay proxy: cannot open an upstream socket: {e}");
                        continue;
                    }
                };
                let (reader_sock, front, reader_timer) =
                    (sock.clone(), front.clone(), timer.clone());
                readers.push(std::thread::spawn(move || {
                    reply_loop(&reader_sock, &front, client, &reader_timer);
                }));
                sessions.insert(client, sock.clone());
                sock
            }
        };
        timer.schedule(session, upstream, buf[..n].to_vec());
    }
    for r in readers {
        let _ = r.join();
    }
}

/// An upstream socket on the proxy's own IP, so the upstream answers to an address it can reach.
fn open_session(front: &UdpSocket) -> io::Result<Arc<UdpSocket>> {
    let mut local = front.local_addr()?;
    local.set_port(0);
    let sock = UdpSocket::bind(local)?;
    sock.set_read_timeout(Some(POLL))?;
    Ok(Arc::new(sock))
}

/// Carries the upstream's answers back to `client`, through the front socket (the address the
/// client sent to, so the client sees its answers come from where it sent).
fn reply_loop(sock: &UdpSocket, front: &Arc<UdpSocket>, client: SocketAddr, timer: &Timer) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !timer.stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => timer.schedule(front.clone(), client, buf[..n].to_vec()),
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                eprintln!("delay proxy: receive from upstream failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

struct Pending {
    due: Instant,
    seq: u64,
    sock: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

struct TimerState {
    queue: BinaryHeap<Reverse<Pending>>,
    rng: SplitMix64,
    seq: u64,
}

/// Holds every datagram until its send time; one thread sends them in due order. Also the
/// proxy's shared state: the stop flag every thread watches, and the counts.
struct Timer {
    cfg: DelayConfig,
    state: Mutex<TimerState>,
    wake: Condvar,
    stop: AtomicBool,
    stats: ProxyStats,
}

impl Timer {
    fn new(cfg: DelayConfig) -> Timer {
        Timer {
            cfg,
            state: Mutex::new(TimerState {
                queue: BinaryHeap::new(),
                rng: SplitMix64(cfg.seed),
                seq: 0,
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            stats: ProxyStats::default(),
        }
    }

    fn schedule(&self, sock: Arc<UdpSocket>, to: SocketAddr, bytes: Vec<u8>) {
        let mut st = self.state.lock().unwrap();
        if self.cfg.loss_percent > 0 && st.rng.below(100) < u64::from(self.cfg.loss_percent) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let jitter = self.cfg.jitter.as_micros() as u64;
        let offset = if jitter == 0 {
            0
        } else {
            st.rng.below(2 * jitter + 1)
        };
        let delay = (self.cfg.delay + Duration::from_micros(offset))
            .saturating_sub(Duration::from_micros(jitter));
        st.seq += 1;
        let seq = st.seq;
        st.queue.push(Reverse(Pending {
            due: Instant::now() + delay,
            seq,
            sock,
            to,
            bytes,
        }));
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut st = self.state.lock().unwrap();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            match st.queue.peek() {
                Some(Reverse(p)) if p.due <= now => {
                    let Reverse(p) = st.queue.pop().unwrap();
                    // Send without the lock: the readers keep scheduling meanwhile.
                    drop(st);
                    // Counted before the send: counted after it, a reader woken by the
                    // datagram could look at the count before this thread got back to it.
                    self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    if p.sock.send_to(&p.bytes, p.to).is_err() {
                        self.stats.forwarded.fetch_sub(1, Ordering::Relaxed);
                    }
                    st = self.state.lock().unwrap();
                }
                Some(Reverse(p)) => {
                    let wait = p.due - now;
                    st = self.wake.wait_timeout(st, wait.min(POLL)).unwrap().0;
                }
                None => st = self.wake.wait_timeout(st, POLL).unwrap().0,
            }
        }
    }
}

/// A tiny seeded generator: enough for delays and losses, and replayable from the seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is negligible for the small n used here.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
