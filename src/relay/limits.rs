//! Relay-wide limits: connections at the front door, tunnel sessions (in total and per
//! token), streams of all sessions, and dials in progress. Each limit is a counter behind a
//! permit that gives its slot back when dropped, so no code path can leak a slot.
//!
//! Defaults keep a 1-GiB VPS alive (see `RelayLimits::default` for the arithmetic).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections not yet upgraded may hold at most `max_connections / PRE_UPGRADE_SHARE`: a
/// flood of unfinished heads (up to 64 KiB buffered each) then leaves room for tunnels.
pub const PRE_UPGRADE_SHARE: usize = 4;

/// A repeated refusal is logged at most `LOG_BURST` times per `LOG_INTERVAL`; the next line
/// says how many were left out. A flood must not turn into a flood of log lines.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// See [`LOG_INTERVAL`].
pub const LOG_BURST: u64 = 3;

/// The relay-wide limits. Every field is at least 1 (the CLI refuses 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// connections open at the public port, upgraded or not; a quarter of them
    /// ([`PRE_UPGRADE_SHARE`]) may be not yet upgraded
    pub max_connections: usize,
    /// tunnel sessions at once
    pub max_sessions: usize,
    /// tunnel sessions at once with one token, unless the token sets its own
    /// `max-sessions` (with `--no-auth`: from one client address)
    pub max_sessions_per_token: usize,
    /// streams of all sessions at once
    pub max_streams_total: usize,
    /// `-L` targets being dialed at once; an OPEN beyond it is refused at once
    pub max_dials: usize,
}

impl Default for RelayLimits {
    /// Sized for a 1-GiB VPS with a 65,536-descriptor limit (worst cases, every peer hostile
    /// or stalled at once; about 860 MiB together, 575 MiB with `--no-resume`):
    /// - connections 1024: 256 unfinished heads × 64 KiB = 16 MiB, one descriptor each;
    /// - sessions 32: a session may make us buffer its window budget (8 MiB), its writer
    ///   queue (2 MiB) and its queue of session frames (512 KiB), and, resumable, keep what
    ///   the peer has not acknowledged (8 MiB of DATA, 1 MiB of other frames):
    ///   32 × 19.5 MiB = 624 MiB (336 MiB without resumption);
    /// - streams 8192: beyond the budgets each stream keeps at least a 16-KiB window, parks
    ///   up to 8 KiB in its copy and about 3 KiB of state: 8192 × 27 KiB = 216 MiB, and one
    ///   descriptor each, well under the limit together with the connections;
    /// - dials 256: a dial holds a socket, a timer and up to 16 KiB of early data (about
    ///   21 KiB measured): 6 MiB, and a hanging target can pin no more than that.
    fn default() -> Self {
        RelayLimits {
            max_connections: 1024,
            max_sessions: 32,
            // With one shared token, as many as the total; per-client tokens set their own.
            max_sessions_per_token: 32,
            max_streams_total: 8192,
            max_dials: 256,
        }
    }
}

/// A counter with a cap; `try_take` hands out a permit that gives the slot back on drop.
#[derive(Debug)]
pub struct Counter {
    used: AtomicUsize,
    /// changed by a reload: slots taken beyond a lowered cap are kept until given back
    cap: AtomicUsize,
}

impl Counter {
    /// A counter allowing `cap` at once.
    pub fn new(cap: usize) -> Arc<Counter> {
        Arc::new(Counter {
            used: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap),
        })
    }

    /// One slot, or `None` when all `cap` are taken.
    pub fn try_take(self: &Arc<Self>) -> Option<Permit> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap()).then_some(n + 1)
            })
            .ok()?;
        Some(Permit(self.clone()))
    }

    /// Slots taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::Acquire)
    }

    /// A new cap for the next `try_take` (a reload).
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Release);
    }
}

/// One slot of a [`Counter`], given back when dropped.
#[derive(Debug)]
pub struct Permit(Arc<Counter>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's slots: one of all connections, and one of the pre-upgrade share until
/// the connection becomes a tunnel session.
#[derive(Debug)]
pub struct ConnPermit {
    _all: Permit,
    front: Option<Permit>,
}

impl ConnPermit {
    /// The connection is a tunnel session now: it leaves the pre-upgrade share.
    pub fn upgraded(&mut self) {
        self.front = None;
    }
}

/// Why a session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    /// `max_sessions` are connected
    Total(usize),
    /// this many are connected with this token (its `max-sessions`, or
    /// `max_sessions_per_token`; with `--no-auth`: from this address)
    PerToken(usize),
}

impl std::fmt::Display for SessionRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionRefusal::Total(n) => write!(f, "relay full: {n} sessions (--max-sessions)"),
            SessionRefusal::PerToken(n) => {
                write!(f, "{n} sessions with this token (its max-sessions)")
            }
        }
    }
}

/// Sessions by principal (the token's name, or the client address with `--no-auth`).
#[derive(Debug)]
pub struct Sessions {
    by_key: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    /// `max_sessions`, changed by a reload (sessions beyond a lowered cap stay)
    max: AtomicUsize,
}

/// A session's slots, given back when dropped.
#[derive(Debug)]
pub struct SessionPermit {
    sessions: Arc<Sessions>,
    key: String,
}

impl Sessions {
    fn new(max: usize) -> Arc<Sessions> {
        Arc::new(Sessions {
            by_key: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        })
    }

    /// A new `max_sessions` for the next admission (a reload).
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
    }

    /// Admits a session of `key`, of which at most `max_per_key` may be open (the token's
    /// `max-sessions`, or `--max-sessions-per-token`). `replacing`: the same client's earlier session is still
    /// registered and is about to be closed for this one, so the count does not really grow
    /// (a client must be able to come back while its stale session is not yet noticed dead).
    pub fn admit(
        self: &Arc<Self>,
        key: &str,
        max_per_key: usize,
        replacing: bool,
    ) -> Result<SessionPermit, SessionRefusal> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.total.load(Ordering::Acquire);
        let max = self.max.load(Ordering::Acquire);
        let mine = by_key.get(key).copied().unwrap_or(0);
        if !replacing {
            if total >= max {
                return Err(SessionRefusal::Total(max));
            }
            if mine >= max_per_key {
                return Err(SessionRefusal::PerToken(max_per_key));
            }
        }
        by_key.insert(key.to_string(), mine.saturating_add(1));
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(SessionPermit {
            sessions: self.clone(),
            key: key.to_string(),
        })
    }

    /// Sessions admitted now.
    pub fn count(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut by_key = self
            .sessions
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match by_key.get_mut(&self.key) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                by_key.remove(&self.key);
            }
        }
        self.sessions.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lets a repeated log line through `LOG_BURST` times per `LOG_INTERVAL`, and counts the
/// rest so the next line that passes can say how many were left out.
#[derive(Debug, Default)]
pub struct RateLog {
    window: Mutex<Option<(Instant, u64)>>,
    suppressed: AtomicU64,
}

impl RateLog {
    /// `Some(left_out)` when this occurrence should be logged (with how many were left out
    /// since the last logged one), `None` when it should be counted only.
    pub fn hit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (start, n) = w.get_or_insert((now, 0));
        if now.duration_since(*start) >= LOG_INTERVAL {
            *start = now;
            *n = 0;
        }
        if *n < LOG_BURST {
            *n += 1;
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// `"; N more since"` for a log line, or nothing.
pub fn left_out(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more like this not logged)")
    }
}

/// The relay's limit state, shared by every connection task.
#[derive(Debug)]
pub struct Limiter {
    /// the limits configured at start (a reload changes the counters' caps, not this)
    pub cfg: RelayLimits,
    conns: Arc<Counter>,
    front: Arc<Counter>,
    /// tunnel sessions
    pub sessions: Arc<Sessions>,
    /// dials in progress
    pub dials: Arc<Counter>,
    /// log limiters, one per kind of refusal
    pub logs: Logs,
}

/// One [`RateLog`] per kind of refusal.
#[derive(Debug, Default)]
pub struct Logs {
    /// connections over `max_connections` or the pre-upgrade share
    pub conns: RateLog,
    /// sessions over a session limit
    pub sessions: RateLog,
    /// streams over `max_streams_total`
    pub streams: RateLog,
    /// OPENs over `max_dials`
    pub dials: RateLog,
    /// wrong or missing tokens, and malformed upgrades
    pub auth: RateLog,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// all `max_connections` are taken
    All(usize),
    /// the pre-upgrade share is taken
    PreUpgrade(usize),
}

impl std::fmt::Display for ConnRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnRefusal::All(n) => write!(f, "{n} connections open (--max-connections)"),
            ConnRefusal::PreUpgrade(n) => write!(
                f,
                "{n} connections not yet upgraded (a 1/{PRE_UPGRADE_SHARE} share of --max-connections)"
            ),
        }
    }
}

impl Limiter {
    /// The state for `cfg`.
    pub fn new(cfg: RelayLimits) -> Limiter {
        Limiter {
            conns: Counter::new(cfg.max_connections),
            front: Counter::new((cfg.max_connections / PRE_UPGRADE_SHARE).max(1)),
            sessions: Sessions::new(cfg.max_sessions),
            dials: Counter::new(cfg.max_dials),
            logs: Logs::default(),
            cfg,
        }
    }

    /// Admits a new connection at the front door (it starts in the pre-upgrade share).
    pub fn admit_conn(&self) -> Result<ConnPermit, ConnRefusal> {
        let all = self
            .conns
            .try_take()
            .ok_or(ConnRefusal::All(self.conns.cap()))?;
        let front = self
            .front
            .try_take()
            .ok_or(ConnRefusal::PreUpgrade(self.front.cap()))?;
        Ok(ConnPermit {
            _all: all,
            front: Some(front),
        })
    }

    /// Applies a reload's limits: sessions and dials at once (slots beyond a lowered cap
    /// are kept until given back). Connections keep the caps they started with: the accept
    /// loop's bound is fixed when it starts. Returns a line per change.
    pub fn apply(&self, old: &RelayLimits, new: &RelayLimits) -> Vec<String> {
        let mut lines = Vec::new();
        if old.max_sessions != new.max_sessions {
            self.sessions.set_max(new.max_sessions);
            lines.push(format!(
                "max-sessions {} -> {}",
                old.max_sessions, new.max_sessions
            ));
        }
        if old.max_sessions_per_token != new.max_sessions_per_token {
            lines.push(format!(
                "max-sessions-per-token {} -> {}",
                old.max_sessions_per_token, new.max_sessions_per_token
            ));
        }
        if old.max_streams_total != new.max_streams_total {
            lines.push(format!(
                "max-streams-total {} -> {}",
                old.max_streams_total, new.max_streams_total
            ));
        }
        if old.max_dials != new.max_dials {
            self.dials.set_cap(new.max_dials);
            lines.push(format!("max-dials {} -> {}", old.max_dials, new.max_dials));
        }
        if old.max_connections != new.max_connections {
            lines.push(format!(
                "max-connections {} -> {}: takes effect after a restart",
                old.max_connections, new.max_connections
            ));
        }
        lines
    }

    /// Connections open now (all of them, and those not yet upgraded).
    pub fn conns(&self) -> (usize, usize) {
        (self.conns.used(), self.front.used())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_permits_count_and_give_back() {
        let l = Limiter::new(RelayLimits {
            max_connections: 8,
            ..RelayLimits::default()
        });
        let mut a = l.admit_conn().unwrap();
        let b = l.admit_conn().unwrap();
        // The pre-upgrade share of 8 is 2.
        assert_eq!(l.admit_conn().unwrap_err(), ConnRefusal::PreUpgrade(2));
        assert_eq!(l.conns(), (2, 2), "a refused connection holds nothing");
        a.upgraded();
        let c = l.admit_conn().unwrap();
        assert_eq!(l.conns(), (3, 2));
        drop((a, b, c));
        assert_eq!(l.conns(), (0, 0));
    }

    #[test]
    fn all_connections_cap_upgraded_ones_too() {
        let l = Limiter::new(RelayLimits {
            max_connections: 4,
            ..RelayLimits::default()
        });
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut p = l.admit_conn().unwrap();
            p.upgraded();
            held.push(p);
        }
        assert_eq!(l.admit_conn().unwrap_err(), ConnRefusal::All(4));
    }

    #[test]
    fn sessions_total_per_key_and_replacement() {
        let s = Sessions::new(4);
        let a1 = s.admit("a", 2, false).unwrap();
        let _a2 = s.admit("a", 2, false).unwrap();
        assert_eq!(
            s.admit("a", 2, false).unwrap_err(),
            SessionRefusal::PerToken(2)
        );
        let _b1 = s.admit("b", 1, false).unwrap();
        assert_eq!(
            s.admit("b", 1, false).unwrap_err(),
            SessionRefusal::PerToken(1),
            "each key has its own cap"
        );
        let _c1 = s.admit("c", 2, false).unwrap();
        assert_eq!(
            s.admit("d", 2, false).unwrap_err(),
            SessionRefusal::Total(4)
        );
        // A returning client replacing its own stale session is let in.
        let a3 = s.admit("a", 2, true).unwrap();
        assert_eq!(s.count(), 5);
        drop((a1, a3));
        assert_eq!(s.count(), 3);
        assert!(s.admit("d", 2, false).is_ok());
        // A reload lowers the total: sessions beyond it stay, new ones wait.
        s.set_max(2);
        assert_eq!(
            s.admit("e", 2, false).unwrap_err(),
            SessionRefusal::Total(2)
        );
    }

    #[test]
    fn rate_log_lets_a_burst_through_then_counts() {
        let r = RateLog::default();
        for _ in 0..LOG_BURST {
            assert_eq!(r.hit(), Some(0));
        }
        assert_eq!(r.hit(), None);
        assert_eq!(r.hit(), None);
        assert_eq!(r.suppressed.load(Ordering::Relaxed), 2);
    }
}
