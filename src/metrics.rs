//! Counters and gauges, rendered as Prometheus text for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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
    /// UDP flows open now (tunnel flows of this process: `-L udp`, `-R udp`, associations)
    pub udp_flows: AtomicU64,
    /// UDP flows ever opened
    pub udp_flows_total: AtomicU64,
    /// datagrams received from tunnel peers
    pub udp_datagrams_in: AtomicU64,
    /// datagrams sent to tunnel peers
    pub udp_datagrams_out: AtomicU64,
    udp_dropped: [AtomicU64; UdpDrop::LABELS.len()],
    /// the relay's per-token series, by token name: only names from the configuration (and,
    /// after a reload removed one, until its last session is gone), so the set is bounded
    tokens: Mutex<BTreeMap<String, TokenSeries>>,
    /// the client's per-relay series, in config order: set once at start, so the set is the
    /// configuration's
    relays: Mutex<Vec<RelaySeries>>,
}

/// One relay's series (a client's).
#[derive(Debug)]
struct RelaySeries {
    url: String,
    /// connected now
    up: bool,
    /// connections after the first (new sessions and resumes)
    reconnects: u64,
}

/// One token's series.
#[derive(Debug, Default)]
struct TokenSeries {
    /// sessions open now
    sessions: u64,
    /// sessions over its cap, binds refused, and streams over a relay limit, of this token
    refusals: u64,
    /// the token is in the running configuration (else the series goes with its last session)
    configured: bool,
}

/// One open session of a token, counted in `burrow_token_sessions` until dropped.
#[derive(Debug)]
pub struct TokenSession {
    metrics: Arc<Metrics>,
    name: String,
}

impl Drop for TokenSession {
    fn drop(&mut self) {
        let mut tokens = self.metrics.lock_tokens();
        if let Some(t) = tokens.get_mut(&self.name) {
            t.sessions = t.sessions.saturating_sub(1);
            if t.sessions == 0 && !t.configured {
                tokens.remove(&self.name);
            }
        }
    }
}

/// Why a datagram was dropped: the `reason` label of `burrow_udp_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpDrop {
    /// a bounded queue (ours to the peer, a flow's from the peer, an association's) was full
    QueueFull,
    /// a new source address past the flows a listener may hold
    TooManyFlows,
    /// larger than a datagram may be (65,507 bytes), or than the far side can send
    TooLarge,
    /// the rules refuse its destination (an association's datagram)
    Forbidden,
    /// malformed (a SOCKS5 UDP header that does not parse, a fragment), or for a flow that
    /// is over
    Invalid,
}

impl UdpDrop {
    /// The labels, in exposition order; scripts read them, they do not change.
    pub const LABELS: [&'static str; 5] = [
        "queue_full",
        "too_many_flows",
        "too_large",
        "forbidden",
        "invalid",
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl Metrics {
    /// Counts one dropped datagram.
    pub fn udp_dropped(&self, why: UdpDrop) {
        self.udp_dropped[why.index()].fetch_add(1, Relaxed);
    }

    /// Datagrams dropped so far for this reason.
    pub fn udp_dropped_count(&self, why: UdpDrop) -> u64 {
        self.udp_dropped[why.index()].load(Relaxed)
    }

    /// Counts one refusal.
    pub fn refused(&self, why: Refusal) {
        self.refusals[why.counter()].fetch_add(1, Relaxed);
    }

    /// How many refusals were counted under this refusal's label (see [`Refusal::label`]).
    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refusals[why.counter()].load(Relaxed)
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TokenSeries>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The relay's tokens now (at start and after each reload): each gets its series; a
    /// removed one keeps its series until its last session is gone.
    pub fn set_tokens(&self, names: &[String]) {
        let mut tokens = self.lock_tokens();
        tokens.retain(|name, t| {
            t.configured = names.contains(name);
            t.configured || t.sessions > 0
        });
        for n in names {
            tokens.entry(n.clone()).or_default().configured = true;
        }
    }

    /// Counts an open session of token `name` until the guard is dropped.
    pub fn token_session(self: &Arc<Self>, name: &str) -> TokenSession {
        self.lock_tokens()
            .entry(name.to_string())
            .or_default()
            .sessions += 1;
        TokenSession {
            metrics: self.clone(),
            name: name.to_string(),
        }
    }

    /// Counts a refusal of a client with token `name`: a session over its cap, a bind, or a
    /// stream over a relay-wide limit (a stream the rules refuse is counted by reason only).
    pub fn token_refused(&self, name: &str) {
        let mut tokens = self.lock_tokens();
        // Only tokens with a series: the set stays what the configuration made it.
        if let Some(t) = tokens.get_mut(name) {
            t.refusals += 1;
        }
    }

    /// Sessions open now and refusals counted for token `name` (`None`: no series).
    pub fn token(&self, name: &str) -> Option<(u64, u64)> {
        self.lock_tokens()
            .get(name)
            .map(|t| (t.sessions, t.refusals))
    }

    fn lock_relays(&self) -> std::sync::MutexGuard<'_, Vec<RelaySeries>> {
        self.relays.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client's relays, in config order: each gets its series (down, no reconnects).
    pub fn set_relays(&self, urls: &[String]) {
        *self.lock_relays() = urls
            .iter()
            .map(|url| RelaySeries {
                url: url.clone(),
                up: false,
                reconnects: 0,
            })
            .collect();
    }

    /// Relay `relay` (its index in config order) is connected now, or not.
    pub fn relay_up(&self, relay: usize, up: bool) {
        if let Some(r) = self.lock_relays().get_mut(relay) {
            r.up = up;
        }
    }

    /// Relay `relay` was reached again after its first connection.
    pub fn relay_reconnected(&self, relay: usize) {
        if let Some(r) = self.lock_relays().get_mut(relay) {
            r.reconnects += 1;
        }
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
        self.render_udp(&mut out);
        self.render_tokens(&mut out);
        self.render_relays(&mut out);
        out
    }

    fn render_udp(&self, out: &mut String) {
        let series = [
            ("udp_flows", "gauge", "UDP flows open now.", &self.udp_flows),
            (
                "udp_flows_total",
                "counter",
                "UDP flows opened.",
                &self.udp_flows_total,
            ),
            (
                "udp_datagrams_in_total",
                "counter",
                "Datagrams received from tunnel peers.",
                &self.udp_datagrams_in,
            ),
            (
                "udp_datagrams_out_total",
                "counter",
                "Datagrams sent to tunnel peers.",
                &self.udp_datagrams_out,
            ),
        ];
        for (name, kind, help, v) in series {
            let _ = write!(
                out,
                "# HELP burrow_{name} {help}\n# TYPE burrow_{name} {kind}\nburrow_{name} {}\n",
                v.load(Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP burrow_udp_dropped_total Datagrams dropped, by reason.\n# TYPE burrow_udp_dropped_total counter\n"
        );
        for (i, name) in UdpDrop::LABELS.iter().enumerate() {
            let _ = writeln!(
                out,
                "burrow_udp_dropped_total{{reason=\"{name}\"}} {}",
                self.udp_dropped[i].load(Relaxed)
            );
        }
    }

    /// The per-relay series of a client (none elsewhere).
    fn render_relays(&self, out: &mut String) {
        let relays = self.lock_relays();
        if relays.is_empty() {
            return;
        }
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP burrow_client_relay_up 1 while the session to this relay is connected.\n# TYPE burrow_client_relay_up gauge\n"
        );
        for r in relays.iter() {
            let _ = writeln!(
                out,
                "burrow_client_relay_up{{relay=\"{}\"}} {}",
                label_value(&r.url),
                u8::from(r.up)
            );
        }
        let _ = write!(
            out,
            "# HELP burrow_client_relay_reconnects_total Connections to this relay after the first (new sessions and resumes).\n# TYPE burrow_client_relay_reconnects_total counter\n"
        );
        for r in relays.iter() {
            let _ = writeln!(
                out,
                "burrow_client_relay_reconnects_total{{relay=\"{}\"}} {}",
                label_value(&r.url),
                r.reconnects
            );
        }
    }

    /// The per-token series (none without `[[relay.tokens]]` or a relay token).
    fn render_tokens(&self, out: &mut String) {
        let tokens = self.lock_tokens();
        if tokens.is_empty() {
            return;
        }
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP burrow_token_sessions Tunnel sessions open now, by token name.\n# TYPE burrow_token_sessions gauge\n"
        );
        for (name, t) in tokens.iter() {
            let _ = writeln!(
                out,
                "burrow_token_sessions{{token=\"{}\"}} {}",
                label_value(name),
                t.sessions
            );
        }
        let _ = write!(
            out,
            "# HELP burrow_token_refusals_total Sessions over their cap, binds, and streams over a relay limit refused, by token name.\n# TYPE burrow_token_refusals_total counter\n"
        );
        for (name, t) in tokens.iter() {
            let _ = writeln!(
                out,
                "burrow_token_refusals_total{{token=\"{}\"}} {}",
                label_value(name),
                t.refusals
            );
        }
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod relay_tests {
    use super::*;

    #[test]
    fn relay_series_follow_their_relay() {
        let m = Metrics::default();
        assert!(
            !m.render().contains("burrow_client_relay"),
            "no relays, no series"
        );
        m.set_relays(&["ws://a:1/burrow".into(), "ws://b\"x:2".into()]);
        m.relay_up(1, true);
        m.relay_reconnected(1);
        m.relay_reconnected(1);
        // Not a relay of this client: ignored, never a panic.
        m.relay_up(9, true);
        m.relay_reconnected(9);
        let text = m.render();
        for line in [
            "burrow_client_relay_up{relay=\"ws://a:1/burrow\"} 0\n",
            "burrow_client_relay_up{relay=\"ws://b\\\"x:2\"} 1\n",
            "burrow_client_relay_reconnects_total{relay=\"ws://a:1/burrow\"} 0\n",
            "burrow_client_relay_reconnects_total{relay=\"ws://b\\\"x:2\"} 2\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        m.relay_up(1, false);
        assert!(
            m.render()
                .contains("burrow_client_relay_up{relay=\"ws://b\\\"x:2\"} 0\n")
        );
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn token_series_are_bounded_by_the_config() {
        let m = Arc::new(Metrics::default());
        m.set_tokens(&["a".into(), "b\"x".into()]);
        let s = m.token_session("a");
        m.token_refused("b\"x");
        m.token_refused("not-configured");
        let text = m.render();
        assert!(
            text.contains("burrow_token_sessions{token=\"a\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("burrow_token_refusals_total{token=\"b\\\"x\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("not-configured"), "{text}");
        // Removed by a reload: kept while its session is open, then gone.
        m.set_tokens(&["b\"x".into()]);
        assert_eq!(m.token("a"), Some((1, 0)));
        drop(s);
        assert_eq!(m.token("a"), None);
        assert!(!m.render().contains("token=\"a\""));
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
