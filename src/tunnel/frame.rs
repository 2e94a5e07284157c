//! Mux frames: one binary WebSocket message is exactly one frame. Encode and decode with
//! limits, no I/O. The words here are the words of `docs/PROTOCOL.md`.
//!
//! ```text
//! frame = type:u8  stream_id:u32be  body
//! ```

use async_tungstenite::tungstenite::Bytes;
use std::fmt;

/// The address in front of a UDP_ANY flow's datagrams.
mod addressed;
/// Decoding: one frame from one message, every field checked.
mod decode;
/// The credentials a `:proxy` BIND carries.
mod proxy_auth;
/// The refusal codes of OPEN_REFUSED and RESET; [`crate::refusal`] owns them with their
/// one mapping to HTTP statuses and counters.
pub use crate::refusal::RefuseCode;
pub use addressed::{decode_addressed, encode_addressed};
pub use proxy_auth::{AuthTooLong, ProxyAuth};

/// Protocol version, sent in the handshake (`Burrow-Version`).
pub const VERSION: u32 = 1;
/// Largest DATA payload a sender may put in one frame.
pub const MAX_DATA: usize = 64 * 1024;
/// Bytes an opener may send on a new stream before OPEN_OK arrives (every receive window is at
/// least this large).
pub const EARLY_DATA: u32 = 16 * 1024;
/// Largest frame of any type (header + body); larger messages end the session.
pub const MAX_FRAME: usize = MAX_DATA + 64;
/// Longest host name or reason string in a frame.
pub const MAX_TEXT: usize = 255;
/// Header size: type + stream id.
pub const HEADER: usize = 5;
/// Largest UDP payload (over IPv4: 65,535 − 8 − 20): a datagram is carried whole up to this,
/// or dropped. A DGRAM of a UDP_ANY flow adds its address (at most 3 + 255 bytes) in front.
pub const MAX_DATAGRAM: usize = 65_507;

/// Frame type codes.
pub(crate) mod code {
    pub const OPEN: u8 = 0x01;
    pub const OPEN_OK: u8 = 0x02;
    pub const OPEN_REFUSED: u8 = 0x03;
    pub const DATA: u8 = 0x04;
    pub const WINDOW: u8 = 0x05;
    pub const FIN: u8 = 0x06;
    pub const RESET: u8 = 0x07;
    pub const ACK: u8 = 0x08;
    pub const RESUME: u8 = 0x09;
    pub const BIND: u8 = 0x10;
    pub const BOUND: u8 = 0x11;
    pub const BIND_REFUSED: u8 = 0x12;
    pub const GO_AWAY: u8 = 0x13;
    pub const UNBIND: u8 = 0x14;
    pub const DGRAM: u8 = 0x15;
}

/// What an OPEN asks the receiver to connect the new stream to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenTarget {
    /// Dial `host:port` from the receiver's network (`-L`, and the `:proxy` modes).
    Dial {
        /// host name or IP literal
        host: String,
        /// port
        port: u16,
    },
    /// A visitor arrived at the relay listener of this binding (`-R port:host:port`); the
    /// client dials the target it registered for it.
    Bound {
        /// the binding's id, chosen by the client in BIND
        bind_id: u32,
    },
    /// A UDP flow to `host:port` from the receiver's network (`-L udp:`): DGRAM frames, not
    /// bytes. Only to a peer with the `udp` capability.
    UdpDial {
        /// host name or IP literal
        host: String,
        /// port
        port: u16,
    },
    /// A UDP flow of a visitor (one source address) at the relay's UDP listener of this
    /// binding (`-R udp:`); the client sends its datagrams to the target it registered.
    UdpBound {
        /// the binding's id, chosen by the client in BIND
        bind_id: u32,
    },
    /// A UDP association (SOCKS5 UDP ASSOCIATE on a `:proxy` port): each DGRAM carries the
    /// address it goes to or came from; the receiver sends from its network under its rules.
    UdpAny,
}

impl OpenTarget {
    /// True for the UDP flows (DGRAM frames, no byte stream).
    pub fn is_udp(&self) -> bool {
        matches!(
            self,
            OpenTarget::UdpDial { .. } | OpenTarget::UdpBound { .. } | OpenTarget::UdpAny
        )
    }
}

/// What a relay listener does with its visitors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindMode {
    /// Each visitor becomes a stream to the client (OPEN Bound).
    Forward,
    /// The listener is an HTTP proxy whose egress is the client (OPEN Dial), optionally
    /// demanding `user:pass` from visitors.
    Proxy {
        /// the credentials visitors must present, if any
        auth: ProxyAuth,
    },
    /// A UDP listener: each visitor source address becomes a UDP flow to the client (OPEN
    /// UdpBound). Only to a relay with the `udp` capability.
    Udp,
}

/// The bit of a BIND's mode byte that says the pool fields follow.
const POOLED: u8 = 0x80;

/// The pool a BIND joins: clients presenting the same token and pool name share the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindPool {
    /// the pool's name (`--pool`)
    pub name: String,
    /// a digest of what the member lets visitors of a `:proxy` binding reach (its
    /// `--allow`/`--deny`); every member of a `:proxy` pool must send the same one. Empty
    /// for a forward.
    pub policy: String,
}

/// One mux frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Open stream `id` with an initial receive window.
    Open {
        /// new stream id (client odd, relay even)
        id: u32,
        /// bytes the opener will accept before granting more
        window: u32,
        /// what to connect it to
        target: OpenTarget,
    },
    /// The stream is connected; `window` is the receiver's initial window.
    OpenOk {
        /// stream id
        id: u32,
        /// initial receive window of the accepting side
        window: u32,
    },
    /// The stream could not be connected.
    OpenRefused {
        /// stream id
        id: u32,
        /// why
        code: RefuseCode,
        /// human-readable reason
        reason: String,
    },
    /// Stream payload; never more than the receiver's remaining window.
    Data {
        /// stream id
        id: u32,
        /// 1..=MAX_DATA bytes
        payload: Bytes,
    },
    /// The receiver consumed `increment` more bytes: the sender may send that much more.
    Window {
        /// stream id
        id: u32,
        /// credit granted
        increment: u32,
    },
    /// The sender will send no more on this stream (half-close).
    Fin {
        /// stream id
        id: u32,
    },
    /// The stream is gone in both directions.
    Reset {
        /// stream id
        id: u32,
        /// why
        code: RefuseCode,
        /// human-readable reason
        reason: String,
    },
    /// Client → relay: listen on `addr:port` for this binding.
    Bind {
        /// binding id chosen by the client
        bind_id: u32,
        /// bind address on the relay (empty = the relay's default)
        addr: String,
        /// port (0 = any free port)
        port: u16,
        /// what to do with visitors
        mode: BindMode,
        /// the pool this binding joins (only to a relay with the `pool` capability): clients
        /// of one token and pool share the port. Boxed: every frame queue slot is the size of
        /// the largest frame, and most BINDs join no pool.
        pool: Option<Box<BindPool>>,
    },
    /// Relay → client: the binding listens on `addr`.
    Bound {
        /// binding id
        bind_id: u32,
        /// the public `ip:port`
        addr: String,
    },
    /// Relay → client: the binding was refused.
    BindRefused {
        /// binding id
        bind_id: u32,
        /// why
        reason: String,
    },
    /// The sender is shutting down: open no new streams; existing ones may finish.
    GoAway {
        /// why
        reason: String,
    },
    /// Client → relay: close the listener of this binding (its open streams drain). Sent
    /// only to a relay that announced the `unbind` capability in the handshake.
    Unbind {
        /// binding id, as in its BIND
        bind_id: u32,
    },
    /// One datagram of a UDP flow, whole. Not numbered (never replayed: a datagram lost with
    /// its connection is lost, as UDP may lose it) and not flow controlled (a full queue
    /// drops it). Only to a peer with the `udp` capability.
    Dgram {
        /// the flow's stream id
        id: u32,
        /// the datagram (a UDP_ANY flow: `port:u16 host:text` in front)
        payload: Bytes,
    },
    /// Resumable sessions: the sender has received `received` numbered frames of this
    /// session (every frame but ACK, RESUME and DGRAM is numbered); the peer may forget them.
    Ack {
        /// numbered frames received so far
        received: u64,
    },
    /// Resumable sessions, the first frame on a new connection: the sender has received
    /// `received` numbered frames; the peer sends the rest again, then goes on.
    Resume {
        /// numbered frames received so far
        received: u64,
    },
}

/// A frame that cannot be decoded; the session ends with a protocol error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than its type requires.
    Truncated,
    /// Longer than [`MAX_FRAME`] or with bytes after its body.
    TooLong,
    /// Unknown type byte.
    UnknownType(u8),
    /// A field out of range (empty DATA, bad UTF-8, zero window, ...).
    Invalid(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("truncated frame"),
            FrameError::TooLong => f.write_str("frame too long"),
            FrameError::UnknownType(t) => write!(f, "unknown frame type 0x{t:02x}"),
            FrameError::Invalid(why) => write!(f, "invalid frame: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

fn put_text(out: &mut Vec<u8>, s: &str) {
    // Truncate on a char boundary: texts are reasons and names, at most MAX_TEXT bytes.
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

impl Frame {
    /// The stream id (0 for session frames).
    pub fn stream_id(&self) -> u32 {
        match self {
            Frame::Open { id, .. }
            | Frame::OpenOk { id, .. }
            | Frame::OpenRefused { id, .. }
            | Frame::Data { id, .. }
            | Frame::Window { id, .. }
            | Frame::Fin { id }
            | Frame::Dgram { id, .. }
            | Frame::Reset { id, .. } => *id,
            _ => 0,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let header = |out: &mut Vec<u8>, t: u8, id: u32| {
            out.push(t);
            out.extend_from_slice(&id.to_be_bytes());
        };
        match self {
            Frame::Open { id, window, target } => {
                header(out, code::OPEN, *id);
                out.extend_from_slice(&window.to_be_bytes());
                match target {
                    OpenTarget::Dial { host, port } => {
                        out.push(0);
                        out.extend_from_slice(&port.to_be_bytes());
                        put_text(out, host);
                    }
                    OpenTarget::Bound { bind_id } => {
                        out.push(1);
                        out.extend_from_slice(&bind_id.to_be_bytes());
                    }
                    OpenTarget::UdpDial { host, port } => {
                        out.push(2);
                        out.extend_from_slice(&port.to_be_bytes());
                        put_text(out, host);
                    }
                    OpenTarget::UdpBound { bind_id } => {
                        out.push(3);
                        out.extend_from_slice(&bind_id.to_be_bytes());
                    }
                    OpenTarget::UdpAny => out.push(4),
                }
            }
            Frame::OpenOk { id, window } => {
                header(out, code::OPEN_OK, *id);
                out.extend_from_slice(&window.to_be_bytes());
            }
            Frame::OpenRefused {
                id,
                code: c,
                reason,
            } => {
                header(out, code::OPEN_REFUSED, *id);
                out.push(*c as u8);
                put_text(out, reason);
            }
            Frame::Data { id, payload } => {
                header(out, code::DATA, *id);
                out.extend_from_slice(payload);
            }
            Frame::Dgram { id, payload } => {
                header(out, code::DGRAM, *id);
                out.extend_from_slice(payload);
            }
            Frame::Window { id, increment } => {
                header(out, code::WINDOW, *id);
                out.extend_from_slice(&increment.to_be_bytes());
            }
            Frame::Fin { id } => header(out, code::FIN, *id),
            Frame::Reset {
                id,
                code: c,
                reason,
            } => {
                header(out, code::RESET, *id);
                out.push(*c as u8);
                put_text(out, reason);
            }
            Frame::Bind {
                bind_id,
                addr,
                port,
                mode,
                pool,
            } => {
                header(out, code::BIND, 0);
                out.extend_from_slice(&bind_id.to_be_bytes());
                out.extend_from_slice(&port.to_be_bytes());
                put_text(out, addr);
                // The high bit of the mode says the pool fields follow.
                let pooled = if pool.is_some() { POOLED } else { 0 };
                match mode {
                    BindMode::Forward => out.push(pooled),
                    BindMode::Proxy { auth } => {
                        out.push(1 | pooled);
                        put_text(out, auth.wire_text());
                    }
                    BindMode::Udp => out.push(2 | pooled),
                }
                if let Some(pool) = pool {
                    put_text(out, &pool.name);
                    put_text(out, &pool.policy);
                }
            }
            Frame::Bound { bind_id, addr } => {
                header(out, code::BOUND, 0);
                out.extend_from_slice(&bind_id.to_be_bytes());
                put_text(out, addr);
            }
            Frame::BindRefused { bind_id, reason } => {
                header(out, code::BIND_REFUSED, 0);
                out.extend_from_slice(&bind_id.to_be_bytes());
                put_text(out, reason);
            }
            Frame::GoAway { reason } => {
                header(out, code::GO_AWAY, 0);
                put_text(out, reason);
            }
            Frame::Unbind { bind_id } => {
                header(out, code::UNBIND, 0);
                out.extend_from_slice(&bind_id.to_be_bytes());
            }
            Frame::Ack { received } => {
                header(out, code::ACK, 0);
                out.extend_from_slice(&received.to_be_bytes());
            }
            Frame::Resume { received } => {
                header(out, code::RESUME, 0);
                out.extend_from_slice(&received.to_be_bytes());
            }
        }
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 16);
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
