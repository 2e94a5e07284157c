//! Name resolution, the unspecified-address guard and target rules on every resolved address,
//! and connecting with a deadline.

use super::addr::host_port;
use super::error::DialError;
use super::rules::Rules;
use crate::time::with_timeout;
use smol::net::TcpStream;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

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
