//! Frames from the peer: checks (ids, windows, order) and their effect on the stream table.

use super::*;
use crate::tunnel::flow::FlowError;

impl Shared {
    /// True when `id` has the peer's parity.
    fn is_peer_id(&self, id: u32) -> bool {
        (id % 2 == 1) == (self.side == Side::Relay)
    }

    /// True when `id` was in use once (a late frame after a reset is not a violation).
    pub(super) fn was_known(&self, state: &State, id: u32) -> bool {
        if self.is_peer_id(id) {
            id <= state.peer_max_id
        } else {
            id < state.next_id
        }
    }

    /// Looks up a stream for a frame; `Ok(None)` for a stream that ended already. A UDP
    /// flow gets no stream frames (DATA, WINDOW).
    fn find(&self, id: u32) -> Result<Option<Arc<StreamShared>>, String> {
        let state = self.lock_state();
        match state.streams.get(&id) {
            Some(s) => Ok(Some(s.clone())),
            None if state.flows.contains_key(&id) => {
                Err(format!("a stream frame for UDP flow {id}"))
            }
            None if self.was_known(&state, id) => Ok(None),
            None => Err(format!("frame for unknown stream {id}")),
        }
    }

    /// Dispatches one frame from the peer. `Err` is a protocol violation that ends the session.
    pub(super) fn handle(self: &Arc<Self>, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Open { id, window, target } => self.handle_open(id, window, target),
            Frame::OpenOk { id, window } => {
                if self.flow_answered(id, Ok(()))? {
                    return Ok(());
                }
                self.handle_open_ok(id, window)
            }
            Frame::OpenRefused { id, code, reason } => {
                if self.flow_answered(id, Err((code, reason.clone())))? {
                    self.refused.fetch_add(1, Relaxed);
                    return Ok(());
                }
                self.handle_open_refused(id, code, reason)
            }
            Frame::Data { id, payload } => self.handle_data(id, payload),
            Frame::Dgram { id, payload } => self.handle_dgram(id, payload),
            Frame::Window { id, increment } => self.handle_window(id, increment),
            Frame::Fin { id } if self.flow_ended_by_peer(id, "finished") => Ok(()),
            Frame::Reset { id, ref reason, .. } if self.flow_ended_by_peer(id, reason) => Ok(()),
            Frame::Fin { id } => {
                if let Some(s) = self.find(id)? {
                    let mut st = s.lock();
                    st.fin_received();
                    st.wake_all();
                }
                Ok(())
            }
            Frame::Reset { id, reason, .. } => {
                if let Some(s) = self.forget(id) {
                    let mut st = s.lock();
                    if let Some(tx) = st.take_opening() {
                        let _ = tx.try_send(Err((RefuseCode::Other, reason.clone())));
                    }
                    let why = format!("reset by peer: {reason}");
                    st.fail(io::ErrorKind::ConnectionReset, why);
                }
                Ok(())
            }
            Frame::GoAway { ref reason } => {
                log::info!("session {}: peer is going away: {reason}", self.label);
                let mut st = self.lock_state();
                st.peer_going_away = true;
                st.peer_going_away_why = Some(reason.clone());
                drop(st);
                self.to_role(frame)
            }
            other => self.to_role(other),
        }
    }

    fn handle_open_ok(&self, id: u32, window: u32) -> Result<(), String> {
        let Some(s) = self.find(id)? else {
            return Ok(());
        };
        let mut st = s.lock();
        let Some(tx) = st.take_opening() else {
            return Err(format!("OPEN_OK for stream {id} that is not opening"));
        };
        if window < EARLY_DATA {
            return Err(format!(
                "OPEN_OK for stream {id} with a window below EARLY_DATA"
            ));
        }
        // The window counts what was already sent early (at most EARLY_DATA, since no
        // WINDOW may arrive before OPEN_OK; checked all the same).
        if st.send.open_ok(window).is_err() {
            return Err(format!(
                "OPEN_OK for stream {id} with a window below the early data sent"
            ));
        }
        if let Some(w) = st.writer.take() {
            w.wake();
        }
        // The opener may have given up (timeout); then the drop sends RESET.
        let _ = tx.try_send(Ok(()));
        Ok(())
    }

    fn handle_open_refused(&self, id: u32, code: RefuseCode, reason: String) -> Result<(), String> {
        let Some(s) = self.forget(id) else {
            return Ok(());
        };
        let mut st = s.lock();
        st.fail(io::ErrorKind::ConnectionRefused, reason.clone());
        match st.take_opening() {
            Some(tx) => {
                let _ = tx.try_send(Err((code, reason)));
                Ok(())
            }
            None => Err(format!("OPEN_REFUSED for stream {id} that is not opening")),
        }
    }

    fn handle_data(
        &self,
        id: u32,
        payload: async_tungstenite::tungstenite::Bytes,
    ) -> Result<(), String> {
        let Some(s) = self.find(id)? else {
            return Ok(());
        };
        let mut st = s.lock();
        if st.half_close.received() {
            return Err(format!("DATA after FIN on stream {id}"));
        }
        let n = payload.len();
        if st.error.is_some() {
            // We reset it; the peer has not seen that yet. Its credit still counts.
            if st.recv_window.avail() < u32::try_from(n).unwrap_or(u32::MAX) {
                return Err(format!("DATA past the window on stream {id}"));
            }
            return Ok(());
        }
        if st.recv_window.received(n).is_err() {
            return Err(format!("DATA past the window on stream {id}"));
        }
        st.recv.push_back(payload);
        self.metrics.bytes_in.fetch_add(n as u64, Relaxed);
        self.bytes_received.fetch_add(n as u64, Relaxed);
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        Ok(())
    }

    fn handle_window(&self, id: u32, increment: u32) -> Result<(), String> {
        let Some(s) = self.find(id)? else {
            return Ok(());
        };
        let mut st = s.lock();
        // Before OPEN_OK our credit is the early data; the peer's window arrives with
        // OPEN_OK, which counts what was sent early.
        match st.send.grant(increment) {
            Ok(()) => {}
            Err(FlowError::WindowWhileOpening) => {
                return Err(format!("WINDOW on stream {id} that is still opening"));
            }
            Err(_) => return Err(format!("window overflow on stream {id}")),
        }
        if let Some(w) = st.writer.take() {
            w.wake();
        }
        Ok(())
    }

    /// Hands a session frame to the role. The queue is bounded: a peer that sends session
    /// frames faster than they are handled is breaking the protocol, not queueing work.
    fn to_role(&self, frame: Frame) -> Result<(), String> {
        // Only this task sends on the queue, so it cannot pass the cap between the check and
        // the send.
        if self.session_frames.0.len() >= MAX_QUEUED_SESSION_FRAMES {
            return Err("too many session frames in flight".to_string());
        }
        // Closed: the session is ending anyway.
        let _ = self.session_frames.0.try_send(frame);
        Ok(())
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
            if window < EARLY_DATA {
                return Err(format!(
                    "OPEN for stream {id} with a window below EARLY_DATA"
                ));
            }
            // After our GO_AWAY, OPENs still arrive that the peer sent before it read it (a
            // relay hands a pool visitor to a member in the instant the member goes away):
            // they are served, within the drain. The peer opens none once it has read it.
            if state.closed.is_some() {
                drop(state);
                refuse(RefuseCode::GoingAway, "going away");
                return Ok(());
            }
            // Only this task adds pending streams, so the count cannot pass the cap between
            // this check and `reserve_early`.
            let full = if state.streams.len() + state.flows.len() >= self.cfg.max_streams {
                Some("too many streams (--max-streams)")
            } else if self.budget().pending() >= MAX_PENDING_STREAMS {
                Some("too many streams waiting to be accepted")
            } else {
                None
            };
            if let Some(why) = full {
                drop(state);
                self.metrics.refused(Refusal::TooManyStreams);
                self.warn_refusal(&self.label, format_args!("refused stream {id}: {why}"));
                refuse(Refusal::TooManyStreams.wire_code(), why);
                return Ok(());
            }
            if target.is_udp() {
                let flow = self.open_flow_from_peer(&mut state, id, &target);
                drop(state);
                let flow = match flow {
                    Ok(flow) => flow,
                    Err((code, why)) => {
                        self.metrics.refused(Refusal::TooManyStreams);
                        self.warn_refusal(&self.label, format_args!("refused flow {id}: {why}"));
                        refuse(code, why);
                        return Ok(());
                    }
                };
                self.flow_opened();
                let incoming = Incoming {
                    stream: None,
                    flow: Some(flow),
                    target,
                    shared: self.clone(),
                };
                // As for streams below: never full, bounded by the pending count.
                let _ = self.incoming.0.try_send(incoming);
                return Ok(());
            }
            // Until we answer, only early data may arrive: the stream's window is the
            // EARLY_DATA it reserves of the session budget; accepting it takes a full window.
            let reserved = self.budget().reserve_early();
            let stream = Arc::new(StreamShared::new(
                id,
                reserved,
                flow::SendCredit::granted(window),
                Handshake::Pending,
            ));
            state.streams.insert(id, stream.clone());
            self.open_streams.set(state.streams.len());
            stream
        };
        self.stream_opened();
        let incoming = Incoming {
            stream: Some(self.stream_handle(stream)),
            flow: None,
            target,
            shared: self.clone(),
        };
        // Never full (unbounded, and it holds only pending streams: at most
        // MAX_PENDING_STREAMS); closed: the session is ending, the Incoming comes back and its
        // drop refuses it.
        let _ = self.incoming.0.try_send(incoming);
        Ok(())
    }
}
