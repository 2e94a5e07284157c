//! Counters and gauges, rendered as Prometheus text for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why something was refused; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// wrong or missing token / credentials
    Auth,
    /// target rules or `--allow-ports`
    Forbidden,
    /// target unreachable
    Unreachable,
    /// target too slow
    Timeout,
    /// `--max-streams` (per session) or the relay's `--max-streams-total` reached
    TooManyStreams,
    /// malformed request or frame
    BadRequest,
    /// the relay's `--max-connections` (or its pre-upgrade share) reached
    TooManyConnections,
    /// the relay's `--max-sessions` or `--max-sessions-per-token` reached
    TooManySessions,
    /// the relay's `--max-dials` reached
    TooManyDials,
}

const REFUSALS: [(Refusal, &str); 9] = [
    (Refusal::Auth, "auth"),
    (Refusal::Forbidden, "forbidden"),
    (Refusal::Unreachable, "unreachable"),
    (Refusal::Timeout, "timeout"),
    (Refusal::TooManyStreams, "too_many_streams"),
    (Refusal::BadRequest, "bad_request"),
    (Refusal::TooManyConnections, "too_many_connections"),
    (Refusal::TooManySessions, "too_many_sessions"),
    (Refusal::TooManyDials, "too_many_dials"),
];

/// All counters of one process role. Cheap to share (`Arc`), lock-free to update.
#[derive(Debug, Default)]
pub struct Metrics {
    /// tunnel sessions open now
    pub sessions: AtomicU64,
    /// tunnel sessions ever established
    pub sessions_total: AtomicU64,
    /// streams open now
    pub streams: AtomicU64,
    /// streams ever opened
    pub streams_total: AtomicU64,
    /// payload bytes received from peers
    pub bytes_in: AtomicU64,
    /// payload bytes sent to peers
    pub bytes_out: AtomicU64,
    /// sessions that resumed an earlier session id
    pub reconnects: AtomicU64,
    refusals: [AtomicU64; REFUSALS.len()],
}

impl Metrics {
    /// Counts one refusal.
    pub fn refused(&self, why: Refusal) {
        let i = REFUSALS.iter().position(|(r, _)| *r == why).unwrap_or(0);
        self.refusals[i].fetch_add(1, Relaxed);
    }

    /// How many refusals of this kind were counted.
    pub fn refusals(&self, why: Refusal) -> u64 {
        let i = REFUSALS.iter().position(|(r, _)| *r == why).unwrap_or(0);
        self.refusals[i].load(Relaxed)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP burrow_{name} {help}\n# TYPE burrow_{name} {kind}\nburrow_{name} {v}\n"
            );
        };
        one(
            "sessions",
            "gauge",
            "Tunnel sessions open now.",
            self.sessions.load(Relaxed),
        );
        one(
            "sessions_total",
            "counter",
            "Tunnel sessions established.",
            self.sessions_total.load(Relaxed),
        );
        one(
            "streams",
            "gauge",
            "Streams open now.",
            self.streams.load(Relaxed),
        );
        one(
            "streams_total",
            "counter",
            "Streams opened.",
            self.streams_total.load(Relaxed),
        );
        one(
            "bytes_in_total",
            "counter",
            "Payload bytes received from tunnel peers.",
            self.bytes_in.load(Relaxed),
        );
        one(
            "bytes_out_total",
            "counter",
            "Payload bytes sent to tunnel peers.",
            self.bytes_out.load(Relaxed),
        );
        one(
            "reconnects_total",
            "counter",
            "Sessions resumed by a returning client.",
            self.reconnects.load(Relaxed),
        );
        let _ = write!(
            out,
            "# HELP burrow_refusals_total Requests refused, by reason.\n# TYPE burrow_refusals_total counter\n"
        );
        for (i, (_, name)) in REFUSALS.iter().enumerate() {
            let _ = writeln!(
                out,
                "burrow_refusals_total{{reason=\"{name}\"}} {}",
                self.refusals[i].load(Relaxed)
            );
        }
        out
    }
}
