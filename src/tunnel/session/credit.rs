//! The session's side of flow control: the [`Budget`] behind its lock, and what a stream's
//! reads earn the peer. The arithmetic itself is in [`crate::tunnel::flow`].

use super::*;
use crate::tunnel::flow::Budget;

impl Shared {
    /// The session budget. A leaf lock: taken under the state or a stream lock, never the
    /// other way round.
    pub(super) fn budget(&self) -> MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a new stream's receive window from the session budget.
    pub(super) fn take_window(&self) -> u32 {
        self.budget().take_window(self.cfg.initial_window)
    }

    /// Decides whether the application's reads earn the peer a WINDOW (see
    /// [`crate::tunnel::flow::RecvWindow::update`]); none once the stream is finished or failed.
    pub(crate) fn window_update(&self, st: &mut StreamState) -> Option<u32> {
        if st.half_close.received() || st.error.is_some() {
            return None;
        }
        let srtt = match self.srtt_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        };
        st.recv_window.update(
            Instant::now(),
            srtt,
            self.cfg.max_window,
            &mut self.budget(),
        )
    }
}
