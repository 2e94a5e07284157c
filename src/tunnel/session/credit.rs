//! Flow control in one place: the session budget that every receive window draws on, window
//! growth, the early-data reservation of pending streams, and the cap on queued DATA.
//!
//! Invariants: a stream's `recv_avail + unacked + recv_len <= recv_window <= max_window`
//! (the peer's credit, what was read but not yet granted back, and what waits to be read); the
//! budget is `window_budget` minus every window taken and every reservation held.

use super::*;

/// Smallest window a stream gets when the budget is spent: never below what an opener may
/// send early.
const MIN_WINDOW: u32 = EARLY_DATA;
/// Windows grow when half of one was read within two round trips, and never on less than
/// this (about a timer tick).
const GROWTH_FLOOR: Duration = Duration::from_millis(2);
/// Assumed round trip until the first pong.
const UNMEASURED_RTT: Duration = Duration::from_millis(10);

impl Shared {
    /// Takes a new stream's receive window from the session budget.
    pub(super) fn take_window(&self) -> u32 {
        let want = self.cfg.initial_window;
        if self.budget.fetch_sub(i64::from(want), Relaxed) >= i64::from(want) {
            return want;
        }
        self.budget
            .fetch_add(i64::from(want) - i64::from(MIN_WINDOW), Relaxed);
        MIN_WINDOW
    }

    /// Reserves the early data of a stream the peer opened (until it is answered).
    pub(super) fn reserve_early(&self) -> u32 {
        self.budget.fetch_sub(i64::from(EARLY_DATA), Relaxed);
        self.pending.fetch_add(1, Relaxed);
        EARLY_DATA
    }

    /// A pending stream was answered: its early-data reservation goes back to the budget.
    /// The caller cleared the stream's `pending` flag (so this runs once per stream).
    pub(super) fn answered(&self) {
        self.budget.fetch_add(i64::from(EARLY_DATA), Relaxed);
        self.pending.fetch_sub(1, Relaxed);
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
        let mut grow = 0;
        if fast && st.recv_window < self.cfg.max_window {
            let want = st.recv_window.min(self.cfg.max_window - st.recv_window);
            if self.budget.fetch_sub(i64::from(want), Relaxed) >= i64::from(want) {
                grow = want;
            } else {
                self.budget.fetch_add(i64::from(want), Relaxed);
            }
        }
        // The peer's credit plus what was read since the last WINDOW never exceeds the window,
        // which never exceeds max_window: none of these sums can wrap. Should one ever, the
        // peer gets no credit rather than wrapped credit.
        let window = st.recv_window.checked_add(grow);
        let increment = st.unacked.checked_add(grow);
        let avail = increment.and_then(|i| st.recv_avail.checked_add(i));
        let (Some(window), Some(increment), Some(avail)) = (window, increment, avail) else {
            self.budget.fetch_add(i64::from(grow), Relaxed);
            return None;
        };
        st.recv_window = window;
        st.last_update = now;
        st.unacked = 0;
        st.recv_avail = avail;
        Some(increment)
    }
}
