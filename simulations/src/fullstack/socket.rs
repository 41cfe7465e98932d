//! quinn's `AsyncUdpSocket` over a turmoil UDP socket, with per-link loss drawn from a seeded RNG.
//!
//! quinn reaches the simulated network through this adapter and
//! `mesh::QuicTransport::with_socket`, so everything above the socket is the agent's code.
//! Loss is applied here rather than with turmoil's `fail_rate` because turmoil's knob breaks a
//! whole link for a tick (dropping everything in flight on it), which is a flap, not the
//! independent per-datagram loss of a noisy Wi-Fi link that the invariants are stated for.

use labmesh::util::lock;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Per-direction loss rates between hosts, changed by the scenario while the simulation runs.
#[derive(Debug, Default, Clone)]
pub struct LossTable {
    rates: Arc<Mutex<HashMap<(IpAddr, IpAddr), f64>>>,
}

impl LossTable {
    /// Sets the probability that a datagram from `from` to `to` is lost (0 removes the entry).
    pub fn set(&self, from: IpAddr, to: IpAddr, rate: f64) {
        let mut rates = lock(&self.rates);
        if rate <= 0.0 {
            rates.remove(&(from, to));
        } else {
            rates.insert((from, to), rate.min(1.0));
        }
    }

    fn rate(&self, from: IpAddr, to: IpAddr) -> f64 {
        lock(&self.rates).get(&(from, to)).copied().unwrap_or(0.0)
    }
}

/// Datagrams and bytes one node put on the simulated wire, over all its incarnations.
#[derive(Debug, Default)]
pub struct WireCounters {
    pub bytes_sent: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub datagrams_lost: AtomicU64,
}

type Readable = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

pub struct SimUdpSocket {
    inner: Arc<turmoil::net::UdpSocket>,
    local: SocketAddr,
    /// The pending wait for a datagram; it holds turmoil's receive lock until it completes.
    readable: Mutex<Option<Readable>>,
    loss: LossTable,
    rng: Mutex<StdRng>,
    counters: Arc<WireCounters>,
}

impl fmt::Debug for SimUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUdpSocket")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl SimUdpSocket {
    /// Binds `addr`'s port on the current turmoil host, whose address `addr` must be (turmoil
    /// binds only the unspecified address). `seed` drives this socket's loss draws.
    pub async fn bind(
        addr: SocketAddr,
        loss: LossTable,
        seed: u64,
        counters: Arc<WireCounters>,
    ) -> io::Result<Arc<SimUdpSocket>> {
        let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port());
        let inner = turmoil::net::UdpSocket::bind(any).await?;
        let local = addr;
        Ok(Arc::new(SimUdpSocket {
            inner: Arc::new(inner),
            local,
            readable: Mutex::new(None),
            loss,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            counters,
        }))
    }
}

/// turmoil never pushes back on UDP senders, so the socket is always writable.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for SimUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let to = transmit.destination;
        let rate = self.loss.rate(self.local.ip(), to.ip());
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for datagram in transmit.contents.chunks(segment) {
            self.counters.datagrams_sent.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes_sent
                .fetch_add(datagram.len() as u64, Ordering::Relaxed);
            if rate > 0.0 && lock(&self.rng).random_bool(rate) {
                self.counters.datagrams_lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // A real UDP send to an unreachable host fails quietly too; an error here would
            // make quinn treat the endpoint as broken.
            if let Err(e) = self.inner.try_send_to(datagram, to) {
                tracing::trace!(%to, error = %e, "simulated datagram not sent");
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut filled = 0;
            for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
                match self.inner.try_recv_from(buf) {
                    Ok((len, from)) => {
                        *m = RecvMeta {
                            addr: from,
                            len,
                            stride: len,
                            ecn: None,
                            dst_ip: Some(self.local.ip()),
                        };
                        filled += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if filled > 0 {
                return Poll::Ready(Ok(filled));
            }
            let mut slot = lock(&self.readable);
            let wait = slot.get_or_insert_with(|| {
                let socket = self.inner.clone();
                Box::pin(async move { socket.readable().await })
            });
            match wait.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    *slot = None;
                    result?;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}
