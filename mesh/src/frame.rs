//! The envelope of every message on a labmesh QUIC stream.
//!
//! ```text
//! "LM" | version u8 (1) | kind u8 | sender's advertised gossip address | payload
//!        address: family u8 (4 or 6) | IP (4 or 16 bytes) | port u16 big-endian
//! ```
//!
//! The sender's advertised address travels in the frame because chitchat keys peers by that
//! address and replies to whatever address `recv` returned: the QUIC source address can differ
//! (a node bound to 0.0.0.0, a NAT). Which node sent the frame is NOT taken from here: it comes
//! from the peer's certificate (see `transport`). Versioned so that a future format is refused
//! with a clear error instead of being misread.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Decodes a gossip frame's payload into a chitchat message. chitchat's decoder may panic on
/// some inputs; that is caught here and reported as an error like any other bad message.
pub fn decode_gossip(payload: &[u8]) -> Result<chitchat::ChitchatMessage, String> {
    use chitchat::Deserializable;
    match std::panic::catch_unwind(|| chitchat::ChitchatMessage::deserialize(&mut &payload[..])) {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the gossip decoder failed on this message".into()),
    }
}

pub const MAGIC: [u8; 2] = *b"LM";
pub const VERSION: u8 = 1;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A chitchat message (membership and failure detection).
    Gossip = 1,
    /// An application message for a higher layer (event sync); opaque to this crate.
    App = 2,
}

impl Kind {
    fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Gossip),
            2 => Some(Kind::App),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame too short ({0} bytes)")]
    TooShort(usize),
    #[error("not a labmesh frame (bad magic)")]
    BadMagic,
    #[error(
        "frame version {0} is not supported (this node speaks version {VERSION}); upgrade labmesh on the older node"
    )]
    UnsupportedVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("bad sender address in frame")]
    BadAddress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: Kind,
    pub sender: SocketAddr,
    pub payload: &'a [u8],
}

/// Encodes a frame into a new buffer.
pub fn encode(kind: Kind, sender: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    match sender.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&sender.port().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes a frame; never panics on any input.
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < 5 {
        return Err(FrameError::TooShort(bytes.len()));
    }
    if bytes[..2] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if bytes[2] != VERSION {
        return Err(FrameError::UnsupportedVersion(bytes[2]));
    }
    let kind = Kind::from_code(bytes[3]).ok_or(FrameError::UnknownKind(bytes[3]))?;
    let rest = &bytes[4..];
    let (ip, rest): (IpAddr, &[u8]) = match rest.split_first() {
        Some((4, r)) if r.len() >= 6 => {
            let octets: [u8; 4] = r[..4].try_into().map_err(|_| FrameError::BadAddress)?;
            (Ipv4Addr::from(octets).into(), &r[4..])
        }
        Some((6, r)) if r.len() >= 18 => {
            let octets: [u8; 16] = r[..16].try_into().map_err(|_| FrameError::BadAddress)?;
            (Ipv6Addr::from(octets).into(), &r[16..])
        }
        _ => return Err(FrameError::BadAddress),
    };
    let port = u16::from_be_bytes([rest[0], rest[1]]);
    if port == 0 || ip.is_unspecified() {
        return Err(FrameError::BadAddress);
    }
    Ok(Frame {
        kind,
        sender: SocketAddr::new(ip, port),
        payload: &rest[2..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_v4_and_v6() {
        for addr in ["127.0.0.1:7370", "[::1]:7370"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let bytes = encode(Kind::Gossip, addr, b"hello");
            let f = decode(&bytes).unwrap();
            assert_eq!(f.sender, addr);
            assert_eq!(f.payload, b"hello");
            assert_eq!(f.kind, Kind::Gossip);
        }
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        let addr: SocketAddr = "127.0.0.1:7370".parse().unwrap();
        let good = encode(Kind::Gossip, addr, b"x");
        assert_eq!(decode(b"LM\x02\x01"), Err(FrameError::TooShort(4)));
        let mut v2 = good.clone();
        v2[2] = 2;
        assert_eq!(decode(&v2), Err(FrameError::UnsupportedVersion(2)));
        let mut k = good.clone();
        k[3] = 9;
        assert_eq!(decode(&k), Err(FrameError::UnknownKind(9)));
        assert_eq!(decode(b"XX\x01\x01\x04"), Err(FrameError::BadMagic));
        // Every prefix and a spread of corruptions decode to a value or an error.
        for n in 0..good.len() {
            let _ = decode(&good[..n]);
        }
        for seed in 0u32..2000 {
            let mut b = good.clone();
            let i = (seed as usize * 7) % b.len();
            b[i] = b[i].wrapping_add(seed as u8);
            let _ = decode(&b);
        }
    }
}
