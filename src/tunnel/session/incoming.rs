//! Streams the peer opened, waiting for the role to accept or refuse them.

use super::*;

/// A stream the peer opened, waiting for us to connect it.
pub struct Incoming {
    /// the stream (usable once accepted)
    pub(super) stream: Option<MuxStream>,
    /// the flow, when the target is a UDP one (usable once accepted)
    pub(super) flow: Option<Arc<udp::FlowShared>>,
    /// what the peer asks it to be connected to
    pub target: OpenTarget,
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("session", &self.shared.label)
            .field("id", &self.id())
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// The stream id the peer chose (0 once answered).
    pub fn id(&self) -> u32 {
        match (&self.stream, &self.flow) {
            (Some(s), _) => s.id(),
            (None, Some(f)) => f.id,
            (None, None) => 0,
        }
    }

    /// Confirms the stream (OPEN_OK) and returns it.
    pub fn accept(mut self) -> MuxStream {
        let stream = self
            .stream
            .take()
            .expect("an Incoming holds its stream until accepted");
        let window = match self.shared.stream_shared(stream.id()) {
            Some(sh) => {
                let mut st = sh.lock();
                // Still pending (not reset by the peer, session not closed): trade the
                // early-data reservation for a full window.
                if st.take_pending() {
                    self.shared.budget().answered();
                    let window = self.shared.take_window();
                    // What arrived early counts against the window we grant. Every window is
                    // at least EARLY_DATA unless `initial_window` is configured below it, when
                    // the peer gets no credit until the early bytes are read.
                    st.recv_window.accept(window);
                    window
                } else {
                    0
                }
            }
            None => 0,
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

    /// Logs a refusal of this stream as a WARN line of session `label`, rate-limited per
    /// session (a peer that makes us refuse thousands of OPENs gets a few lines and a count).
    pub(crate) fn warn_refusal(&self, label: &str, line: std::fmt::Arguments<'_>) {
        self.shared.warn_refusal(label, line);
    }

    fn refuse_inner(&mut self, code: RefuseCode, reason: &str) {
        let code = self.shared.code_for_peer(code);
        if let Some(flow) = self.flow.take() {
            self.shared.refused.fetch_add(1, Relaxed);
            if self.shared.forget_flow(flow.id).is_some() {
                self.shared.send_frame(Frame::OpenRefused {
                    id: flow.id,
                    code,
                    reason: reason.to_string(),
                });
            }
        }
        if let Some(stream) = self.stream.take() {
            let id = stream.id();
            self.shared.refused.fetch_add(1, Relaxed);
            // Leave the table first so dropping the handle sends no RESET. A stream that left
            // already (reset by the peer, session closed) needs no answer.
            if self.shared.forget(id).is_some() {
                self.shared.send_frame(Frame::OpenRefused {
                    id,
                    code,
                    reason: reason.to_string(),
                });
            }
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.refuse_inner(RefuseCode::Other, "not accepted");
    }
}
