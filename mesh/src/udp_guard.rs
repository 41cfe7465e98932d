//! A UDP socket wrapper that counts datagrams which cannot be QUIC.
//!
//! quinn silently ignores undecodable datagrams, which is right for the protocol but leaves an
//! operator blind to someone spraying the gossip port. This wrapper sits between quinn and the
//! real socket (through `Endpoint::new_with_abstract_socket`, the same seam the turmoil simulation
//! uses) and counts datagrams whose first bytes break QUIC v1's invariants: the fixed bit clear
//! (our endpoints never grease it), a long header with a version other than 1 or 0 (version
//! negotiation), or fewer bytes than any packet we send. Datagrams are passed on unchanged: the
//! count is a signal, quinn stays the judge.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::stats::MeshStats;

/// Smallest datagram any QUIC v1 packet of ours can be (1 header byte, an 8-byte connection id,
/// packet number and an AEAD tag).
const MIN_PLAUSIBLE: usize = 21;

pub struct GuardedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    stats: Arc<MeshStats>,
}

impl GuardedSocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, stats: Arc<MeshStats>) -> Arc<Self> {
        Arc::new(GuardedSocket { inner, stats })
    }
}

impl fmt::Debug for GuardedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedSocket").finish_non_exhaustive()
    }
}

/// Why a datagram cannot be QUIC v1, if it cannot.
pub fn implausible(datagram: &[u8]) -> Option<&'static str> {
    let Some(&first) = datagram.first() else {
        return Some("empty datagram");
    };
    if datagram.len() < MIN_PLAUSIBLE {
        return Some("datagram too short for QUIC");
    }
    if first & 0x40 == 0 {
        return Some("QUIC fixed bit clear");
    }
    if first & 0x80 != 0 {
        let version = u32::from_be_bytes([datagram[1], datagram[2], datagram[3], datagram[4]]);
        if version != 1 && version != 0 {
            return Some("unknown QUIC version");
        }
    }
    None
}

impl AsyncUdpSocket for GuardedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let result = self.inner.try_send(transmit);
        if result.is_ok() {
            let len = transmit.contents.len();
            let datagrams = transmit.segment_size.map_or(1, |s| len.div_ceil(s.max(1)));
            self.stats
                .udp_bytes_sent
                .fetch_add(len as u64, Ordering::Relaxed);
            self.stats
                .udp_datagrams_sent
                .fetch_add(datagrams as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let result = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &result {
            for (buf, m) in bufs.iter().zip(meta.iter()).take(*n) {
                let data = &buf[..m.len.min(buf.len())];
                let stride = m.stride.max(1);
                self.stats
                    .udp_bytes_received
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                self.stats
                    .udp_datagrams_received
                    .fetch_add(data.len().div_ceil(stride) as u64, Ordering::Relaxed);
                for segment in data.chunks(stride) {
                    if let Some(reason) = implausible(segment) {
                        self.stats.garbage_datagram(m.addr, reason);
                    }
                }
            }
        }
        result
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::implausible;

    #[test]
    fn classifies_datagrams() {
        assert!(implausible(b"").is_some());
        assert!(implausible(b"hello").is_some());
        assert!(implausible(&[0x00; 64]).is_some());
        let mut long = vec![0xc0, 0, 0, 0, 1];
        long.resize(1200, 0);
        assert!(implausible(&long).is_none());
        long[4] = 2;
        assert_eq!(implausible(&long), Some("unknown QUIC version"));
        let mut short = vec![0x40];
        short.resize(40, 7);
        assert!(implausible(&short).is_none());
    }
}
