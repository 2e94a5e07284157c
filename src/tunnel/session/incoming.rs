//! Streams the peer opened, waiting for the role to accept or refuse them.

use super::*;

/// A stream the peer opened, waiting for us to connect it.
pub struct Incoming {
    /// the stream (usable once accepted)
    pub(super) stream: Option<MuxStream>,
    /// what the peer asks it to be connected to
    pub target: OpenTarget,
    pub(super) shared: Arc<Shared>,
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
