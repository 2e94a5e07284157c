//! The session's side of flow control: the [`Budget`] behind its lock, what a stream's reads
//! earn the peer, and the cap on queued DATA. The arithmetic itself is in [`super::flow`].

use super::flow::Budget;
use super::*;

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

    pub(super) fn drained(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Relaxed);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for w in waiters {
            w.wake();
        }
    }

    /// Decides whether the application's reads earn the peer a WINDOW (see
    /// [`super::flow::RecvWindow::update`]); none once the stream is finished or failed.
    pub(crate) fn window_update(&self, st: &mut StreamState) -> Option<u32> {
        if st.recv_fin || st.error.is_some() {
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
