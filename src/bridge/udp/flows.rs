//! The listening side of UDP: one socket we listen on (`-L udp:` on the client, a `-R udp:`
//! binding on the relay), where each source address (ip:port) becomes one flow through the
//! session, opened by the role's [`Opener`].
//!
//! Every queue is bounded and drops: at most [`UdpListener::max_flows`] flows per socket
//! (new sources past it are dropped and counted, and logged once), at most [`FLOW_QUEUE`]
//! datagrams waiting while a flow opens, and an open flow's `send` never waits (the session
//! drops when its datagram queue is full). So a flood costs at most those queues, and no
//! TCP stream of the session waits for it.

use super::{Activity, Count, drop_reason};
use crate::exec::{Spawner, TaskSet};
use crate::metrics::{Metrics, UdpDrop};
use crate::refusal::Refusal;
use crate::tunnel::frame::MAX_DATAGRAM;
use crate::tunnel::session::UdpFlow;
use futures_lite::FutureExt;
use smol::net::UdpSocket;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Flows one UDP socket carries at once by default; datagrams of new sources past it are
/// dropped (counted as `too_many_flows`).
pub const MAX_FLOWS: usize = 1024;
/// Datagrams of one source that may wait while its flow opens; more are dropped
/// (`queue_full`). 64 × 65,507 bytes is the most one opening flow holds.
pub const FLOW_QUEUE: usize = 64;
/// How long a refused source's datagrams are dropped (counted with the refusal's reason)
/// before its next datagram asks the peer again: a client that retries every few
/// milliseconds costs the peer one OPEN per hold, not one per datagram.
const REFUSED_HOLD: Duration = Duration::from_secs(2);

/// What opening the flow for a new source gave: the flow and its idle timeout (the one in
/// force when it opened), or the refusal and why.
pub type Opened = Result<(UdpFlow, Duration), (Refusal, String)>;
/// Opens the flow of a new source address (the role decides where it goes).
pub type Opener =
    Arc<dyn Fn(SocketAddr) -> Pin<Box<dyn Future<Output = Opened> + Send>> + Send + Sync>;

/// One UDP socket to serve, with its limits and what its log lines say.
#[derive(Debug)]
pub struct UdpListener {
    /// the socket; each source address that sends to it is a flow
    pub socket: Arc<UdpSocket>,
    /// the start of its log lines (`local udp 127.0.0.1:5353`, `session … udp binding …`)
    pub what: String,
    /// where its flows go, for log lines
    pub target: String,
    /// flows at once; new sources past it are dropped
    pub max_flows: usize,
    /// the role's counters
    pub metrics: Arc<Metrics>,
}

/// The flows of one socket, by source address.
type Table = Mutex<HashMap<SocketAddr, Arc<Entry>>>;

/// One source's flow.
struct Entry {
    state: Mutex<State>,
    activity: Activity,
    count: Count,
}

/// Where a source's datagrams go now.
enum State {
    /// the flow is being opened: datagrams wait here (at most [`FLOW_QUEUE`])
    Opening(VecDeque<Vec<u8>>),
    /// the flow is open: datagrams go straight to it
    Open(Arc<UdpFlow>),
    /// the flow was refused: datagrams are dropped for this reason until the entry goes
    Refused(UdpDrop),
}

impl Entry {
    /// One datagram from this entry's source: to the flow, into the opening queue, or
    /// dropped (counted).
    fn deliver(&self, datagram: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *st {
            State::Open(flow) => {
                let flow = flow.clone();
                drop(st);
                self.activity.touch();
                // A drop is counted by the flow.
                if flow.send(datagram) {
                    self.count.sent();
                }
            }
            State::Opening(queue) if queue.len() < FLOW_QUEUE => {
                queue.push_back(datagram.to_vec());
                self.activity.touch();
            }
            State::Opening(_) => self.count.drop_n(UdpDrop::QueueFull, 1),
            State::Refused(why) => self.count.drop_n(*why, 1),
        }
    }
}

/// Serves `l` until this future is dropped (the caller races it with its stop): reads each
/// datagram, gives it to its source's flow (made with `open` for a new source), and sends
/// each flow's answers back to its source. The flows are tasks of this future: dropping it
/// ends them all (each closes on the peer).
pub async fn serve_socket(l: UdpListener, open: Opener, spawner: Spawner) {
    let l = Arc::new(l);
    let table: Arc<Table> = Arc::default();
    let tasks = TaskSet::new(spawner);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    // One WARN per limit hit: set once it is logged, cleared once the limit is clear again.
    let (mut full_warned, mut large_warned) = (false, false);
    loop {
        let (n, src) = match l.socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // An ICMP error for an earlier answer to some source: not this socket's end.
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                log::error!("{}: receive failed, no longer served: {e}", l.what);
                return;
            }
        };
        if n > MAX_DATAGRAM {
            l.metrics.udp_dropped(UdpDrop::TooLarge);
            if !std::mem::replace(&mut large_warned, true) {
                log::warn!(
                    "{}: dropped a datagram from {src} larger than {MAX_DATAGRAM} bytes \
                     (logged once)",
                    l.what
                );
            }
            continue;
        }
        let datagram = &buf[..n];
        let found = table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&src)
            .cloned();
        if let Some(entry) = found {
            entry.deliver(datagram);
            continue;
        }
        let entry = {
            let mut flows = table.lock().unwrap_or_else(|e| e.into_inner());
            if flows.len() >= l.max_flows {
                None
            } else {
                let entry = Arc::new(Entry {
                    state: Mutex::new(State::Opening(VecDeque::from([datagram.to_vec()]))),
                    activity: Activity::new(),
                    count: Count::new(&l.metrics),
                });
                flows.insert(src, entry.clone());
                Some(entry)
            }
        };
        let Some(entry) = entry else {
            l.metrics.udp_dropped(UdpDrop::TooManyFlows);
            if !std::mem::replace(&mut full_warned, true) {
                log::warn!(
                    "{}: {} flows open: datagrams of new sources are dropped (from {src})",
                    l.what,
                    l.max_flows
                );
            }
            continue;
        };
        full_warned = false;
        let flow = run_flow(entry, src, l.clone(), table.clone(), open(src));
        tasks.spawn(flow);
    }
}

/// Errors of a receive that say nothing about the socket itself.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// One source's flow: opened, its waiting datagrams sent, then its answers sent back to the
/// source until it ends or sits idle; it then leaves the table (the next datagram from the
/// source makes a new flow) with one log line.
async fn run_flow(
    entry: Arc<Entry>,
    src: SocketAddr,
    l: Arc<UdpListener>,
    table: Arc<Table>,
    open: Pin<Box<dyn Future<Output = Opened> + Send>>,
) {
    let start = Instant::now();
    let (flow, idle) = match open.await {
        Ok((flow, idle)) => (Arc::new(flow), idle),
        Err((refusal, why)) => {
            let reason = drop_reason(refusal);
            let queued = {
                let mut st = entry.state.lock().unwrap_or_else(|e| e.into_inner());
                match std::mem::replace(&mut *st, State::Refused(reason)) {
                    State::Opening(q) => q.len(),
                    _ => 0,
                }
            };
            entry.count.drop_n(reason, queued as u64);
            log::warn!("{}: flow from {src} to {} refused: {why}", l.what, l.target);
            smol::Timer::after(REFUSED_HOLD).await;
            leave(&table, src, &entry);
            return;
        }
    };
    let queued = {
        let mut st = entry.state.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *st, State::Open(flow.clone())) {
            State::Opening(q) => q,
            _ => VecDeque::new(),
        }
    };
    for d in queued {
        if flow.send(&d) {
            entry.count.sent();
        }
    }
    log::debug!(
        "{}: flow {} from {src} to {} open",
        l.what,
        flow.id(),
        l.target
    );
    // Cancel-safety: a flow receive that loses the race has taken nothing from the flow.
    let back = async {
        while let Some(d) = flow.recv().await {
            entry.activity.touch();
            entry.count.received();
            match l.socket.send_to(&d, src).await {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => return format!("socket error: {e}"),
            }
        }
        "closed by peer".to_string()
    };
    // A flow with no datagram either way for `idle` is dropped (closed on the peer too).
    let why = back.or(entry.activity.idle(idle)).await;
    leave(&table, src, &entry);
    log::info!(
        "{}: flow {} from {src} to {} {} {:.3}s {why}",
        l.what,
        flow.id(),
        l.target,
        entry.count.line(flow.dropped()),
        start.elapsed().as_secs_f64()
    );
}

/// `entry` leaves the table (unless a newer entry for `src` took its place).
fn leave(table: &Table, src: SocketAddr, entry: &Arc<Entry>) {
    let mut flows = table.lock().unwrap_or_else(|e| e.into_inner());
    if flows.get(&src).is_some_and(|e| Arc::ptr_eq(e, entry)) {
        flows.remove(&src);
    }
}
