//! The stream table: streams join it when opened and leave it in one place each (`forget`),
//! giving back their window; the session's end empties it and fails every stream.

use super::*;

pub(super) fn metrics_inc(g: &AtomicU64, by: i64) {
    if by >= 0 {
        g.fetch_add(by as u64, Relaxed);
    } else {
        g.fetch_sub(by.unsigned_abs(), Relaxed);
    }
}

impl Shared {
    pub(super) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stream_shared(&self, id: u32) -> Option<Arc<StreamShared>> {
        self.lock_state().streams.get(&id).cloned()
    }

    /// The id of a stream or flow we open now, unless the session is closed or going away
    /// or has `max_streams` of both open. Call it under the state lock, and queue the OPEN
    /// under it too: the peer must see OPENs in id order.
    pub(super) fn next_open_id(&self, state: &mut State) -> Result<u32, OpenError> {
        if let Some(why) = &state.closed {
            return Err(OpenError::Closed(why.clone()));
        }
        if state.peer_going_away || state.going_away {
            return Err(OpenError::Closed("going away".into()));
        }
        if state.streams.len() + state.flows.len() >= self.cfg.max_streams {
            return Err(OpenError::TooManyStreams);
        }
        let id = state.next_id;
        state.next_id = id
            .checked_add(2)
            .ok_or_else(|| OpenError::Closed("stream ids exhausted".into()))?;
        Ok(id)
    }

    pub(super) fn stream_opened(&self) {
        metrics_inc(&self.metrics.streams, 1);
        self.metrics.streams_total.fetch_add(1, Relaxed);
    }

    /// Removes a stream from the table without telling the peer; returns it if present.
    pub(super) fn forget(&self, id: u32) -> Option<Arc<StreamShared>> {
        let removed = {
            let mut state = self.lock_state();
            let removed = state.streams.remove(&id);
            // Set under the state lock, so the watched count follows the table in order.
            self.open_streams.set(state.streams.len());
            removed
        };
        if let Some(s) = &removed {
            let mut st = s.lock();
            if st.take_pending() {
                // Its window is the early-data reservation.
                self.budget().answered();
            } else {
                self.budget().give_back(st.recv_window.window());
            }
            drop(st);
            metrics_inc(&self.metrics.streams, -1);
        }
        removed
    }

    /// Logs a refused stream as a WARN, rate-limited per session.
    pub(crate) fn warn_refusal(&self, label: &str, line: fmt::Arguments<'_>) {
        self.refusal_log.warn(label, line);
    }

    /// A handle on `stream` for the application.
    pub(super) fn stream_handle(self: &Arc<Self>, stream: Arc<StreamShared>) -> MuxStream {
        MuxStream::new(stream, self.clone(), self.out.clone())
    }

    /// Queues a non-DATA frame; the reader stops reading the peer while too many wait.
    pub(crate) fn send_frame(&self, frame: Frame) {
        self.out.send_frame(frame);
    }

    /// True once the session is closed or asked to close: it ends with its connection.
    pub(super) fn closing(&self) -> bool {
        self.lock_state().closed.is_some()
            || self
                .close_requested
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
    }

    /// Marks the session closed: every stream fails, every waiter wakes.
    pub(super) fn close(&self, reason: &CloseReason) {
        let (streams, flows) = {
            let mut state = self.lock_state();
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(reason.to_string());
            self.open_streams.set(0);
            state.pending_flows.clear();
            (
                std::mem::take(&mut state.streams),
                std::mem::take(&mut state.flows),
            )
        };
        self.end_flows(flows, &reason.to_string());
        metrics_inc(&self.metrics.streams, -(streams.len() as i64));
        metrics_inc(&self.metrics.sessions, -1);
        for (_, s) in streams {
            let mut st = s.lock();
            if st.take_pending() {
                self.budget().answered();
            }
            if let Some(tx) = st.take_opening() {
                let _ = tx.try_send(Err((RefuseCode::GoingAway, reason.to_string())));
            }
            st.fail(
                io::ErrorKind::ConnectionAborted,
                format!("session ended: {reason}"),
            );
        }
        self.out.close();
        // What was queued or kept for a replay is of no use now.
        while self.out_rx.try_recv().is_ok() {}
        *self.replay.lock().unwrap_or_else(|e| e.into_inner()) = Default::default();
        self.incoming.0.close();
        self.session_frames.0.close();
        self.refusal_log.flush(&self.label);
        drop(
            self.closed_tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }
}

impl Owner for Shared {
    fn window_update(&self, st: &mut StreamState) -> Option<u32> {
        self.window_update(st)
    }

    /// The last handle of a stream is gone: it leaves the table, with a RESET unless both
    /// directions had finished.
    fn dropped(&self, stream: &Arc<StreamShared>) {
        if self.forget(stream.id).is_none() {
            return;
        }
        let st = stream.lock();
        let clean = st.half_close == HalfClose::Both;
        if !clean && st.error.is_none() {
            drop(st);
            self.send_frame(Frame::Reset {
                id: stream.id,
                code: RefuseCode::Other,
                reason: "stream dropped".into(),
            });
        }
    }
}
