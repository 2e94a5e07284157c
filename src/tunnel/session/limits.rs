//! What a peer can make one session log, capped: repeated refusal log lines (a few per
//! interval, then one line with the count). The caps on queued frames are in
//! [`crate::tunnel::outbox`].

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusal lines logged per session and interval; the rest are counted, then summed up in one.
const REFUSAL_LOG_BURST: u32 = 5;
/// The interval [`REFUSAL_LOG_BURST`] applies to: an attack floods the log with at most one
/// summary line per session per interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

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
