//! The multiplexed session: stream table, credit windows, keepalive, go-away.
//!
//! A [`Session`] is the handle roles use (open, accept, session frames); its [`Driver`] is
//! the one future that moves bytes: it reads WebSocket messages and dispatches frames, writes
//! queued frames (batched: feed, then one flush), and pings every keepalive interval. The role
//! runs the driver in a task it owns; when the driver ends or is dropped, the session is
//! closed and every stream fails.

use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::tunnel::flow;
use crate::tunnel::frame::{EARLY_DATA, Frame, FrameError, OpenTarget, RefuseCode};
use crate::tunnel::outbox::{Out, Outbox};
use crate::tunnel::stream::{
    HalfClose, Handshake, MuxStream, OpenResult, Owner, StreamShared, StreamState,
};
use crate::tunnel::watch::Watch;
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{Bytes, Message};
use futures_lite::StreamExt;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_sink::Sink;
use smol::channel::{Receiver, Sender};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod credit;
mod dispatch;
mod driver;
mod errors;
mod incoming;
mod limits;
mod race;
mod replay;
mod resume;
mod table;
mod udp;

pub use crate::tunnel::outbox::MAX_QUEUED_NON_DATA;
use crate::tunnel::outbox::NonDataQueue;
pub use errors::{CloseReason, OpenError};
pub use incoming::Incoming;
use limits::LogLimit;
use replay::{Received, Replay};
use table::metrics_inc;
pub use udp::{FLOW_QUEUE, FLOW_QUEUE_BYTES, SESSION_UDP_BUFFERED, SESSION_UDP_QUEUED, UdpFlow};

/// Limits and timings of one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// ping interval; the peer is dead after 3 intervals without any frame
    pub keepalive: Duration,
    /// most streams open at once; more are refused
    pub max_streams: usize,
    /// receive window a new stream starts with
    pub initial_window: u32,
    /// largest receive window a stream grows to
    pub max_window: u32,
    /// cap on the sum of all streams' receive windows (bytes we may have to buffer)
    pub window_budget: u64,
    /// cap on bytes queued for the WebSocket writer; writers wait beyond it
    pub max_queued: usize,
    /// the session outlives its connection and continues on a new one (negotiated per
    /// session in the handshake; see `docs/PROTOCOL.md`, "Resumable sessions")
    pub resumable: bool,
    /// the peer announced the `udp` capability in the handshake: UDP flows, DGRAM and BIND
    /// udp may be sent to it, and refusal code 8
    pub udp: bool,
}

/// Session frames (BIND, GO_AWAY, ...) waiting for the role (well above the 64 bindings a
/// session may hold); more is a protocol error.
const MAX_QUEUED_SESSION_FRAMES: usize = 256;
/// Streams the peer opened that we have neither accepted nor refused yet (waiting in the
/// accept queue, or with the role deciding, e.g. dialing); more OPENs are refused with
/// TooManyStreams. Each may carry [`EARLY_DATA`] before it is accepted, so this caps what
/// unaccepted streams can make a session buffer at [`MAX_PENDING_EARLY_DATA`] (4 MiB), and it
/// is far above the OPENs a busy client has in flight (one per connection being dialed).
pub const MAX_PENDING_STREAMS: usize = 256;
/// Most early data (bytes) the streams of one session hold before they are accepted: every
/// pending stream reserves [`EARLY_DATA`] of the session budget until it is answered.
pub const MAX_PENDING_EARLY_DATA: u64 = MAX_PENDING_STREAMS as u64 * EARLY_DATA as u64;
/// Most frames the writer feeds before one flush.
const WRITE_BATCH: usize = 64;
/// How long a WebSocket close handshake may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            keepalive: Duration::from_secs(20),
            max_streams: 10_000,
            initial_window: 256 * 1024,
            // 4 MiB keeps 40 MB/s flowing at 100 ms RTT; more would let one stalled bulk
            // stream pin more memory than a small VPS should spend on it.
            max_window: 4 * 1024 * 1024,
            window_budget: 8 * 1024 * 1024,
            max_queued: 2 * 1024 * 1024,
            resumable: false,
            udp: false,
        }
    }
}

/// Which end of the WebSocket this is; decides stream id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// dials out; opens odd stream ids
    Client,
    /// accepts; opens even stream ids
    Relay,
}

struct State {
    next_id: u32,
    /// highest id the peer has opened (peer ids only grow)
    peer_max_id: u32,
    streams: HashMap<u32, Arc<StreamShared>>,
    /// UDP flows (their ids are stream ids; see `udp.rs`)
    flows: HashMap<u32, Arc<udp::FlowShared>>,
    /// flows the peer opened that we have neither accepted nor refused
    pending_flows: std::collections::HashSet<u32>,
    /// the peer sent GO_AWAY: open nothing new
    peer_going_away: bool,
    /// the reason the peer's GO_AWAY gave (a frame's text: bounded by the frame limit)
    peer_going_away_why: Option<String>,
    /// we sent GO_AWAY: accept nothing new
    going_away: bool,
    closed: Option<String>,
}

/// The session state shared by the handle, the driver and every stream.
pub(crate) struct Shared {
    side: Side,
    cfg: SessionConfig,
    /// for log lines: the session id or peer
    label: String,
    state: Mutex<State>,
    /// `state.streams.len()`, watched (set under the state lock whenever the table changes)
    open_streams: Watch<usize>,
    /// the writer's queue, shared with every stream
    out: Arc<Outbox>,
    /// its receiving end: each connection's driver writes from it
    out_rx: Receiver<Out>,
    /// resumable sessions: the frames we wrote that the peer has not acknowledged
    replay: Mutex<Replay>,
    /// resumable sessions: the peer's numbered frames we handled
    received: Mutex<Received>,
    /// a driver runs (or is about to run) the session on a connection; false while a
    /// resumable session waits for its next connection
    attached: AtomicBool,
    /// `cfg.window_budget`: the receive windows of accepted streams and the [`EARLY_DATA`]
    /// each pending stream reserves are taken from it. Accepted streams get at least
    /// `flow::MIN_WINDOW` even when it is spent (so it may go below 0 by at most
    /// `max_streams` of those); pending streams (counted here, changed only with the stream's
    /// `pending` flag) are at most [`MAX_PENDING_STREAMS`].
    budget: Mutex<flow::Budget>,
    /// rate limit of the refusal WARN lines of this session
    refusal_log: LogLimit,
    incoming: (Sender<Incoming>, Receiver<Incoming>),
    /// session frames from the peer, waiting for the role
    session_frames: (Sender<Frame>, Receiver<Frame>),
    closed_tx: Mutex<Option<Sender<()>>>,
    closed_rx: Receiver<()>,
    /// Closed by [`Session::close`]: the driver ends shortly after even if the writer is
    /// stuck on a dead path and never gets to send the close frame.
    close_requested: (Mutex<Option<Sender<()>>>, Receiver<()>),
    last_rx: Mutex<Instant>,
    /// smoothed keepalive round trip, µs (0 = not measured yet)
    srtt_us: AtomicU64,
    start: Instant,
    refused: AtomicU64,
    /// payload bytes of DATA frames written to the peer (this session's share of
    /// `metrics.bytes_out`, counted as the writer takes them)
    bytes_sent: AtomicU64,
    /// payload bytes of DATA frames received from the peer (its share of `metrics.bytes_in`)
    bytes_received: AtomicU64,
    /// bytes of DGRAM payloads waiting for the writer (at most `udp::SESSION_UDP_QUEUED`)
    udp_queued: std::sync::atomic::AtomicUsize,
    /// bytes of datagrams the flows hold for their readers (at most
    /// `udp::SESSION_UDP_BUFFERED`)
    udp_buffered: std::sync::atomic::AtomicUsize,
    metrics: Arc<Metrics>,
}

/// A handle to one multiplexed session; clones share it.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("label", &self.shared.label)
            .finish_non_exhaustive()
    }
}

/// Moves the bytes of a [`Session`] over one connection; see [`Driver::run`].
pub struct Driver {
    shared: Arc<Shared>,
    /// the session continues on this connection: RESUME first, then what the peer missed
    resumed: bool,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("label", &self.shared.label)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new session for `side`; run the returned driver over the WebSocket.
    pub fn new(
        side: Side,
        cfg: SessionConfig,
        label: String,
        metrics: Arc<Metrics>,
    ) -> (Session, Driver) {
        // What the peer has not acknowledged is capped like the windows it can grant.
        let max_unacked = usize::try_from(cfg.window_budget).unwrap_or(usize::MAX);
        let (out, out_rx) = Outbox::new(cfg.max_queued, max_unacked, metrics.clone());
        let (closed_tx, closed_rx) = smol::channel::bounded(1);
        let (close_req_tx, close_req_rx) = smol::channel::bounded(1);
        let shared = Arc::new(Shared {
            side,
            budget: Mutex::new(flow::Budget::new(cfg.window_budget)),
            cfg,
            label,
            state: Mutex::new(State {
                next_id: if side == Side::Client { 1 } else { 2 },
                peer_max_id: 0,
                streams: HashMap::new(),
                flows: HashMap::new(),
                pending_flows: Default::default(),
                peer_going_away: false,
                peer_going_away_why: None,
                going_away: false,
                closed: None,
            }),
            out,
            out_rx,
            replay: Mutex::new(Replay::default()),
            received: Mutex::new(Received::default()),
            // The first driver is about to run: a close before it starts is its to send.
            attached: AtomicBool::new(true),
            open_streams: Watch::new(0),
            refusal_log: LogLimit::default(),
            // Never full: only pending streams are in it.
            // Both queues are bounded by the dispatcher (pending streams, and the check in
            // `to_role`), not by the channel: a bounded channel allocates its whole capacity up
            // front (256 frames are 28 KiB, 256 pending streams 20 KiB, in every idle session),
            // an unbounded one a block of 31 slots when it is first used.
            incoming: smol::channel::unbounded(),
            session_frames: smol::channel::unbounded(),
            closed_tx: Mutex::new(Some(closed_tx)),
            close_requested: (Mutex::new(Some(close_req_tx)), close_req_rx),
            closed_rx,
            last_rx: Mutex::new(Instant::now()),
            srtt_us: AtomicU64::new(0),
            start: Instant::now(),
            refused: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            udp_queued: Default::default(),
            udp_buffered: Default::default(),
            metrics,
        });
        metrics_inc(&shared.metrics.sessions, 1);
        shared.metrics.sessions_total.fetch_add(1, Relaxed);
        (
            Session {
                shared: shared.clone(),
            },
            Driver {
                shared,
                resumed: false,
            },
        )
    }

    /// A driver that continues this (resumable) session on a new connection: the peer agreed
    /// to resume it in the handshake. Run it once the previous driver has ended or was dropped.
    pub fn resume_driver(&self) -> Driver {
        Driver {
            shared: self.shared.clone(),
            resumed: true,
        }
    }

    /// True when the session outlives its connection (negotiated in the handshake).
    pub fn is_resumable(&self) -> bool {
        self.shared.cfg.resumable
    }

    /// True while a connection carries the session (false while a resumable session waits
    /// for its next one, and once it is over).
    pub fn is_attached(&self) -> bool {
        self.shared.attached.load(Relaxed) && !self.is_closed()
    }

    /// True once the session is over (its streams have failed); a resumable session whose
    /// connection was lost is not closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock_state().closed.is_some()
    }

    /// Opens a stream to `target` and waits for the peer's answer.
    pub async fn open(&self, target: OpenTarget) -> Result<MuxStream, OpenError> {
        let (handle, rx) = self.start_open(target)?;
        match rx.recv().await {
            Ok(Ok(())) => Ok(handle),
            Ok(Err((code, reason))) => Err(OpenError::Refused { code, reason }),
            Err(_) => Err(OpenError::Closed(self.close_reason().unwrap_or_default())),
        }
    }

    /// Opens a stream without waiting for the answer: up to [`EARLY_DATA`] bytes may be
    /// written at once and travel right behind the OPEN, saving a round trip for protocols
    /// where the client speaks first. A refusal then shows up as a failed read or write.
    pub fn open_early(&self, target: OpenTarget) -> Result<MuxStream, OpenError> {
        self.start_open(target).map(|(handle, _)| handle)
    }

    fn start_open(
        &self,
        target: OpenTarget,
    ) -> Result<(MuxStream, Receiver<OpenResult>), OpenError> {
        let sh = &self.shared;
        let (tx, rx) = smol::channel::bounded(1);
        let stream = {
            let mut state = sh.lock_state();
            let id = sh.next_open_id(&mut state)?;
            let window = sh.take_window();
            let stream = Arc::new(StreamShared::new(
                id,
                window,
                flow::SendCredit::opening(),
                Handshake::Opening(tx),
            ));
            state.streams.insert(id, stream.clone());
            sh.open_streams.set(state.streams.len());
            // Queued under the lock: the peer must see OPENs in id order, and two tasks
            // opening at once on different threads would otherwise race.
            sh.send_frame(Frame::Open { id, window, target });
            stream
        };
        sh.stream_opened();
        Ok((sh.stream_handle(stream), rx))
    }

    /// The next stream the peer opened; `None` once the session is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        self.shared.incoming.1.recv().await.ok()
    }

    /// The next session frame (BIND, BOUND, BIND_REFUSED, GO_AWAY) from the peer; `None`
    /// once the session is closed.
    pub async fn session_frame(&self) -> Option<Frame> {
        self.shared.session_frames.1.recv().await.ok()
    }

    /// Sends a session frame (BIND, BOUND, BIND_REFUSED, GO_AWAY).
    pub fn send_session_frame(&self, frame: Frame) {
        self.shared.send_frame(frame);
    }

    /// Sends GO_AWAY: the peer opens nothing new, and we accept nothing new.
    pub fn go_away(&self, reason: &str) {
        self.shared.lock_state().going_away = true;
        self.shared.send_frame(Frame::GoAway {
            reason: reason.to_string(),
        });
    }

    /// Ends the session: a WebSocket close frame, then every stream fails. A resumable
    /// session with no connection now ends at once.
    pub fn close(&self, reason: &str) {
        // Ignored: a closed writer means the session is already over.
        let _ = self.shared.out.send(Out::Close(reason.to_string()));
        let sender = self
            .shared
            .close_requested
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(sender);
        if !self.shared.attached.load(Relaxed) {
            self.shared.close(&CloseReason::Local(reason.to_string()));
        }
    }

    /// Resolves once the session is closed. Cancel-safe.
    pub async fn closed(&self) {
        // Only closing ends the receive.
        let _ = self.shared.closed_rx.recv().await;
    }

    /// Why the session closed, if it has.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.lock_state().closed.clone()
    }

    /// The reason of the peer's GO_AWAY, once one came (the relay says why it ends a session:
    /// shutting down, a token removed by a reload).
    pub fn peer_going_away(&self) -> Option<String> {
        self.shared.lock_state().peer_going_away_why.clone()
    }

    /// Resolves once no stream is open (woken as streams leave the table, never by a
    /// timer). Cancel-safe.
    pub async fn streams_done(&self) {
        self.shared
            .open_streams
            .wait_for(|n| (*n == 0).then_some(()))
            .await
    }

    /// Streams open now.
    pub fn stream_count(&self) -> usize {
        self.shared.open_streams.get()
    }

    /// Bytes (frame bytes plus a fixed overhead each) of non-DATA frames waiting for the
    /// writer; the reader stops reading the peer while it is at [`MAX_QUEUED_NON_DATA`].
    pub fn queued_non_data_bytes(&self) -> usize {
        self.shared.out.non_data.bytes()
    }

    /// Streams the peer opened that are neither accepted nor refused yet (at most
    /// [`MAX_PENDING_STREAMS`]).
    pub fn pending_streams(&self) -> usize {
        self.shared.budget().pending()
    }

    /// What is left of the session's window budget (`SessionConfig::window_budget`): the
    /// receive windows of accepted streams and the early-data reservation of pending ones are
    /// taken from it. Below 0 when accepted streams hold their floor windows past it.
    pub fn window_budget_left(&self) -> i64 {
        self.shared.budget().left()
    }

    /// OPENs refused so far (by either side's answer from here).
    pub fn refused_count(&self) -> u64 {
        self.shared.refused.load(Relaxed)
    }

    /// Payload bytes sent to the peer so far (DATA frames handed to the writer).
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Relaxed)
    }

    /// Payload bytes received from the peer so far (DATA frames accepted).
    pub fn bytes_received(&self) -> u64 {
        self.shared.bytes_received.load(Relaxed)
    }

    /// The smoothed round trip of the keepalive pings; `None` until a pong came back.
    pub fn rtt(&self) -> Option<Duration> {
        match self.shared.srtt_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// How long ago the session was created.
    pub fn age(&self) -> Duration {
        self.shared.start.elapsed()
    }

    /// True when both handles are of the same session.
    pub fn same(&self, other: &Session) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The label used in log lines.
    pub fn label(&self) -> &str {
        &self.shared.label
    }
}
