//! How opening a stream fails, and how a session ends.

use crate::refusal::{Refusal, RefuseCode};
use std::fmt;

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The peer refused it.
    Refused {
        /// why, as the peer's OPEN_REFUSED carried it
        code: RefuseCode,
        /// the peer's reason
        reason: String,
    },
    /// This side already has `max_streams` open.
    TooManyStreams,
    /// The session is closed or going away.
    Closed(String),
    /// What was asked cannot be sent to this peer (a UDP flow to a peer without the `udp`
    /// capability).
    Unsupported(&'static str),
}

impl OpenError {
    /// Why, to report onwards: the peer's refusal as it sent it, or ours.
    pub fn refusal(&self) -> Refusal {
        match self {
            OpenError::Refused { code, .. } => Refusal::from(*code),
            OpenError::TooManyStreams => Refusal::TooManyStreams,
            OpenError::Closed(_) => Refusal::GoingAway,
            OpenError::Unsupported(_) => Refusal::BadRequest,
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Refused { reason, .. } => write!(f, "refused by peer: {reason}"),
            OpenError::TooManyStreams => f.write_str("too many streams on this session"),
            OpenError::Closed(why) => write!(f, "session closed: {why}"),
            OpenError::Unsupported(why) => write!(f, "not supported: {why}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// We closed it (shutdown, or the role is done).
    Local(String),
    /// The peer closed the WebSocket.
    PeerClosed,
    /// No frame for 3 keepalive intervals.
    PeerDead,
    /// The peer broke the protocol; we closed with this WebSocket close code
    /// (1002 protocol error, 1003 unsupported data, 1009 message too big).
    Protocol(u16, String),
    /// The transport failed.
    Transport(String),
}

impl CloseReason {
    /// True when only the connection failed (reset, closed without a WebSocket close, or
    /// silent): a resumable session survives it and continues on the next connection.
    pub fn is_link_failure(&self) -> bool {
        matches!(self, CloseReason::Transport(_) | CloseReason::PeerDead)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local(why) => write!(f, "closed locally: {why}"),
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::PeerDead => f.write_str("peer silent for 3 keepalive intervals"),
            CloseReason::Protocol(code, why) => write!(f, "protocol error ({code}): {why}"),
            CloseReason::Transport(why) => write!(f, "transport failed: {why}"),
        }
    }
}
