//! Counters and gauges, rendered as Prometheus text for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The counters of refusals are keyed by the crate's one refusal type.
use crate::refusal::Refusal;

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
    /// sessions continued, streams and all, on a new connection
    pub resumes: AtomicU64,
    /// bytes (whole frames) sent again after a resume: what the peer had not received
    pub replayed_bytes: AtomicU64,
    refusals: [AtomicU64; Refusal::LABELS.len()],
}

impl Metrics {
    /// Counts one refusal.
    pub fn refused(&self, why: Refusal) {
        self.refusals[why.counter()].fetch_add(1, Relaxed);
    }

    /// How many refusals were counted under this refusal's label (see [`Refusal::label`]).
    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refusals[why.counter()].load(Relaxed)
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
        one(
            "resumes_total",
            "counter",
            "Sessions continued, streams and all, on a new connection.",
            self.resumes.load(Relaxed),
        );
        one(
            "replayed_bytes_total",
            "counter",
            "Frame bytes sent again after a resume (what the peer had not received).",
            self.replayed_bytes.load(Relaxed),
        );
        let _ = write!(
            out,
            "# HELP burrow_refusals_total Requests refused, by reason.\n# TYPE burrow_refusals_total counter\n"
        );
        for (i, name) in Refusal::LABELS.iter().enumerate() {
            let _ = writeln!(
                out,
                "burrow_refusals_total{{reason=\"{name}\"}} {}",
                self.refusals[i].load(Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scripts and dashboards read these lines: names, labels and order stay as they are.
    #[test]
    fn refusal_counters_keep_their_names_and_labels() {
        let m = Metrics::default();
        m.refused(Refusal::TooManyDials);
        m.refused(Refusal::GoingAway);
        let text = m.render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("burrow_refusals_total"))
            .collect();
        assert_eq!(
            lines,
            [
                "burrow_refusals_total{reason=\"auth\"} 0",
                "burrow_refusals_total{reason=\"forbidden\"} 0",
                "burrow_refusals_total{reason=\"unreachable\"} 1",
                "burrow_refusals_total{reason=\"timeout\"} 0",
                "burrow_refusals_total{reason=\"too_many_streams\"} 0",
                "burrow_refusals_total{reason=\"bad_request\"} 0",
                "burrow_refusals_total{reason=\"too_many_connections\"} 0",
                "burrow_refusals_total{reason=\"too_many_sessions\"} 0",
                "burrow_refusals_total{reason=\"too_many_dials\"} 1",
            ]
        );
        assert_eq!(m.refusals(Refusal::TooManyDials), 1);
        assert_eq!(m.refusals(Refusal::TooManyStreams), 0);
    }
}
