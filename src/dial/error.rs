//! Why a dial failed.

use crate::refusal::Refusal;
use crate::socks::Reply;
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
    /// An upstream SOCKS5 proxy refused the CONNECT with a reply code (RFC 1928 §6).
    HopSocksRefused {
        /// 1-based hop number
        hop: usize,
        /// the hop's `host:port`
        proxy: String,
        /// its `REP` byte (may be one RFC 1928 does not define)
        reply: u8,
    },
    /// An upstream SOCKS5 proxy wants credentials we do not have, or rejected ours (502).
    HopAuthFailed {
        /// 1-based hop number
        hop: usize,
        /// the hop's `host:port`
        proxy: String,
        /// what it said (never the credentials)
        why: String,
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
            DialError::HopSocksRefused { reply, .. } => match Reply::from_u8(*reply) {
                Some(Reply::NotAllowed) => Refusal::Forbidden,
                Some(Reply::ConnectionRefused) => Refusal::Refused,
                Some(Reply::TtlExpired) => Refusal::Timeout,
                _ => Refusal::Unreachable,
            },
            DialError::Resolve { .. }
            | DialError::Connect { .. }
            | DialError::HopRefused { .. }
            | DialError::HopAuthFailed { .. }
            | DialError::HopFailed { timeout: false, .. } => Refusal::Unreachable,
        }
    }

    /// True when an upstream hop demanded credentials we do not have (or rejected ours).
    pub fn is_hop_auth(&self) -> bool {
        matches!(
            self,
            DialError::HopRefused { status: 407, .. } | DialError::HopAuthFailed { .. }
        )
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
            DialError::HopSocksRefused { hop, proxy, reply } => match Reply::from_u8(*reply) {
                Some(r) => write!(
                    f,
                    "upstream hop {hop} ({proxy}) answered SOCKS5 reply 0x{reply:02x} {r}"
                ),
                None => write!(
                    f,
                    "upstream hop {hop} ({proxy}) answered unknown SOCKS5 reply 0x{reply:02x}"
                ),
            },
            DialError::HopAuthFailed { hop, proxy, why } => {
                write!(
                    f,
                    "upstream hop {hop} ({proxy}) refused authentication: {why}"
                )
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks_replies_map_to_refusals() {
        let refused = |reply| DialError::HopSocksRefused {
            hop: 1,
            proxy: "p:1".into(),
            reply,
        };
        let table = [
            (0x01, Refusal::Unreachable),
            (0x02, Refusal::Forbidden),
            (0x03, Refusal::Unreachable),
            (0x04, Refusal::Unreachable),
            (0x05, Refusal::Refused),
            (0x06, Refusal::Timeout),
            (0x07, Refusal::Unreachable),
            (0x08, Refusal::Unreachable),
            (0x2A, Refusal::Unreachable),
        ];
        for (reply, want) in table {
            assert_eq!(refused(reply).refusal(), want, "0x{reply:02x}");
            assert!(!refused(reply).is_hop_auth());
        }
        assert_eq!(
            refused(5).to_string(),
            "upstream hop 1 (p:1) answered SOCKS5 reply 0x05 connection refused"
        );
        let auth = DialError::HopAuthFailed {
            hop: 2,
            proxy: "p:1".into(),
            why: "rejected".into(),
        };
        assert!(auth.is_hop_auth());
        assert_eq!(auth.refusal(), Refusal::Unreachable);
    }
}
