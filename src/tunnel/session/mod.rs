//! The multiplexed session: stream table, credit windows, keepalive, go-away.
//!
//! A [`Session`] is the handle roles use (open, accept, control frames); its [`Driver`] is
//! the one future that moves bytes: it reads WebSocket messages and dispatches frames, writes
//! queued frames (batched: feed, then one flush), and pings every keepalive interval. The role
//! runs the driver in a task it owns; when the driver ends or is dropped, the session is
//! closed and every stream fails.

use crate::metrics::{Metrics, Refusal};
use crate::tunnel::frame::{EARLY_DATA, Frame, FrameError, OpenTarget, RefuseCode};
use crate::tunnel::stream::{MuxStream, StreamShared, StreamState};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{Bytes, Message};
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::{FutureExt, StreamExt};
use futures_sink::Sink;
use smol::channel::{Receiver, Sender};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

mod dispatch;
mod driver;
mod incoming;

pub use incoming::Incoming;

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
}

/// Smallest window a stream gets when the budget is spent: never below what an opener may
/// send early.
const MIN_WINDOW: u32 = EARLY_DATA;
/// Windows grow when half of one was read within two round trips, and never on less than
/// this (about a timer tick).
const GROWTH_FLOOR: Duration = Duration::from_millis(2);
/// Assumed round trip until the first pong.
const UNMEASURED_RTT: Duration = Duration::from_millis(10);
/// Session frames (BIND, GO_AWAY, ...) waiting for the role (well above the 64 bindings a
/// session may hold); more is a protocol error.
const CONTROL_QUEUE: usize = 256;
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

/// The answer to an OPEN.
pub(crate) type OpenResult = Result<(), (RefuseCode, String)>;

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The peer refused it.
    Refused {
        /// why
        code: RefuseCode,
        /// the peer's reason
        reason: String,
    },
    /// This side already has `max_streams` open.
    TooManyStreams,
    /// The session is closed or going away.
    Closed(String),
}

impl OpenError {
    /// The refusal code to report onwards.
    pub fn code(&self) -> RefuseCode {
        match self {
            OpenError::Refused { code, .. } => *code,
            OpenError::TooManyStreams => RefuseCode::TooManyStreams,
            OpenError::Closed(_) => RefuseCode::GoingAway,
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Refused { reason, .. } => write!(f, "refused by peer: {reason}"),
            OpenError::TooManyStreams => f.write_str("too many streams on this session"),
            OpenError::Closed(why) => write!(f, "session closed: {why}"),
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

/// What the writer sends.
enum Out {
    Frame(Vec<u8>),
    Ping(Vec<u8>),
    Close(String),
}

struct State {
    next_id: u32,
    /// highest id the peer has opened (peer ids only grow)
    peer_max_id: u32,
    streams: HashMap<u32, Arc<StreamShared>>,
    /// the peer sent GO_AWAY: open nothing new
    peer_going_away: bool,
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
    out_tx: Sender<Out>,
    pool: Arc<BufPool>,
    queued: AtomicUsize,
    waiters: Mutex<Vec<Waker>>,
    budget: AtomicI64,
    incoming: (Sender<Incoming>, Receiver<Incoming>),
    control: (Sender<Frame>, Receiver<Frame>),
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
    metrics: Arc<Metrics>,
}

/// Frame buffers for DATA, reused: a fresh 64 KiB allocation per frame made the allocator
/// hand memory back and fault it in again (a quarter of the CPU in a bulk profile).
pub(crate) struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept for reuse per session (enough for a burst the writer batches).
const POOLED_BUFFERS: usize = 8;

impl BufPool {
    fn new() -> Arc<Self> {
        Arc::new(BufPool {
            free: Mutex::new(Vec::new()),
        })
    }

    /// An empty buffer with room for `len` bytes.
    fn take(&self, len: usize) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match reused {
            Some(mut b) => {
                b.reserve(len);
                b
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Wraps a filled buffer for the WebSocket; it comes back here when the message is sent.
    pub(crate) fn message_bytes(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::downgrade(self),
        })
    }
}

/// A pooled buffer on its way through the WebSocket writer.
struct Pooled {
    buf: Vec<u8>,
    pool: std::sync::Weak<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOLED_BUFFERS {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            free.push(buf);
        }
    }
}

/// A handle to one multiplexed session; clones share it.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

/// Moves the bytes of a [`Session`]; see [`Driver::run`].
pub struct Driver {
    shared: Arc<Shared>,
    out_rx: Receiver<Out>,
}

impl Session {
    /// A new session for `side`; run the returned driver over the WebSocket.
    pub fn new(
        side: Side,
        cfg: SessionConfig,
        label: String,
        metrics: Arc<Metrics>,
    ) -> (Session, Driver) {
        let (out_tx, out_rx) = smol::channel::unbounded();
        let (closed_tx, closed_rx) = smol::channel::bounded(1);
        let (close_req_tx, close_req_rx) = smol::channel::bounded(1);
        let shared = Arc::new(Shared {
            side,
            budget: AtomicI64::new(i64::try_from(cfg.window_budget).unwrap_or(i64::MAX)),
            cfg,
            label,
            state: Mutex::new(State {
                next_id: if side == Side::Client { 1 } else { 2 },
                peer_max_id: 0,
                streams: HashMap::new(),
                peer_going_away: false,
                going_away: false,
                closed: None,
            }),
            out_tx,
            pool: BufPool::new(),
            queued: AtomicUsize::new(0),
            waiters: Mutex::new(Vec::new()),
            incoming: smol::channel::unbounded(),
            control: smol::channel::bounded(CONTROL_QUEUE),
            closed_tx: Mutex::new(Some(closed_tx)),
            close_requested: (Mutex::new(Some(close_req_tx)), close_req_rx),
            closed_rx,
            last_rx: Mutex::new(Instant::now()),
            srtt_us: AtomicU64::new(0),
            start: Instant::now(),
            refused: AtomicU64::new(0),
            metrics,
        });
        metrics_inc(&shared.metrics.sessions, 1);
        shared.metrics.sessions_total.fetch_add(1, Relaxed);
        (
            Session {
                shared: shared.clone(),
            },
            Driver { shared, out_rx },
        )
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
            if let Some(why) = &state.closed {
                return Err(OpenError::Closed(why.clone()));
            }
            if state.peer_going_away || state.going_away {
                return Err(OpenError::Closed("going away".into()));
            }
            if state.streams.len() >= sh.cfg.max_streams {
                return Err(OpenError::TooManyStreams);
            }
            let id = state.next_id;
            state.next_id = id
                .checked_add(2)
                .ok_or_else(|| OpenError::Closed("stream ids exhausted".into()))?;
            let window = sh.take_window();
            let stream = Arc::new(StreamShared::new(id, window, EARLY_DATA));
            stream.lock().opening = Some(tx);
            state.streams.insert(id, stream.clone());
            // Queued under the lock: the peer must see OPENs in id order, and two tasks
            // opening at once on different threads would otherwise race.
            sh.send_frame(Frame::Open { id, window, target });
            stream
        };
        sh.stream_opened();
        Ok((MuxStream::new(stream, sh.clone()), rx))
    }

    /// The next stream the peer opened; `None` once the session is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        self.shared.incoming.1.recv().await.ok()
    }

    /// The next session frame (BIND, BOUND, BIND_REFUSED, GO_AWAY) from the peer.
    pub async fn control(&self) -> Option<Frame> {
        self.shared.control.1.recv().await.ok()
    }

    /// Sends a session frame.
    pub fn send_control(&self, frame: Frame) {
        self.shared.send_frame(frame);
    }

    /// Sends GO_AWAY: the peer opens nothing new, and we accept nothing new.
    pub fn go_away(&self, reason: &str) {
        self.shared.lock_state().going_away = true;
        self.shared.send_frame(Frame::GoAway {
            reason: reason.to_string(),
        });
    }

    /// Ends the session: a WebSocket close frame, then every stream fails.
    pub fn close(&self, reason: &str) {
        // Ignored: a closed writer means the session is already over.
        let _ = self.shared.out_tx.try_send(Out::Close(reason.to_string()));
        let sender = self
            .shared
            .close_requested
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(sender);
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

    /// Resolves once no stream is open (checked every 50 ms; for drains, not hot paths).
    pub async fn streams_done(&self) {
        while self.stream_count() > 0 {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    }

    /// Streams open now.
    pub fn stream_count(&self) -> usize {
        self.shared.lock_state().streams.len()
    }

    /// OPENs refused so far (by either side's answer from here).
    pub fn refused_count(&self) -> u64 {
        self.shared.refused.load(Relaxed)
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

fn metrics_inc(g: &AtomicU64, by: i64) {
    if by >= 0 {
        g.fetch_add(by as u64, Relaxed);
    } else {
        g.fetch_sub(by.unsigned_abs(), Relaxed);
    }
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stream_shared(&self, id: u32) -> Option<Arc<StreamShared>> {
        self.lock_state().streams.get(&id).cloned()
    }

    fn stream_opened(&self) {
        metrics_inc(&self.metrics.streams, 1);
        self.metrics.streams_total.fetch_add(1, Relaxed);
    }

    /// Takes a new stream's receive window from the session budget.
    fn take_window(&self) -> u32 {
        let want = self.cfg.initial_window;
        if self.budget.fetch_sub(i64::from(want), Relaxed) >= i64::from(want) {
            return want;
        }
        self.budget
            .fetch_add(i64::from(want) - i64::from(MIN_WINDOW), Relaxed);
        MIN_WINDOW
    }

    /// Removes a stream from the table without telling the peer; returns it if present.
    fn forget(&self, id: u32) -> Option<Arc<StreamShared>> {
        let removed = self.lock_state().streams.remove(&id);
        if let Some(s) = &removed {
            let window = s.lock().recv_window;
            self.budget.fetch_add(i64::from(window), Relaxed);
            metrics_inc(&self.metrics.streams, -1);
        }
        removed
    }

    /// The last handle of a stream is gone: it leaves the table, with a RESET unless both
    /// directions had finished.
    pub(crate) fn stream_dropped(&self, stream: &Arc<StreamShared>) {
        if self.forget(stream.id).is_none() {
            return;
        }
        let st = stream.lock();
        let clean = st.fin_sent && st.recv_fin;
        if !clean && st.error.is_none() {
            drop(st);
            self.send_frame(Frame::Reset {
                id: stream.id,
                code: RefuseCode::Other,
                reason: "stream dropped".into(),
            });
        }
    }

    pub(crate) fn send_frame(&self, frame: Frame) {
        // A closed writer means the session is over; streams learn it from their state.
        let _ = self.out_tx.try_send(Out::Frame(frame.to_bytes()));
    }

    pub(crate) fn send_data(&self, id: u32, payload: &[u8]) {
        let mut out = self.pool.take(super::frame::HEADER + payload.len());
        out.push(0x04);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(payload);
        self.queued.fetch_add(payload.len(), Relaxed);
        self.metrics
            .bytes_out
            .fetch_add(payload.len() as u64, Relaxed);
        let _ = self.out_tx.try_send(Out::Frame(out));
    }

    /// True when a writer may queue more; otherwise registers `cx` to be woken.
    pub(crate) fn may_queue(&self, cx: &mut Context<'_>) -> bool {
        if self.queued.load(Relaxed) < self.cfg.max_queued {
            return true;
        }
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cx.waker().clone());
        // Re-check: the writer may have drained between the load and the push.
        self.queued.load(Relaxed) < self.cfg.max_queued
    }

    fn drained(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Relaxed);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for w in waiters {
            w.wake();
        }
    }

    /// Decides whether the application's reads earn the peer a WINDOW, growing the window
    /// when a half window was consumed within two round trips (the link, not the reader, is
    /// the bottleneck), up to `max_window` and while the session budget lasts.
    pub(crate) fn window_update(&self, st: &mut StreamState) -> Option<u32> {
        if st.recv_fin || st.error.is_some() || st.unacked < st.recv_window / 2 {
            return None;
        }
        let now = Instant::now();
        let srtt = match self.srtt_us.load(Relaxed) {
            0 => UNMEASURED_RTT,
            us => Duration::from_micros(us),
        };
        let fast = now.duration_since(st.last_update) < (srtt * 2).max(GROWTH_FLOOR);
        let mut increment = st.unacked;
        if fast && st.recv_window < self.cfg.max_window {
            let grow = st.recv_window.min(self.cfg.max_window - st.recv_window);
            if self.budget.fetch_sub(i64::from(grow), Relaxed) >= i64::from(grow) {
                st.recv_window += grow;
                increment += grow;
            } else {
                self.budget.fetch_add(i64::from(grow), Relaxed);
            }
        }
        st.last_update = now;
        st.unacked = 0;
        st.recv_avail += increment;
        Some(increment)
    }

    /// Marks the session closed: every stream fails, every waiter wakes.
    fn close(&self, reason: &CloseReason) {
        let streams = {
            let mut state = self.lock_state();
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(reason.to_string());
            std::mem::take(&mut state.streams)
        };
        metrics_inc(&self.metrics.streams, -(streams.len() as i64));
        metrics_inc(&self.metrics.sessions, -1);
        for (_, s) in streams {
            let mut st = s.lock();
            if let Some(tx) = st.opening.take() {
                let _ = tx.try_send(Err((RefuseCode::GoingAway, reason.to_string())));
            }
            st.fail(
                io::ErrorKind::ConnectionAborted,
                format!("session ended: {reason}"),
            );
        }
        self.out_tx.close();
        self.incoming.0.close();
        self.control.0.close();
        drop(
            self.closed_tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        self.drained(0);
    }
}
