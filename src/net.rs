//! Dialing targets: name resolution, target rules on every resolved address, connect timeouts.

use crate::proxy::rules::Rules;
use smol::net::TcpStream;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a connection to a target (directly or through a chain) could not be made.
#[derive(Debug)]
pub enum DialError {
    /// The target rules refuse it (403).
    Forbidden {
        /// `host:port`
        target: String,
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
            DialError::Forbidden { target } => write!(f, "target {target} is not allowed"),
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

/// Connects to `host:port`, checking `rules` on the name and on every resolved address;
/// addresses are tried in order, all within one `timeout`.
pub async fn dial(
    host: &str,
    port: u16,
    rules: &Rules,
    timeout: Duration,
) -> Result<TcpStream, DialError> {
    let target = host_port(host, port);
    if !rules.permits_name(host, port) {
        return Err(DialError::Forbidden { target });
    }
    let attempt = async {
        let addrs = resolve(host, port).await?;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| rules.permits_addr(host, a.ip(), port))
            .collect();
        if allowed.is_empty() {
            return Err(DialError::Forbidden {
                target: target.clone(),
            });
        }
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
