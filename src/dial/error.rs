//! Why a dial failed.

use crate::refusal::Refusal;
use std::fmt;
use std::io;

/// Why a connection to a target (directly or through a chain) could not be made.
#[derive(Debug)]
pub enum DialError {
    /// The target rules refuse it, or it is an address that is never dialed (403).
    Forbidden {
        /// `host:port`
        target: String,
        /// why, for the user: which check refused it
        why: &'static str,
    },
    /// The name did not resolve (502).
    Resolve {
        /// the host name
        host: String,
        /// the resolver's error
        source: io::Error,
    },
    /// Every address refused or failed (502).
    Connect {
        /// `host:port`
        target: String,
        /// the last connect error
        source: io::Error,
    },
    /// No address answered within the connect timeout (504).
    Timeout {
        /// `host:port`
        target: String,
    },
    /// An upstream proxy answered the CONNECT with a non-2xx status (502).
    HopRefused {
        /// 1-based hop number
        hop: usize,
        /// the hop's `host:port`
        proxy: String,
        /// its status code
        status: u16,
        /// its reason phrase
        reason: String,
    },
    /// The far end of a tunnel refused the stream (answered as the far end's refusal).
    Tunnel {
        /// `host:port`
        target: String,
        /// the far end's refusal, from its OPEN_REFUSED code
        refusal: Refusal,
        /// the peer's reason
        reason: String,
    },
    /// An upstream proxy broke the protocol or the connection (502), or was too slow (504).
    HopFailed {
        /// 1-based hop number
        hop: usize,
        /// the hop's `host:port`
        proxy: String,
        /// what went wrong
        why: String,
        /// true when it was a timeout
        timeout: bool,
    },
    /// What was asked cannot be done by this dialer (UDP through an HTTP upstream chain, or
    /// through a tunnel peer without the `udp` capability); SOCKS5 "command not supported".
    Unsupported {
        /// what was asked
        what: &'static str,
        /// why it cannot be
        why: &'static str,
    },
}

impl DialError {
    /// Why, as a refusal: what a proxy answers (its HTTP status), what an OPEN for this
    /// dial is refused with (its wire code), and which counter counts it.
    pub fn refusal(&self) -> Refusal {
        match self {
            DialError::Forbidden { .. } => Refusal::Forbidden,
            DialError::Timeout { .. } | DialError::HopFailed { timeout: true, .. } => {
                Refusal::Timeout
            }
            DialError::Tunnel { refusal, .. } => *refusal,
            DialError::Unsupported { .. } => Refusal::BadRequest,
            DialError::Connect { source, .. }
                if source.kind() == io::ErrorKind::ConnectionRefused =>
            {
                Refusal::Refused
            }
            DialError::Resolve { .. }
            | DialError::Connect { .. }
            | DialError::HopRefused { .. }
            | DialError::HopFailed { timeout: false, .. } => Refusal::Unreachable,
        }
    }

    /// True when an upstream hop demanded credentials we do not have (or rejected ours).
    pub fn is_hop_auth(&self) -> bool {
        matches!(self, DialError::HopRefused { status: 407, .. })
    }
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::Forbidden { target, why } => {
                write!(f, "target {target} is not allowed: {why}")
            }
            DialError::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            DialError::Connect { target, source } => {
                write!(f, "cannot connect to {target}: {source}")
            }
            DialError::Timeout { target } => write!(f, "connect to {target} timed out"),
            DialError::HopRefused {
                hop,
                proxy,
                status,
                reason,
            } => write!(f, "upstream hop {hop} ({proxy}) answered {status} {reason}"),
            DialError::HopFailed {
                hop, proxy, why, ..
            } => write!(f, "upstream hop {hop} ({proxy}) failed: {why}"),
            DialError::Unsupported { what, why } => write!(f, "{what} is not supported: {why}"),
            DialError::Tunnel { target, reason, .. } => {
                write!(f, "tunnel could not reach {target}: {reason}")
            }
        }
    }
}

impl std::error::Error for DialError {}
