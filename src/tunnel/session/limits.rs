//! What a peer can make one session hold or log, capped: control frames waiting for the
//! writer (the reader stops reading the peer while they are over the cap), and repeated
//! refusal log lines (a few per interval, then one line with the count).

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Bytes of non-DATA frames (each costed with [`FRAME_OVERHEAD`]) that may wait for the
/// writer. Most are answers to the peer (OPEN_REFUSED, OPEN_OK, RESET, WINDOW): a peer that
/// keeps asking and never reads would otherwise make us queue without end. Over the cap the
/// reader stops reading the peer until the writer is below it again, so the peer's frames wait
/// in its own send buffer; a peer that never reads then goes silent to us and keepalive ends the
/// session. 512 KiB is about 5,000 refusals, or 10,000 OPENs of our own, far above what a
/// reading peer ever has waiting (a few hundred WINDOWs).
pub const MAX_QUEUED_CONTROL: usize = 512 * 1024;

/// What one queued frame costs besides its bytes: its allocation and its queue slot.
pub(super) const FRAME_OVERHEAD: usize = 64;

/// Refusal lines logged per session and interval; the rest are counted, then summed up in one.
const REFUSAL_LOG_BURST: u32 = 5;
/// The interval [`REFUSAL_LOG_BURST`] applies to: an attack floods the log with at most one
/// summary line per session per interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Bytes of control frames queued for the writer, and the reader waiting for room.
///
/// Invariant: `bytes` is the cost of the control frames in the writer's queue or in the batch
/// it is writing; it is added when a frame is queued and subtracted once it was flushed.
#[derive(Default)]
pub(super) struct ControlQueue {
    bytes: AtomicUsize,
    waiters: Mutex<Vec<Waker>>,
    /// set at the first pause: that one is logged as a WARN, later ones at debug level
    paused_once: AtomicBool,
}

impl ControlQueue {
    /// The cost of a control frame of `len` bytes.
    pub(super) fn cost(len: usize) -> usize {
        len.saturating_add(FRAME_OVERHEAD)
    }

    /// A control frame of cost `cost` was queued.
    pub(super) fn queued(&self, cost: usize) {
        self.bytes.fetch_add(cost, Relaxed);
    }

    /// The writer flushed control frames of total cost `cost`: wakes a waiting reader.
    pub(super) fn sent(&self, cost: usize) {
        if cost > 0 {
            self.bytes.fetch_sub(cost, Relaxed);
        }
        self.wake();
    }

    /// Wakes every waiter (the session is closing, or there is room).
    pub(super) fn wake(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for w in waiters {
            w.wake();
        }
    }

    /// True the first time the reader pauses on this queue (to log it once per session).
    pub(super) fn first_pause(&self) -> bool {
        !self.paused_once.swap(true, Relaxed)
    }

    /// Cost of the control frames waiting now.
    pub(super) fn bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }

    /// Resolves once the queue is below [`MAX_QUEUED_CONTROL`] (at once if it is, or if
    /// `closed` says the session is over). Woken by [`ControlQueue::sent`], never by a timer.
    /// Cancel-safe.
    pub(super) async fn room(&self, closed: impl Fn() -> bool) {
        std::future::poll_fn(|cx| {
            if self.bytes() < MAX_QUEUED_CONTROL || closed() {
                return Poll::Ready(());
            }
            self.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(cx.waker().clone());
            // Re-check: the writer may have drained between the load and the push.
            if self.bytes() < MAX_QUEUED_CONTROL || closed() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Rate limit for one kind of repeated log line of a session.
#[derive(Default)]
pub(crate) struct LogLimit {
    window: Mutex<LogWindow>,
}

#[derive(Default)]
struct LogWindow {
    /// start of the current interval (`None` before the first line)
    start: Option<Instant>,
    /// lines logged in the current interval (at most [`REFUSAL_LOG_BURST`])
    logged: u32,
    /// lines suppressed since the last summary
    suppressed: u64,
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it, after a summary of `suppressed` lines left out before it (when not 0).
    Log {
        /// lines suppressed since the last summary
        suppressed: u64,
    },
    /// Count it only.
    Suppress,
}

impl LogLimit {
    /// Decides about one line at `now`.
    pub(crate) fn check(&self, now: Instant) -> Verdict {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let expired = w
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= REFUSAL_LOG_INTERVAL);
        if expired {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < REFUSAL_LOG_BURST {
            w.logged += 1;
            Verdict::Log {
                suppressed: std::mem::take(&mut w.suppressed),
            }
        } else {
            w.suppressed = w.suppressed.saturating_add(1);
            Verdict::Suppress
        }
    }

    /// Lines suppressed and not summed up yet (for the summary when the session ends).
    pub(crate) fn take_suppressed(&self) -> u64 {
        std::mem::take(
            &mut self
                .window
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .suppressed,
        )
    }

    /// Logs `line` as a WARN for session `label`, unless rate-limited.
    pub(crate) fn warn(&self, label: &str, line: fmt::Arguments<'_>) {
        if let Verdict::Log { suppressed } = self.check(Instant::now()) {
            if suppressed > 0 {
                log::warn!("session {label}: {suppressed} more refusals suppressed");
            }
            log::warn!("session {label}: {line}");
        }
    }

    /// Logs the count of lines suppressed since the last summary, if any.
    pub(crate) fn flush(&self, label: &str) {
        let suppressed = self.take_suppressed();
        if suppressed > 0 {
            log::warn!("session {label}: {suppressed} more refusals suppressed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_interval_then_one_summary() {
        let limit = LogLimit::default();
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..100).map(|_| limit.check(t0)).collect();
        let logged = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Log { .. }))
            .count();
        assert_eq!(logged, REFUSAL_LOG_BURST as usize);
        assert_eq!(verdicts[0], Verdict::Log { suppressed: 0 });
        // Still within the interval: counted only.
        assert_eq!(
            limit.check(t0 + REFUSAL_LOG_INTERVAL / 2),
            Verdict::Suppress
        );
        // The next interval's first line carries the count of what was left out.
        let later = t0 + REFUSAL_LOG_INTERVAL;
        assert_eq!(limit.check(later), Verdict::Log { suppressed: 96 });
        assert_eq!(limit.check(later), Verdict::Log { suppressed: 0 });
        assert_eq!(limit.take_suppressed(), 0);
        for _ in 0..10 {
            limit.check(later);
        }
        assert_eq!(limit.take_suppressed(), 7);
    }
}
