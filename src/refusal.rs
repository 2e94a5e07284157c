//! Why something was refused: one vocabulary for the whole crate, with one mapping to the
//! HTTP status a proxy or the relay answers, to the code an OPEN_REFUSED or RESET frame
//! carries ([`RefuseCode`], the wire byte of `docs/PROTOCOL.md`), and to the `reason` label
//! of the `burrow_refusals_total` counter.
//!
//! This module imports nothing of the crate: the frame codec (Core) and the counters
//! (`metrics`, an Edge) both use it without an arrow pointing up.

/// Why a request, a stream, a binding or a connection was refused.
///
/// Some refusals never cross the tunnel (a wrong token, the relay's connection and session
/// caps): their [`wire_code`](Refusal::wire_code) is the nearest code, for the rare path
/// that must put them in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Wrong or missing token or credentials (401).
    Auth,
    /// Target rules, `--allow-ports`, or an address that is never dialed (403).
    Forbidden,
    /// The target failed or did not resolve (502).
    Unreachable,
    /// The target refused the connection (502; SOCKS5 "connection refused").
    Refused,
    /// The target did not answer in time (504).
    Timeout,
    /// `--max-streams` (per session) or the relay's `--max-streams-total` reached (503).
    TooManyStreams,
    /// The request makes no sense here: malformed, unknown binding, no proxy mode (400).
    BadRequest,
    /// The session is going away (503).
    GoingAway,
    /// Anything else the far end did not explain (502).
    Other,
    /// The relay's `--max-connections` (or its pre-upgrade share) reached (503).
    TooManyConnections,
    /// The relay's `--max-sessions` or `--max-sessions-per-token` reached (503).
    TooManySessions,
    /// The relay's `--max-dials` reached (503).
    TooManyDials,
    /// The tunnel client speaks another protocol version (426); counted as a bad request.
    Version,
}

/// Why a stream was refused or reset, as the byte an OPEN_REFUSED or RESET frame carries.
/// [`Refusal::from`] reads it; [`Refusal::wire_code`] writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RefuseCode {
    /// Rules forbid the target.
    Forbidden = 1,
    /// The target refused, failed or did not resolve.
    Unreachable = 2,
    /// The target did not answer in time.
    Timeout = 3,
    /// Too many streams (on the session or the relay), or too many dials in progress.
    TooManyStreams = 4,
    /// The request makes no sense here (unknown binding, no proxy mode).
    BadRequest = 5,
    /// The session is going away.
    GoingAway = 6,
    /// Anything else.
    Other = 7,
    /// The target refused the connection. Sent only to a peer that announced the `udp`
    /// capability (it came with it); an older peer gets Unreachable.
    Refused = 8,
}

impl RefuseCode {
    /// The code for a wire byte; `None` for a byte no version of the protocol defines.
    pub fn from_u8(b: u8) -> Option<RefuseCode> {
        Some(match b {
            1 => RefuseCode::Forbidden,
            2 => RefuseCode::Unreachable,
            3 => RefuseCode::Timeout,
            4 => RefuseCode::TooManyStreams,
            5 => RefuseCode::BadRequest,
            6 => RefuseCode::GoingAway,
            7 => RefuseCode::Other,
            8 => RefuseCode::Refused,
            _ => return None,
        })
    }
}

impl From<RefuseCode> for Refusal {
    /// The far end's refusal, as ours: every wire code has a refusal of the same name.
    fn from(code: RefuseCode) -> Refusal {
        match code {
            RefuseCode::Forbidden => Refusal::Forbidden,
            RefuseCode::Unreachable => Refusal::Unreachable,
            RefuseCode::Timeout => Refusal::Timeout,
            RefuseCode::TooManyStreams => Refusal::TooManyStreams,
            RefuseCode::BadRequest => Refusal::BadRequest,
            RefuseCode::GoingAway => Refusal::GoingAway,
            RefuseCode::Other => Refusal::Other,
            RefuseCode::Refused => Refusal::Refused,
        }
    }
}

impl Refusal {
    /// Every refusal, for tables and tests.
    pub const ALL: [Refusal; 13] = [
        Refusal::Auth,
        Refusal::Forbidden,
        Refusal::Unreachable,
        Refusal::Refused,
        Refusal::Timeout,
        Refusal::TooManyStreams,
        Refusal::BadRequest,
        Refusal::GoingAway,
        Refusal::Other,
        Refusal::TooManyConnections,
        Refusal::TooManySessions,
        Refusal::TooManyDials,
        Refusal::Version,
    ];

    /// The `reason` labels of `burrow_refusals_total`, in exposition order. Scripts and
    /// dashboards read these strings: they do not change.
    pub const LABELS: [&'static str; 9] = [
        "auth",
        "forbidden",
        "unreachable",
        "timeout",
        "too_many_streams",
        "bad_request",
        "too_many_connections",
        "too_many_sessions",
        "too_many_dials",
    ];

    /// The HTTP status a proxy (or the relay's front door) answers this refusal with.
    pub fn http_status(self) -> u16 {
        match self {
            Refusal::Auth => 401,
            Refusal::Forbidden => 403,
            Refusal::BadRequest => 400,
            Refusal::Version => 426,
            Refusal::Timeout => 504,
            Refusal::Unreachable | Refusal::Refused | Refusal::Other => 502,
            Refusal::TooManyStreams
            | Refusal::GoingAway
            | Refusal::TooManyConnections
            | Refusal::TooManySessions
            | Refusal::TooManyDials => 503,
        }
    }

    /// The code an OPEN_REFUSED or RESET carries for this refusal. The relay's own caps are
    /// "too many streams" to the far end (it only needs to know to back off); a refusal for
    /// credentials never refuses a stream (the session was authenticated), so it is
    /// "forbidden" should it ever.
    pub fn wire_code(self) -> RefuseCode {
        match self {
            Refusal::Auth | Refusal::Forbidden => RefuseCode::Forbidden,
            Refusal::Unreachable => RefuseCode::Unreachable,
            Refusal::Refused => RefuseCode::Refused,
            Refusal::Timeout => RefuseCode::Timeout,
            Refusal::TooManyStreams
            | Refusal::TooManyConnections
            | Refusal::TooManySessions
            | Refusal::TooManyDials => RefuseCode::TooManyStreams,
            Refusal::BadRequest | Refusal::Version => RefuseCode::BadRequest,
            Refusal::GoingAway => RefuseCode::GoingAway,
            Refusal::Other => RefuseCode::Other,
        }
    }

    /// Which `burrow_refusals_total` counter (an index into [`Refusal::LABELS`]) counts this
    /// refusal. "Going away" and "other" are the far end failing to reach a target, as far
    /// as an operator can tell: they count as unreachable (the label set is fixed).
    pub fn counter(self) -> usize {
        match self {
            Refusal::Auth => 0,
            Refusal::Forbidden => 1,
            Refusal::Unreachable | Refusal::Refused | Refusal::GoingAway | Refusal::Other => 2,
            Refusal::Timeout => 3,
            Refusal::TooManyStreams => 4,
            Refusal::BadRequest | Refusal::Version => 5,
            Refusal::TooManyConnections => 6,
            Refusal::TooManySessions => 7,
            Refusal::TooManyDials => 8,
        }
    }

    /// The `reason` label of the counter that counts this refusal.
    pub fn label(self) -> &'static str {
        Refusal::LABELS[self.counter()]
    }
}

/// Refusals an operator's view (`/status`) lists: the most recent ones, newest dropping the
/// oldest. A peer can cause refusals at will, so the list is a fixed-size ring.
pub const RECENT_REFUSALS: usize = 50;

/// Longest detail (bytes) kept with a listed refusal: details may quote what a peer sent.
pub const MAX_REFUSAL_DETAIL: usize = 200;

/// One listed refusal: when, who (a peer address or a session), why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentRefusal {
    /// when it happened
    pub at: std::time::SystemTime,
    /// the peer address or session label it concerns
    pub who: String,
    /// its kind
    pub refusal: Refusal,
    /// what was refused and why, at most [`MAX_REFUSAL_DETAIL`] bytes
    pub detail: String,
}

/// The last [`RECENT_REFUSALS`] refusals, and how many there were in all.
#[derive(Debug, Default)]
pub struct RecentRefusals {
    ring: std::sync::Mutex<std::collections::VecDeque<RecentRefusal>>,
    total: std::sync::atomic::AtomicU64,
}

impl RecentRefusals {
    /// Lists a refusal, dropping the oldest once [`RECENT_REFUSALS`] are listed.
    pub fn record(&self, who: &str, refusal: Refusal, detail: &str) {
        let entry = RecentRefusal {
            at: std::time::SystemTime::now(),
            who: cut(who).to_string(),
            refusal,
            detail: cut(detail).to_string(),
        };
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() >= RECENT_REFUSALS {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The listed refusals, newest first.
    pub fn newest_first(&self) -> Vec<RecentRefusal> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().cloned().collect()
    }

    /// Refusals recorded in all (listed or no longer).
    pub fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `s` cut to at most [`MAX_REFUSAL_DETAIL`] bytes, at a character boundary.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_REFUSAL_DETAIL);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Refusal {
    /// What an operator reads for this refusal in `/status`: why, in a few words.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Auth => "wrong token",
            Refusal::Forbidden => "refused by rules or ports",
            Refusal::Unreachable => "target unreachable",
            Refusal::Refused => "target refused",
            Refusal::Timeout => "target timed out",
            Refusal::TooManyStreams => "limit hit: streams",
            Refusal::BadRequest => "bad request",
            Refusal::GoingAway => "going away",
            Refusal::Other => "other",
            Refusal::TooManyConnections => "limit hit: connections",
            Refusal::TooManySessions => "limit hit: sessions",
            Refusal::TooManyDials => "limit hit: dials",
            Refusal::Version => "protocol version",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one mapping, pinned: refusal → (wire code, HTTP status, metrics label). These are
    /// the values every path used before the three vocabularies became one.
    #[test]
    fn every_refusal_has_one_wire_code_status_and_label() {
        use RefuseCode as C;
        let table: [(Refusal, RefuseCode, u8, u16, &str); 13] = [
            (Refusal::Auth, C::Forbidden, 1, 401, "auth"),
            (Refusal::Forbidden, C::Forbidden, 1, 403, "forbidden"),
            (Refusal::Unreachable, C::Unreachable, 2, 502, "unreachable"),
            (Refusal::Refused, C::Refused, 8, 502, "unreachable"),
            (Refusal::Timeout, C::Timeout, 3, 504, "timeout"),
            (
                Refusal::TooManyStreams,
                C::TooManyStreams,
                4,
                503,
                "too_many_streams",
            ),
            (Refusal::BadRequest, C::BadRequest, 5, 400, "bad_request"),
            (Refusal::GoingAway, C::GoingAway, 6, 503, "unreachable"),
            (Refusal::Other, C::Other, 7, 502, "unreachable"),
            (
                Refusal::TooManyConnections,
                C::TooManyStreams,
                4,
                503,
                "too_many_connections",
            ),
            (
                Refusal::TooManySessions,
                C::TooManyStreams,
                4,
                503,
                "too_many_sessions",
            ),
            (
                Refusal::TooManyDials,
                C::TooManyStreams,
                4,
                503,
                "too_many_dials",
            ),
            (Refusal::Version, C::BadRequest, 5, 426, "bad_request"),
        ];
        assert_eq!(table.len(), Refusal::ALL.len());
        for (i, (r, code, byte, status, label)) in table.into_iter().enumerate() {
            assert_eq!(r, Refusal::ALL[i], "the table follows ALL");
            assert_eq!(r.wire_code(), code, "{r:?}");
            assert_eq!(r.wire_code() as u8, byte, "{r:?}");
            assert_eq!(r.http_status(), status, "{r:?}");
            assert_eq!(r.label(), label, "{r:?}");
        }
    }

    /// What the far end refuses with becomes the same HTTP status here as it had there (but
    /// for credentials, which never refuse a stream), and every wire byte reads back.
    #[test]
    fn a_wire_code_keeps_its_meaning_across_the_tunnel() {
        for r in Refusal::ALL {
            let far = Refusal::from(r.wire_code());
            assert_eq!(far.wire_code(), r.wire_code(), "{r:?}");
            // Credentials and the protocol version are checked at the handshake: those
            // refusals never cross the tunnel.
            if !matches!(r, Refusal::Auth | Refusal::Version) {
                assert_eq!(far.http_status(), r.http_status(), "{r:?}");
            }
        }
        let mut codes = 0;
        for b in 0..=u8::MAX {
            if let Some(code) = RefuseCode::from_u8(b) {
                assert_eq!(code as u8, b);
                assert_eq!(Refusal::from(code).wire_code(), code);
                codes += 1;
            }
        }
        assert_eq!(codes, 8);
    }

    #[test]
    fn every_label_counts_something() {
        for (i, label) in Refusal::LABELS.iter().enumerate() {
            assert!(
                Refusal::ALL.iter().any(|r| r.counter() == i),
                "{label} is never counted"
            );
        }
    }

    #[test]
    fn the_recent_refusals_are_a_bounded_ring_newest_first() {
        let recent = RecentRefusals::default();
        for i in 0..RECENT_REFUSALS + 7 {
            recent.record(&format!("peer{i}"), Refusal::Auth, "wrong token");
        }
        let listed = recent.newest_first();
        assert_eq!(listed.len(), RECENT_REFUSALS);
        assert_eq!(recent.total(), (RECENT_REFUSALS + 7) as u64);
        assert_eq!(listed[0].who, format!("peer{}", RECENT_REFUSALS + 6));
        assert_eq!(listed[RECENT_REFUSALS - 1].who, "peer7");
        // A long detail is cut at a character boundary.
        recent.record("x", Refusal::Forbidden, &"é".repeat(MAX_REFUSAL_DETAIL));
        let d = &recent.newest_first()[0].detail;
        assert!(d.len() <= MAX_REFUSAL_DETAIL && d.chars().all(|c| c == 'é'));
    }
}
