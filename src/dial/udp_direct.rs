//! The direct dialer's UDP association: one UDP socket of our own (`[::]`, dual-stack, or
//! `0.0.0.0` where there is no IPv6), every destination checked exactly as a dial is (the
//! rules on the name, then [`permitted`] on every resolved address), answers taken only from
//! addresses we sent to.
//!
//! A refused destination is dropped: the first refusal of an association is logged, the rest
//! only counted. Names are resolved on this side (so `socks5h` clients work) and kept for
//! [`NAME_TTL`] in a small bounded cache, since a DNS lookup per datagram would be slow.

use super::error::DialError;
use super::resolve::{BY_RULES, permitted, resolve};
use super::rules::Rules;
use super::udp::{ASSOC_QUEUE, Datagram, UdpAssoc};
use crate::time::with_timeout;
use async_tungstenite::tungstenite::Bytes;
use futures_lite::FutureExt;
use smol::channel::{Receiver, Sender, TrySendError};
use smol::net::UdpSocket;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How long a resolved name is used before it is looked up again.
pub const NAME_TTL: Duration = Duration::from_secs(30);
/// Names kept per association; the cache starts over when full.
const NAMES_MAX: usize = 256;
/// Far ends whose answers are taken, per association; the set starts over when full (a
/// client talking to more at once may lose answers from the earliest, as with a NAT).
const PEERS_MAX: usize = 1024;
/// The largest UDP payload.
const RECV_BUF: usize = 65_535;

/// One association's egress.
struct Egress {
    sock: UdpSocket,
    /// the socket is `[::]`: IPv4 targets are sent to as IPv4-mapped addresses
    v6: bool,
    rules: Rules,
    timeout: Duration,
    names: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
    /// where we sent to (canonical addresses): only they may answer
    peers: Mutex<HashSet<SocketAddr>>,
    refused: AtomicU64,
    dropped: AtomicU64,
}

/// Why a datagram was not sent.
enum Unsent {
    /// the rules (or the unspecified-address guard) refuse the target
    Refused(DialError),
    /// the name did not resolve, or the resolver was too slow
    Failed(DialError),
}

/// Opens an association: a UDP socket of our own, `rules` and a resolve `timeout` for every
/// destination.
pub async fn associate(rules: Rules, timeout: Duration) -> Result<UdpAssoc, DialError> {
    let (sock, v6) = match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await {
        Ok(s) => (s, true),
        Err(_) => match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
            Ok(s) => (s, false),
            Err(source) => {
                return Err(DialError::Connect {
                    target: "a UDP socket".into(),
                    source,
                });
            }
        },
    };
    let (out, out_rx) = smol::channel::bounded(ASSOC_QUEUE);
    let (back_tx, back) = smol::channel::bounded(ASSOC_QUEUE);
    let egress = Egress {
        sock,
        v6,
        rules,
        timeout,
        names: Mutex::default(),
        peers: Mutex::default(),
        refused: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    };
    let run = Box::pin(async move {
        let e = egress;
        e.send_all(out_rx).or(e.receive_all(back_tx)).await;
    });
    Ok(UdpAssoc { out, back, run })
}

impl Egress {
    async fn send_all(&self, out: Receiver<Datagram>) {
        while let Ok(d) = out.recv().await {
            let to = match self.destination(&d.host, d.port).await {
                Ok(a) => a,
                Err(Unsent::Refused(e)) => {
                    if self.refused.fetch_add(1, Relaxed) == 0 {
                        log::warn!("udp association: datagram dropped: {e} (further ones counted)");
                    }
                    continue;
                }
                Err(Unsent::Failed(e)) => {
                    self.drop_one(&e);
                    continue;
                }
            };
            let canonical = SocketAddr::new(to.ip().to_canonical(), to.port());
            {
                let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
                if peers.len() >= PEERS_MAX && !peers.contains(&canonical) {
                    peers.clear();
                }
                peers.insert(canonical);
            }
            if let Err(e) = self.sock.send_to(&d.payload, to).await {
                self.drop_one(&e);
            }
        }
    }

    async fn receive_all(&self, back: Sender<Datagram>) {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let (n, src) = match self.sock.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    log::debug!("udp association: receive failed: {e}");
                    return;
                }
            };
            let src = SocketAddr::new(src.ip().to_canonical(), src.port());
            if !self
                .peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&src)
            {
                self.drop_one(&format_args!("from {src}, not a destination"));
                continue;
            }
            let d = Datagram {
                host: src.ip().to_string(),
                port: src.port(),
                payload: Bytes::copy_from_slice(&buf[..n]),
            };
            match back.try_send(d) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.drop_one(&"queue full"),
                Err(TrySendError::Closed(_)) => return,
            }
        }
    }

    fn drop_one(&self, why: &dyn std::fmt::Display) {
        if self.dropped.fetch_add(1, Relaxed) == 0 {
            log::debug!("udp association: datagram dropped: {why}");
        }
    }

    /// The address to send to, checked like a dial: the name, then every address.
    async fn destination(&self, host: &str, port: u16) -> Result<SocketAddr, Unsent> {
        if !self.rules.permits_name(host, port) {
            return Err(Unsent::Refused(DialError::Forbidden {
                target: super::host_port(host, port),
                why: BY_RULES,
            }));
        }
        let ips = self.lookup(host, port).await.map_err(Unsent::Failed)?;
        let addrs = ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        let allowed = permitted(host, port, &self.rules, addrs).map_err(Unsent::Refused)?;
        let usable = |a: &&SocketAddr| self.v6 || a.is_ipv4();
        let Some(&to) = allowed.iter().find(usable) else {
            let source = io::Error::new(io::ErrorKind::Unsupported, "no IPv6 here");
            return Err(Unsent::Failed(DialError::Connect {
                target: super::host_port(host, port),
                source,
            }));
        };
        Ok(match to {
            SocketAddr::V4(a) if self.v6 => SocketAddr::new(a.ip().to_ipv6_mapped().into(), port),
            a => a,
        })
    }

    /// The addresses of `host`: an IP literal at once, a name from the cache or the resolver.
    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, DialError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let cached = {
            let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            names
                .get(host)
                .filter(|(at, _)| at.elapsed() < NAME_TTL)
                .map(|(_, ips)| ips.clone())
        };
        if let Some(ips) = cached {
            return Ok(ips);
        }
        let timed_out = || DialError::Timeout {
            target: super::host_port(host, port),
        };
        let addrs = with_timeout(self.timeout, resolve(host, port), timed_out).await?;
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.len() >= NAMES_MAX {
            names.clear();
        }
        names.insert(host.to_string(), (Instant::now(), ips.clone()));
        Ok(ips)
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        let (refused, dropped) = (self.refused.load(Relaxed), self.dropped.load(Relaxed));
        if refused + dropped > 0 {
            log::debug!("udp association ended: refused={refused} dropped={dropped}");
        }
    }
}
