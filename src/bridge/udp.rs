//! Where UDP flows meet UDP sockets. Two shapes, used by both roles:
//!
//! - the **answering** side ([`serve_udp_dial`]): a peer opened a flow to `host:port`; we
//!   connect a UDP socket of our own to it (under the rules) and move datagrams both ways
//!   until the flow ends or sits idle;
//! - the **listening** side ([`flows::serve_socket`]): a UDP socket we listen on (`-L udp:`,
//!   `-R udp:` on the relay), where each source address becomes one flow through the session.
//!
//! A datagram is moved whole or dropped, never split or merged: a socket read gets one
//! datagram, a flow send carries one. Nothing here waits for room: a full queue drops the
//! datagram and counts it (`burrow_udp_dropped_total`).

use crate::dial::resolve::{permitted, resolve};
use crate::dial::rules::Rules;
use crate::dial::{DialError, host_port};
use crate::metrics::{Metrics, UdpDrop};
use crate::refusal::Refusal;
use crate::tunnel::frame::MAX_DATAGRAM;
use crate::tunnel::session::{Incoming, UdpFlow};
use futures_lite::FutureExt;
use smol::net::UdpSocket;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub mod flows;

/// How long a UDP flow may sit with no datagram either way before it is dropped (closing it
/// on the peer too): `--udp-idle-timeout`'s default.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers a peer's UDP flow to `host:port` (`-L udp:` on the relay, a `-R udp:` visitor on
/// the client): a UDP socket connected to the target under `rules` (refused with the
/// matching code otherwise), then datagrams both ways until the flow ends or is idle for
/// `idle`.
pub async fn serve_udp_dial(
    inc: Incoming,
    (host, port): (&str, u16),
    rules: &Rules,
    (timeout, idle): (Duration, Duration),
    label: &str,
    metrics: &Arc<Metrics>,
) {
    if let Some((socket, inc)) =
        connect_or_refuse(inc, (host, port), rules, timeout, label, metrics).await
    {
        let flow = inc.accept_udp();
        let target = host_port(host, port);
        pump_connected(socket, flow, idle, label, &target, metrics).await;
    }
}

/// Connects a UDP socket to `host:port` for a peer's flow; on failure the OPEN is refused
/// with the matching code, counted and logged (rate-limited per session), and `None`
/// returned.
pub async fn connect_or_refuse(
    inc: Incoming,
    (host, port): (&str, u16),
    rules: &Rules,
    timeout: Duration,
    label: &str,
    metrics: &Metrics,
) -> Option<(UdpSocket, Incoming)> {
    match connect(host, port, rules, timeout).await {
        Ok(socket) => Some((socket, inc)),
        Err(e) => {
            let why = e.refusal();
            metrics.refused(why);
            let id = inc.id();
            let target = host_port(host, port);
            inc.warn_refusal(
                label,
                format_args!("refused udp flow {id} to {target}: {e}"),
            );
            inc.refuse(why.wire_code(), &e.to_string());
            None
        }
    }
}

/// A UDP socket connected to `host:port`: the name and every resolved address judged by
/// `rules` (unspecified addresses never), the first allowed address taken, all within
/// `timeout` (a UDP connect sends nothing: only the lookup can take time).
pub async fn connect(
    host: &str,
    port: u16,
    rules: &Rules,
    timeout: Duration,
) -> Result<UdpSocket, DialError> {
    let target = host_port(host, port);
    if !rules.permits_name(host, port) {
        return Err(DialError::Forbidden {
            target,
            why: crate::dial::resolve::BY_RULES,
        });
    }
    let attempt = async {
        let addrs = permitted(host, port, rules, resolve(host, port).await?)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
        for addr in addrs {
            let any = match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let socket = match UdpSocket::bind((any, 0)).await {
                Ok(s) => s,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match socket.connect(addr).await {
                Ok(()) => return Ok(socket),
                Err(e) => last = e,
            }
        }
        Err(DialError::Connect {
            target: target.clone(),
            source: last,
        })
    };
    crate::time::with_timeout(timeout, attempt, || DialError::Timeout {
        target: target.clone(),
    })
    .await
}

/// Moves datagrams between a connected socket and a flow until the flow ends (the peer
/// closed it, or its session ended) or no datagram went either way for `idle`; then logs
/// one line. The flow is dropped at the end, which closes it on the peer.
pub async fn pump_connected(
    socket: UdpSocket,
    flow: UdpFlow,
    idle: Duration,
    label: &str,
    target: &str,
    metrics: &Arc<Metrics>,
) {
    let start = Instant::now();
    let id = flow.id();
    let activity = Activity::new();
    let count = Count::new(metrics);
    // Each branch is a loop that ends only with the flow; the first to end ends them all.
    // Cancel-safety: a socket read that loses the race has read nothing (readiness-based);
    // a flow receive that loses has taken nothing from the flow's queue.
    let to_peer = async {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            match socket.recv(&mut buf).await {
                Ok(n) if n > MAX_DATAGRAM => flow.count_drop(UdpDrop::TooLarge),
                Ok(n) => {
                    activity.touch();
                    // A drop is counted by the flow.
                    if flow.send(&buf[..n]) {
                        count.sent();
                    }
                }
                // An ICMP "port unreachable" for an earlier datagram: UDP goes on (the
                // target may come up; the flow ends when idle).
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return format!("socket error: {e}"),
            }
        }
    };
    let from_peer = async {
        while let Some(d) = flow.recv().await {
            activity.touch();
            count.received();
            match socket.send(&d).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return format!("socket error: {e}"),
            }
        }
        "closed by peer".to_string()
    };
    let why = to_peer.or(from_peer).or(activity.idle(idle)).await;
    log::info!(
        "session {label} udp flow {id} {target} {} {:.3}s {why}",
        count.line(flow.dropped()),
        start.elapsed().as_secs_f64()
    );
}

/// When a flow last moved a datagram, for its idle timeout (milliseconds since its start).
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// A datagram went one way or the other.
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Relaxed);
    }

    /// Ends once no datagram moved for `idle`: wakes at the deadline the last datagram set,
    /// and sleeps again if one moved since (one timer per idle period, not per datagram).
    async fn idle(&self, idle: Duration) -> String {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return format!("idle {}s", idle.as_secs_f64());
            }
            smol::Timer::at(deadline).await;
        }
    }
}

/// One flow's datagram counts, for its end-of-flow line. The session counts what passes
/// through a flow in the metrics (datagrams each way, its own drops, the flows gauge); what
/// is dropped here before a flow exists (a flow's queue while it opens, a refused flow) is
/// counted here.
struct Count {
    metrics: Arc<Metrics>,
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
}

impl Count {
    fn new(metrics: &Arc<Metrics>) -> Self {
        Count {
            metrics: metrics.clone(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn sent(&self) {
        self.sent.fetch_add(1, Relaxed);
    }

    fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }

    /// `n` datagrams dropped for `why` with no flow to count them on.
    fn drop_n(&self, why: UdpDrop, n: u64) {
        self.dropped.fetch_add(n, Relaxed);
        for _ in 0..n {
            self.metrics.udp_dropped(why);
        }
    }

    /// `sent=… received=… dropped=…` for the end-of-flow line (`flow_drops`: what the
    /// flow counted).
    fn line(&self, flow_drops: u64) -> String {
        format!(
            "sent={} received={} dropped={}",
            self.sent.load(Relaxed),
            self.received.load(Relaxed),
            self.dropped.load(Relaxed) + flow_drops
        )
    }
}

/// The refusal a UDP flow's failure maps to, as a drop reason.
pub fn drop_reason(refusal: Refusal) -> UdpDrop {
    match refusal {
        Refusal::Forbidden | Refusal::Auth => UdpDrop::Forbidden,
        // Refused for another reason (unreachable, no session, an old peer): the
        // datagrams are for a flow that is over.
        _ => UdpDrop::Invalid,
    }
}
