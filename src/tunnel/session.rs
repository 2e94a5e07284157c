//! The multiplexed session: stream table, credit windows, keepalive, go-away.
//!
//! A [`Session`] is the handle roles use (open, accept, control frames); its [`Driver`] is
//! the one future that moves bytes: it reads WebSocket messages and dispatches frames, writes
//! queued frames (batched: feed, then one flush), and pings every keepalive interval. The role
//! runs the driver in a task it owns; when the driver ends or is dropped, the session is
//! closed and every stream fails.

use super::frame::{EARLY_DATA, Frame, FrameError, OpenTarget, RefuseCode};
use super::stream::{MuxStream, StreamShared, StreamState};
use crate::metrics::{Metrics, Refusal};
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

/// A stream the peer opened, waiting for us to connect it.
pub struct Incoming {
    /// the stream (usable once accepted)
    stream: Option<MuxStream>,
    /// what the peer asks it to be connected to
    pub target: OpenTarget,
    shared: Arc<Shared>,
}

impl Incoming {
    /// Confirms the stream (OPEN_OK) and returns it.
    pub fn accept(mut self) -> MuxStream {
        let stream = self
            .stream
            .take()
            .expect("an Incoming holds its stream until accepted");
        let window = {
            let sh = self.shared.stream_shared(stream.id());
            let mut st = sh.as_ref().map(|s| s.lock());
            match st.as_deref_mut() {
                Some(st) => {
                    // What arrived early counts against the window we grant.
                    let early = EARLY_DATA - st.recv_avail;
                    st.recv_avail = st.recv_window - early;
                    st.recv_window
                }
                None => 0,
            }
        };
        if window > 0 {
            self.shared.send_frame(Frame::OpenOk {
                id: stream.id(),
                window,
            });
        }
        stream
    }

    /// Refuses the stream (OPEN_REFUSED) with a reason the peer's user will see.
    pub fn refuse(mut self, code: RefuseCode, reason: &str) {
        self.refuse_inner(code, reason);
    }

    fn refuse_inner(&mut self, code: RefuseCode, reason: &str) {
        if let Some(stream) = self.stream.take() {
            let id = stream.id();
            self.shared.refused.fetch_add(1, Relaxed);
            // Leave the table first so dropping the handle sends no RESET.
            self.shared.forget(id);
            self.shared.send_frame(Frame::OpenRefused {
                id,
                code,
                reason: reason.to_string(),
            });
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.refuse_inner(RefuseCode::Other, "not accepted");
    }
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
    queued: AtomicUsize,
    waiters: Mutex<Vec<Waker>>,
    budget: AtomicI64,
    incoming: (Sender<Incoming>, Receiver<Incoming>),
    control: (Sender<Frame>, Receiver<Frame>),
    closed_tx: Mutex<Option<Sender<()>>>,
    closed_rx: Receiver<()>,
    last_rx: Mutex<Instant>,
    /// smoothed keepalive round trip, µs (0 = not measured yet)
    srtt_us: AtomicU64,
    start: Instant,
    refused: AtomicU64,
    metrics: Arc<Metrics>,
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
            queued: AtomicUsize::new(0),
            waiters: Mutex::new(Vec::new()),
            incoming: smol::channel::unbounded(),
            control: smol::channel::unbounded(),
            closed_tx: Mutex::new(Some(closed_tx)),
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

    /// Streams open now.
    pub fn stream_count(&self) -> usize {
        self.shared.lock_state().streams.len()
    }

    /// OPENs refused so far (by either side's answer from here).
    pub fn refused_count(&self) -> u64 {
        self.shared.refused.load(Relaxed)
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
        let mut out = Vec::with_capacity(super::frame::HEADER + payload.len());
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

    /// True when `id` has the peer's parity.
    fn is_peer_id(&self, id: u32) -> bool {
        (id % 2 == 1) == (self.side == Side::Relay)
    }

    /// True when `id` was in use once (a late frame after a reset is not a violation).
    fn was_known(&self, state: &State, id: u32) -> bool {
        if self.is_peer_id(id) {
            id <= state.peer_max_id
        } else {
            id < state.next_id
        }
    }

    /// Looks up a stream for a frame; `Ok(None)` for a stream that ended already.
    fn find(&self, id: u32) -> Result<Option<Arc<StreamShared>>, String> {
        let state = self.lock_state();
        match state.streams.get(&id) {
            Some(s) => Ok(Some(s.clone())),
            None if self.was_known(&state, id) => Ok(None),
            None => Err(format!("frame for unknown stream {id}")),
        }
    }

    /// Dispatches one frame from the peer. `Err` is a protocol violation that ends the session.
    fn handle(self: &Arc<Self>, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Open { id, window, target } => self.handle_open(id, window, target),
            Frame::OpenOk { id, window } => {
                let Some(s) = self.find(id)? else {
                    return Ok(());
                };
                let mut st = s.lock();
                let Some(tx) = st.opening.take() else {
                    return Err(format!("OPEN_OK for stream {id} that is not opening"));
                };
                if window < EARLY_DATA {
                    return Err(format!(
                        "OPEN_OK for stream {id} with a window below EARLY_DATA"
                    ));
                }
                // The window counts what was already sent early.
                st.send_credit = u64::from(window - st.early_sent);
                if let Some(w) = st.writer.take() {
                    w.wake();
                }
                // The opener may have given up (timeout); then the drop sends RESET.
                let _ = tx.try_send(Ok(()));
                Ok(())
            }
            Frame::OpenRefused { id, code, reason } => {
                let Some(s) = self.forget(id) else {
                    return Ok(());
                };
                let mut st = s.lock();
                st.fail(io::ErrorKind::ConnectionRefused, reason.clone());
                match st.opening.take() {
                    Some(tx) => {
                        let _ = tx.try_send(Err((code, reason)));
                        Ok(())
                    }
                    None => Err(format!("OPEN_REFUSED for stream {id} that is not opening")),
                }
            }
            Frame::Data { id, payload } => {
                let Some(s) = self.find(id)? else {
                    return Ok(());
                };
                let mut st = s.lock();
                if st.recv_fin {
                    return Err(format!("DATA after FIN on stream {id}"));
                }
                let n = payload.len();
                if n > st.recv_avail as usize {
                    return Err(format!("DATA past the window on stream {id}"));
                }
                if st.error.is_some() {
                    // We reset it; the peer has not seen that yet.
                    return Ok(());
                }
                st.recv_avail -= n as u32;
                st.recv_len += n;
                st.recv.push_back(payload);
                self.metrics.bytes_in.fetch_add(n as u64, Relaxed);
                if let Some(w) = st.reader.take() {
                    w.wake();
                }
                Ok(())
            }
            Frame::Window { id, increment } => {
                let Some(s) = self.find(id)? else {
                    return Ok(());
                };
                let mut st = s.lock();
                st.send_credit += u64::from(increment);
                if st.send_credit > u64::from(u32::MAX) {
                    return Err(format!("window overflow on stream {id}"));
                }
                if let Some(w) = st.writer.take() {
                    w.wake();
                }
                Ok(())
            }
            Frame::Fin { id } => {
                let Some(s) = self.find(id)? else {
                    return Ok(());
                };
                let mut st = s.lock();
                st.recv_fin = true;
                st.wake_all();
                Ok(())
            }
            Frame::Reset { id, reason, .. } => {
                let Some(s) = self.forget(id) else {
                    return Ok(());
                };
                let mut st = s.lock();
                if let Some(tx) = st.opening.take() {
                    let _ = tx.try_send(Err((RefuseCode::Other, reason.clone())));
                }
                st.fail(
                    io::ErrorKind::ConnectionReset,
                    format!("reset by peer: {reason}"),
                );
                Ok(())
            }
            Frame::GoAway { ref reason } => {
                log::info!("session {}: peer is going away: {reason}", self.label);
                self.lock_state().peer_going_away = true;
                let _ = self.control.0.try_send(frame);
                Ok(())
            }
            other => {
                let _ = self.control.0.try_send(other);
                Ok(())
            }
        }
    }

    fn handle_open(
        self: &Arc<Self>,
        id: u32,
        window: u32,
        target: OpenTarget,
    ) -> Result<(), String> {
        let refuse = |code: RefuseCode, reason: &str| {
            self.refused.fetch_add(1, Relaxed);
            self.send_frame(Frame::OpenRefused {
                id,
                code,
                reason: reason.into(),
            });
        };
        let stream = {
            let mut state = self.lock_state();
            if !self.is_peer_id(id) || id <= state.peer_max_id {
                return Err(format!(
                    "OPEN with stream id {id} out of order or of the wrong parity"
                ));
            }
            state.peer_max_id = id;
            if state.going_away || state.closed.is_some() {
                drop(state);
                refuse(RefuseCode::GoingAway, "going away");
                return Ok(());
            }
            if state.streams.len() >= self.cfg.max_streams {
                drop(state);
                self.metrics.refused(Refusal::TooManyStreams);
                refuse(
                    RefuseCode::TooManyStreams,
                    "too many streams (--max-streams)",
                );
                return Ok(());
            }
            let stream = Arc::new(StreamShared::new(id, self.take_window(), window));
            // Only early data may arrive before we answer OPEN_OK.
            stream.lock().recv_avail = EARLY_DATA;
            state.streams.insert(id, stream.clone());
            stream
        };
        self.stream_opened();
        let incoming = Incoming {
            stream: Some(MuxStream::new(stream, self.clone())),
            target,
            shared: self.clone(),
        };
        // Nobody accepting: the Incoming comes back and its drop refuses it.
        let _ = self.incoming.0.try_send(incoming);
        Ok(())
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

/// Closes the session if the driver future is dropped before it finished.
struct CloseGuard(Arc<Shared>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.close(&CloseReason::Local("driver stopped".into()));
    }
}

impl Driver {
    /// Runs the session over `ws` until it ends; returns why. Every stream has failed and
    /// every waiter has been woken when this returns (or when it is dropped).
    pub async fn run<S>(self, ws: WebSocketStream<S>) -> CloseReason
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let Driver { shared, out_rx } = self;
        let guard = CloseGuard(shared.clone());
        let (mut tx, mut rx) = ws.split();
        let reason = read_loop(&shared, &mut rx)
            .or(write_loop(&shared, &out_rx, &mut tx))
            .or(keepalive_loop(&shared))
            .await;
        // Tell the peer why, briefly; it may already be gone.
        let close = match &reason {
            CloseReason::Protocol(code, why) => Some((CloseCode::from(*code), why.clone())),
            CloseReason::PeerDead => Some((CloseCode::Away, "keepalive timeout".into())),
            CloseReason::Local(why) => Some((CloseCode::Normal, why.clone())),
            _ => None,
        };
        if let Some((code, why)) = close {
            let frame = CloseFrame {
                code,
                reason: truncate(&why, 120).into(),
            };
            let send = async { tx.close(Some(frame)).await.ok() };
            let _ = send
                .or(async {
                    smol::Timer::after(CLOSE_TIMEOUT).await;
                    None
                })
                .await;
        }
        match &reason {
            CloseReason::Protocol(..) => log::warn!("session {}: {reason}", shared.label),
            _ => log::info!("session {}: {reason}", shared.label),
        }
        shared.close(&reason);
        drop(guard);
        reason
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn read_loop<S>(
    shared: &Arc<Shared>,
    rx: &mut async_tungstenite::WebSocketReceiver<S>,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let msg = match rx.next().await {
            None => return CloseReason::PeerClosed,
            Some(Err(e)) => {
                use async_tungstenite::tungstenite::Error as E;
                use async_tungstenite::tungstenite::error::ProtocolError as P;
                return match e {
                    E::ConnectionClosed | E::AlreadyClosed => CloseReason::PeerClosed,
                    // The peer vanished (killed, network gone): a transport failure, not abuse.
                    E::Protocol(P::ResetWithoutClosingHandshake) => {
                        CloseReason::Transport("connection reset without a close handshake".into())
                    }
                    E::Io(e) => CloseReason::Transport(e.to_string()),
                    E::Capacity(e) => {
                        CloseReason::Protocol(1009, format!("message too large: {e}"))
                    }
                    e => CloseReason::Protocol(1002, e.to_string()),
                };
            }
            Some(Ok(m)) => m,
        };
        *shared.last_rx.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        match msg {
            Message::Binary(bytes) => {
                let frame = Frame::decode_shared(&bytes).map_err(|e: FrameError| e.to_string());
                if let Err(why) = frame.and_then(|f| shared.handle(f)) {
                    shared.metrics.refused(Refusal::BadRequest);
                    return CloseReason::Protocol(1002, why);
                }
            }
            Message::Text(_) => {
                shared.metrics.refused(Refusal::BadRequest);
                return CloseReason::Protocol(
                    1003,
                    "text messages are not part of the protocol".into(),
                );
            }
            Message::Pong(p) => {
                if let Ok(b) = <[u8; 8]>::try_from(&p[..]) {
                    let sent = u64::from_be_bytes(b);
                    let now = shared.start.elapsed().as_micros() as u64;
                    let rtt = now.saturating_sub(sent);
                    let old = shared.srtt_us.load(Relaxed);
                    let srtt = if old == 0 { rtt } else { (old * 7 + rtt) / 8 };
                    shared.srtt_us.store(srtt, Relaxed);
                }
            }
            Message::Close(_) => return CloseReason::PeerClosed,
            // Pings are answered by tungstenite on the next read or write.
            Message::Ping(_) | Message::Frame(_) => {}
        }
    }
}

async fn write_loop<S>(
    shared: &Arc<Shared>,
    out_rx: &Receiver<Out>,
    tx: &mut async_tungstenite::WebSocketSender<S>,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let fail = |e: async_tungstenite::tungstenite::Error| CloseReason::Transport(e.to_string());
    loop {
        let Ok(first) = out_rx.recv().await else {
            return CloseReason::Local("session closed".into());
        };
        let mut next = Some(first);
        let mut bytes = 0;
        let mut batch = 0;
        while let Some(item) = next.take() {
            let msg = match item {
                Out::Frame(f) => {
                    if f.first() == Some(&0x04) {
                        bytes += f.len() - super::frame::HEADER;
                    }
                    Message::Binary(Bytes::from(f))
                }
                Out::Ping(p) => Message::Ping(Bytes::from(p)),
                Out::Close(why) => {
                    if let Err(e) = flush(tx).await {
                        return fail(e);
                    }
                    return CloseReason::Local(why);
                }
            };
            if let Err(e) = feed(tx, msg).await {
                return fail(e);
            }
            batch += 1;
            if batch < WRITE_BATCH {
                next = out_rx.try_recv().ok();
            }
        }
        if let Err(e) = flush(tx).await {
            return fail(e);
        }
        shared.drained(bytes);
    }
}

async fn feed<S>(
    tx: &mut async_tungstenite::WebSocketSender<S>,
    msg: Message,
) -> Result<(), async_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| Pin::new(&mut *tx).poll_ready(cx)).await?;
    Pin::new(&mut *tx).start_send(msg)
}

async fn flush<S>(
    tx: &mut async_tungstenite::WebSocketSender<S>,
) -> Result<(), async_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| Pin::new(&mut *tx).poll_flush(cx)).await
}

async fn keepalive_loop(shared: &Arc<Shared>) -> CloseReason {
    let interval = shared.cfg.keepalive;
    let ping = || {
        let now = shared.start.elapsed().as_micros() as u64;
        // A closed writer means the session is ending anyway.
        let _ = shared
            .out_tx
            .try_send(Out::Ping(now.to_be_bytes().to_vec()));
    };
    // One ping at once: its pong measures the round trip that window growth is judged by.
    ping();
    loop {
        smol::Timer::after(interval).await;
        let silent = shared
            .last_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if silent >= interval * 3 {
            return CloseReason::PeerDead;
        }
        ping();
    }
}
