//! UDP flows: a stream id of the session that carries whole datagrams (DGRAM frames) instead
//! of bytes. Opened like a stream (OPEN with a UDP target, OPEN_OK or OPEN_REFUSED, counted in
//! `--max-streams`), ended like one (RESET; a FIN ends it too). Datagrams are not flow
//! controlled and never make anyone wait: every queue they pass is bounded and drops when
//! full, and each drop is counted, so a flood on one flow never stalls the streams of the
//! session. They are not numbered either: a resumed session does not replay them.
//!
//! Flows are kept in their own table (`State::flows`), beside the streams: they have no
//! window, no credit and no half-close. A draining session does not wait for them (UDP has
//! no end of its own; they end with the session).

use super::*;
use crate::metrics::UdpDrop;
use crate::tunnel::frame::{HEADER, MAX_DATAGRAM, MAX_FRAME};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Datagrams one flow may hold for its reader; more are dropped.
pub const FLOW_QUEUE: usize = 64;
/// Bytes one flow may hold for its reader; more are dropped (a 60 KiB datagram fits four
/// times).
pub const FLOW_QUEUE_BYTES: usize = 256 * 1024;
/// Bytes the flows of one session may hold for their readers together.
pub const SESSION_UDP_BUFFERED: usize = 4 * 1024 * 1024;
/// Bytes of datagrams one session may have waiting for its writer; more are dropped.
pub const SESSION_UDP_QUEUED: usize = 1024 * 1024;

/// The state of one flow, shared by its handle and the session's reader.
pub(super) struct FlowShared {
    pub(super) id: u32,
    /// a UDP_ANY flow: each datagram carries its address in front
    any: bool,
    st: Mutex<FlowState>,
}

struct FlowState {
    handshake: Handshake,
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    reader: Option<Waker>,
    /// set once the flow is over (either side ended it, or the session did)
    over: Option<String>,
    dropped: u64,
}

impl FlowShared {
    pub(super) fn new(id: u32, target: &OpenTarget, handshake: Handshake) -> FlowShared {
        FlowShared {
            id,
            any: matches!(target, OpenTarget::UdpAny),
            st: Mutex::new(FlowState {
                handshake,
                queue: VecDeque::new(),
                queued_bytes: 0,
                reader: None,
                over: None,
                dropped: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FlowState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Largest datagram this flow carries (a UDP_ANY one's address comes in front).
    fn max_payload(&self) -> usize {
        if self.any {
            MAX_FRAME - HEADER
        } else {
            MAX_DATAGRAM
        }
    }

    /// The flow is over: its reader wakes and finds the queue's rest, then the end. Returns
    /// what the queue held (bytes), to give back to the session.
    pub(super) fn end(&self, why: String) -> usize {
        let mut st = self.lock();
        if let Handshake::Opening(tx) = std::mem::replace(&mut st.handshake, Handshake::Done) {
            let _ = tx.try_send(Err((RefuseCode::GoingAway, why.clone())));
        }
        st.over.get_or_insert(why);
        let held = std::mem::take(&mut st.queued_bytes);
        st.queue.clear();
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        held
    }
}

/// One UDP flow: datagrams to and from the peer, each whole. Dropping it ends the flow on
/// both sides (RESET).
pub struct UdpFlow {
    shared: Arc<Shared>,
    flow: Arc<FlowShared>,
}

impl fmt::Debug for UdpFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpFlow")
            .field("session", &self.shared.label)
            .field("id", &self.flow.id)
            .finish()
    }
}

impl UdpFlow {
    /// The flow's stream id.
    pub fn id(&self) -> u32 {
        self.flow.id
    }

    /// Queues one datagram for the peer without waiting: false when it was dropped (larger
    /// than a datagram, the session's datagram queue is full, or the flow is over); each
    /// drop is counted.
    pub fn send(&self, payload: &[u8]) -> bool {
        let sh = &self.shared;
        let drop_it = |why: UdpDrop| {
            self.flow.lock().dropped += 1;
            sh.metrics.udp_dropped(why);
            false
        };
        if self.flow.lock().over.is_some() {
            return drop_it(UdpDrop::Invalid);
        }
        if payload.len() > self.flow.max_payload() {
            return drop_it(UdpDrop::TooLarge);
        }
        if sh.udp_queued.load(Relaxed) + payload.len() > SESSION_UDP_QUEUED {
            return drop_it(UdpDrop::QueueFull);
        }
        // The DGRAM frame, encoded straight from the payload (one copy).
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.push(crate::tunnel::frame::code::DGRAM);
        frame.extend_from_slice(&self.flow.id.to_be_bytes());
        frame.extend_from_slice(payload);
        // Counted before it is queued: the writer may take it before `send` returns.
        sh.udp_queued.fetch_add(payload.len(), Relaxed);
        if !sh.out.send(Out::Dgram(frame, payload.len())) {
            sh.udp_queued.fetch_sub(payload.len(), Relaxed);
            return drop_it(UdpDrop::Invalid);
        }
        sh.metrics.udp_datagrams_out.fetch_add(1, Relaxed);
        true
    }

    /// The next datagram from the peer; `None` once the flow is over (ended by either side,
    /// or the session ended). Cancel-safe.
    pub async fn recv(&self) -> Option<Bytes> {
        poll_fn(|cx| {
            let mut st = self.flow.lock();
            if let Some(d) = st.queue.pop_front() {
                st.queued_bytes -= d.len();
                self.shared.udp_buffered.fetch_sub(d.len(), Relaxed);
                return Poll::Ready(Some(d));
            }
            if st.over.is_some() {
                return Poll::Ready(None);
            }
            st.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Why the flow is over, once it is.
    pub fn over(&self) -> Option<String> {
        self.flow.lock().over.clone()
    }

    /// Datagrams of this flow we dropped so far (either direction).
    pub fn dropped(&self) -> u64 {
        self.flow.lock().dropped
    }

    /// Counts a datagram of this flow that its user dropped (a full queue of its own, one
    /// that does not parse), in the flow's count and in the metrics.
    pub fn count_drop(&self, why: UdpDrop) {
        self.flow.lock().dropped += 1;
        self.shared.metrics.udp_dropped(why);
    }

    /// Ends the flow on both sides with `reason` (a RESET the peer logs).
    pub fn close(self, reason: &str) {
        self.end(reason);
    }

    fn end(&self, reason: &str) {
        if self.shared.forget_flow(self.flow.id).is_some() {
            self.shared.send_frame(Frame::Reset {
                id: self.flow.id,
                code: RefuseCode::Other,
                reason: reason.to_string(),
            });
        }
    }
}

impl Drop for UdpFlow {
    fn drop(&mut self) {
        self.end("flow closed");
    }
}

impl Shared {
    /// Removes a flow from the table (without telling the peer), ending it; returns it if
    /// it was there.
    pub(super) fn forget_flow(&self, id: u32) -> Option<Arc<FlowShared>> {
        let removed = {
            let mut state = self.lock_state();
            let removed = state.flows.remove(&id);
            // Answered now, one way or the other.
            state.pending_flows.remove(&id);
            removed
        };
        let flow = removed?;
        let held = flow.end("flow ended".into());
        self.udp_buffered.fetch_sub(held, Relaxed);
        metrics_inc(&self.metrics.udp_flows, -1);
        Some(flow)
    }

    /// A flow joins the table (the caller checked the limits under the state lock).
    pub(super) fn flow_opened(&self) {
        metrics_inc(&self.metrics.udp_flows, 1);
        self.metrics.udp_flows_total.fetch_add(1, Relaxed);
    }

    /// The flow of `id`, if it is one that is open.
    pub(super) fn flow(&self, id: u32) -> Option<Arc<FlowShared>> {
        self.lock_state().flows.get(&id).cloned()
    }

    /// A DGRAM from the peer: queued for the flow's reader, or dropped and counted when its
    /// queue (or the session's share) is full. `Err` is a protocol violation.
    pub(super) fn handle_dgram(&self, id: u32, payload: Bytes) -> Result<(), String> {
        let flow = {
            let state = self.lock_state();
            match state.flows.get(&id) {
                Some(f) => f.clone(),
                None if state.streams.contains_key(&id) => {
                    return Err(format!("DGRAM on stream {id}, which is not a UDP flow"));
                }
                // Ended on our side; the peer has not seen the RESET yet.
                None if self.was_known(&state, id) => {
                    self.metrics.udp_dropped(UdpDrop::Invalid);
                    return Ok(());
                }
                None => return Err(format!("DGRAM for unknown stream {id}")),
            }
        };
        if payload.len() > flow.max_payload() {
            return Err(format!(
                "DGRAM of {} bytes on flow {id} (at most {MAX_DATAGRAM})",
                payload.len()
            ));
        }
        self.metrics.udp_datagrams_in.fetch_add(1, Relaxed);
        let mut st = flow.lock();
        if st.over.is_some() {
            self.metrics.udp_dropped(UdpDrop::Invalid);
            return Ok(());
        }
        let n = payload.len();
        let session_full = self.udp_buffered.load(Relaxed) + n > SESSION_UDP_BUFFERED;
        if st.queue.len() >= FLOW_QUEUE || st.queued_bytes + n > FLOW_QUEUE_BYTES || session_full {
            st.dropped += 1;
            self.metrics.udp_dropped(UdpDrop::QueueFull);
            return Ok(());
        }
        // A small datagram would pin the whole WebSocket message it arrived in: copy it.
        let payload = if n < 1024 {
            Bytes::copy_from_slice(&payload)
        } else {
            payload
        };
        st.queued_bytes += n;
        self.udp_buffered.fetch_add(n, Relaxed);
        st.queue.push_back(payload);
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        Ok(())
    }

    /// The peer answered a flow we opened; false when `id` is not a flow of ours.
    pub(super) fn flow_answered(&self, id: u32, answer: OpenResult) -> Result<bool, String> {
        let Some(flow) = self.flow(id) else {
            return Ok(false);
        };
        let refused = answer.as_ref().err().map(|(_, why)| why.clone());
        let opening = std::mem::replace(&mut flow.lock().handshake, Handshake::Done);
        let Handshake::Opening(tx) = opening else {
            return Err(format!("answer for flow {id} that is not opening"));
        };
        // The opener may have given up (an early open): the flow's end says why.
        let _ = tx.try_send(answer);
        if let Some(why) = refused {
            flow.lock().over = Some(format!("refused by peer: {why}"));
            self.forget_flow(id);
        }
        Ok(true)
    }

    /// The peer ended a flow (RESET, or FIN); false when `id` is not a flow.
    pub(super) fn flow_ended_by_peer(&self, id: u32, reason: &str) -> bool {
        let Some(flow) = self.flow(id) else {
            return false;
        };
        {
            let mut st = flow.lock();
            if let Handshake::Opening(tx) = std::mem::replace(&mut st.handshake, Handshake::Done) {
                let _ = tx.try_send(Err((RefuseCode::Other, reason.to_string())));
            }
            st.over = Some(format!("ended by peer: {reason}"));
        }
        self.forget_flow(id);
        true
    }

    /// The session is over: every flow ends.
    pub(super) fn end_flows(&self, flows: HashMap<u32, Arc<FlowShared>>, reason: &str) {
        metrics_inc(&self.metrics.udp_flows, -(flows.len() as i64));
        for (_, f) in flows {
            let held = f.end(format!("session ended: {reason}"));
            self.udp_buffered.fetch_sub(held, Relaxed);
        }
    }

    /// The code to send the peer for `code`: one it knows (an older peer gets Unreachable
    /// for Refused, which came with the `udp` capability).
    pub(super) fn code_for_peer(&self, code: RefuseCode) -> RefuseCode {
        match code {
            RefuseCode::Refused if !self.cfg.udp => RefuseCode::Unreachable,
            c => c,
        }
    }

    /// A peer's OPEN with a UDP target: a pending flow and its [`Incoming`], or the refusal
    /// (already sent).
    pub(super) fn open_flow_from_peer(
        self: &Arc<Self>,
        state: &mut State,
        id: u32,
        target: &OpenTarget,
    ) -> Result<Arc<FlowShared>, (RefuseCode, &'static str)> {
        if state.streams.len() + state.flows.len() >= self.cfg.max_streams {
            return Err((
                Refusal::TooManyStreams.wire_code(),
                "too many streams (--max-streams)",
            ));
        }
        if state.pending_flows.len() >= MAX_PENDING_STREAMS {
            return Err((
                Refusal::TooManyStreams.wire_code(),
                "too many streams waiting to be accepted",
            ));
        }
        let flow = Arc::new(FlowShared::new(id, target, Handshake::Pending));
        state.flows.insert(id, flow.clone());
        state.pending_flows.insert(id);
        Ok(flow)
    }
}

impl Session {
    /// Opens a UDP flow to `target` (one of the UDP targets) and waits for the peer's answer.
    /// A peer without the `udp` capability is never asked: [`OpenError::Unsupported`].
    pub async fn open_udp(&self, target: OpenTarget) -> Result<UdpFlow, OpenError> {
        let (flow, rx) = self.start_udp(target)?;
        match rx.recv().await {
            Ok(Ok(())) => Ok(flow),
            Ok(Err((code, reason))) => Err(OpenError::Refused { code, reason }),
            Err(_) => Err(OpenError::Closed(self.close_reason().unwrap_or_default())),
        }
    }

    /// Opens a UDP flow without waiting for the answer: datagrams may be sent at once and
    /// travel right behind the OPEN (the peer holds them, within its queue, until it
    /// accepts). A refusal ends the flow: `recv` returns `None` and [`UdpFlow::over`] says why.
    pub fn open_udp_early(&self, target: OpenTarget) -> Result<UdpFlow, OpenError> {
        self.start_udp(target).map(|(flow, _)| flow)
    }

    fn start_udp(&self, target: OpenTarget) -> Result<(UdpFlow, Receiver<OpenResult>), OpenError> {
        let sh = &self.shared;
        if !target.is_udp() {
            return Err(OpenError::Unsupported("a UDP flow needs a UDP target"));
        }
        if !sh.cfg.udp {
            return Err(OpenError::Unsupported(
                "the peer does not understand UDP flows (an older burrow)",
            ));
        }
        let (tx, rx) = smol::channel::bounded(1);
        let flow = {
            let mut state = sh.lock_state();
            let id = sh.next_open_id(&mut state)?;
            let flow = Arc::new(FlowShared::new(id, &target, Handshake::Opening(tx)));
            state.flows.insert(id, flow.clone());
            // Queued under the lock: OPENs go out in id order.
            sh.send_frame(Frame::Open {
                id,
                window: EARLY_DATA,
                target,
            });
            flow
        };
        sh.flow_opened();
        Ok((
            UdpFlow {
                shared: sh.clone(),
                flow,
            },
            rx,
        ))
    }

    /// True when the peer announced the `udp` capability: UDP flows and BIND udp may be sent.
    pub fn peer_udp(&self) -> bool {
        self.shared.cfg.udp
    }

    /// UDP flows open now (both sides' flows).
    pub fn udp_flow_count(&self) -> usize {
        self.shared.lock_state().flows.len()
    }

    /// Bytes of datagrams the session's flows hold for their readers now (at most
    /// [`SESSION_UDP_BUFFERED`]).
    pub fn udp_buffered(&self) -> usize {
        self.shared.udp_buffered.load(Relaxed)
    }
}

impl Incoming {
    /// Confirms a UDP flow the peer opened (OPEN_OK) and returns it. Call it for UDP targets
    /// ([`OpenTarget::is_udp`]) only.
    pub fn accept_udp(mut self) -> UdpFlow {
        let flow = self
            .flow
            .take()
            .expect("accept_udp on an Incoming of a UDP target");
        let answered = self.shared.lock_state().pending_flows.remove(&flow.id);
        if answered {
            let mut st = flow.lock();
            if matches!(st.handshake, Handshake::Pending) {
                st.handshake = Handshake::Done;
            }
            drop(st);
            // A flow has no window; the field is what every OPEN_OK carries at least.
            self.shared.send_frame(Frame::OpenOk {
                id: flow.id,
                window: EARLY_DATA,
            });
        }
        UdpFlow {
            shared: self.shared.clone(),
            flow,
        }
    }
}
