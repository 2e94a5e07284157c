//! Dialing targets: name resolution, target rules on every resolved address, connect timeouts.

use crate::proxy::rules::Rules;
use smol::net::TcpStream;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

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
    /// The far end of a tunnel refused the stream (status from the refusal code).
    Tunnel {
        /// `host:port`
        target: String,
        /// the refusal's HTTP status
        status: u16,
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
}

impl DialError {
    /// The HTTP status a proxy answers this with.
    pub fn status(&self) -> u16 {
        match self {
            DialError::Forbidden { .. } => 403,
            DialError::Timeout { .. } => 504,
            DialError::HopFailed { timeout: true, .. } => 504,
            DialError::Tunnel { status, .. } => *status,
            _ => 502,
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
            DialError::Tunnel { target, reason, .. } => {
                write!(f, "tunnel could not reach {target}: {reason}")
            }
        }
    }
}

impl std::error::Error for DialError {}

/// Formats `host:port`, bracketing IPv6 literals.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves `host` (an IP literal needs no lookup).
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, DialError> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match smol::net::resolve((h, port)).await {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(DialError::Resolve {
            host: host.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        }),
        Err(source) => Err(DialError::Resolve {
            host: host.to_string(),
            source,
        }),
    }
}

/// Why the rules refused a target (the reason users see with the 403).
pub const BY_RULES: &str = "refused by the target rules";
/// Why an unspecified address is never dialed.
pub const UNSPECIFIED: &str = "an unspecified address (0.0.0.0, ::) means this host";

/// False for addresses that are never dialed, whatever the rules say: the unspecified ones
/// (`0.0.0.0/8`, `::`, and their IPv4-mapped forms). A connect to `0.0.0.0` or `::` reaches
/// this host's loopback, so it would slip past `--deny 127.0.0.0/8`; the rest of `0.0.0.0/8`
/// is "this network" (RFC 1122) and never a real target.
pub fn dialable(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] != 0,
        IpAddr::V6(v6) => !v6.is_unspecified(),
    }
}

/// Keeps the addresses of `host` that may be dialed under `rules`; `Forbidden` (naming the
/// check) when none is left.
pub fn permitted(
    host: &str,
    port: u16,
    rules: &Rules,
    addrs: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, DialError> {
    let any_unspecified = addrs.iter().any(|a| !dialable(a.ip()));
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| dialable(a.ip()) && rules.permits_addr(host, a.ip(), port))
        .collect();
    if allowed.is_empty() {
        return Err(DialError::Forbidden {
            target: host_port(host, port),
            why: if any_unspecified {
                UNSPECIFIED
            } else {
                BY_RULES
            },
        });
    }
    Ok(allowed)
}

/// Connects to `host:port`, checking `rules` on the name and on every resolved address
/// (unspecified addresses are never dialed); addresses are tried in order, all within one
/// `timeout`.
pub async fn dial(
    host: &str,
    port: u16,
    rules: &Rules,
    timeout: Duration,
) -> Result<TcpStream, DialError> {
    let target = host_port(host, port);
    if !rules.permits_name(host, port) {
        return Err(DialError::Forbidden {
            target,
            why: BY_RULES,
        });
    }
    let attempt = async {
        let addrs = resolve(host, port).await?;
        let allowed = permitted(host, port, rules, addrs)?;
        connect_any(&target, &allowed).await
    };
    with_timeout(timeout, attempt, || DialError::Timeout {
        target: target.clone(),
    })
    .await
}

/// Connects to the first of `addrs` that accepts.
pub async fn connect_any(target: &str, addrs: &[SocketAddr]) -> Result<TcpStream, DialError> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for addr in addrs {
        match TcpStream::connect(*addr).await {
            Ok(s) => {
                // Interactive protocols (ssh, 64-byte round trips) must not wait for Nagle.
                s.set_nodelay(true).ok();
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(DialError::Connect {
        target: target.to_string(),
        source: last,
    })
}

/// Races `fut` with a timer; on expiry returns `on_timeout()`.
pub async fn with_timeout<T, E>(
    d: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
    on_timeout: impl FnOnce() -> E,
) -> Result<T, E> {
    use futures_lite::FutureExt;
    let timer = async {
        smol::Timer::after(d).await;
        None
    };
    match async { Some(fut.await) }.or(timer).await {
        Some(r) => r,
        None => Err(on_timeout()),
    }
}

/// Accepts the next connection, or `None` once `shutdown` drains. A failed accept (out of
/// descriptors, a connection reset in the backlog) is logged and retried after a short pause
/// instead of spinning. Cancel-safe.
pub async fn accept(
    listener: &smol::net::TcpListener,
    shutdown: &crate::shutdown::ShutdownSignal,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    use futures_lite::FutureExt;
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shutdown.draining().await;
                None
            })
            .await?;
        match accepted {
            Ok((stream, peer)) => {
                stream.set_nodelay(true).ok();
                return Some((stream, peer));
            }
            Err(e) => {
                log::warn!("{what}: accept failed: {e}");
                smol::Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}
