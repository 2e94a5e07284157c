//! What the client tells its user: state changes, fatal errors, readiness.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A state change, for the user (the binary prints one line each) and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A `-L` listener is ready.
    Listening {
        /// the spec as given
        spec: String,
        /// where it listens
        addr: SocketAddr,
    },
    /// Dialing the relay.
    Connecting,
    /// The session is up.
    Connected,
    /// A `-R` binding listens on the relay.
    Bound {
        /// the relay's address for it
        addr: String,
        /// what it leads to (`host:port` or `proxy`)
        target: String,
    },
    /// The relay refused a `-R` binding.
    BindRefused {
        /// what it would have led to
        target: String,
        /// the relay's reason
        reason: String,
    },
    /// The session ended or the attempt failed.
    Lost(String),
    /// The connection was lost; the session and its streams wait to be resumed on the next one.
    Suspended {
        /// why the connection was lost
        why: String,
        /// streams held for the resume
        streams: usize,
    },
    /// A new connection resumed the session: every stream continues where it was.
    Resumed {
        /// streams that continued
        streams: usize,
    },
    /// Next attempt after this delay.
    Retrying(Duration),
    /// An event of one relay of a client with several (`burrow client URL1 URL2 …`), so that
    /// each line says which relay. A client with one relay sends its events bare.
    Relay {
        /// the relay's URL
        relay: String,
        /// what happened there (never itself a `Relay`)
        event: Box<Event>,
    },
}

impl Event {
    /// The relay this event is of (with several relays), and the event itself.
    pub fn on_relay(&self) -> (Option<&str>, &Event) {
        match self {
            Event::Relay { relay, event } => (Some(relay), event),
            e => (None, e),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Listening { spec, addr } => write!(f, "listening L {addr} ({spec})"),
            Event::Connecting => f.write_str("connecting"),
            Event::Connected => f.write_str("connected"),
            Event::Bound { addr, target } => write!(f, "bound R {addr} -> {target}"),
            Event::BindRefused { target, reason } => {
                write!(f, "bind refused R -> {target}: {reason}")
            }
            Event::Lost(why) => write!(f, "lost: {why}"),
            Event::Suspended { why, streams } => {
                write!(f, "lost: {why}; resuming {streams} streams")
            }
            Event::Resumed { streams } => write!(f, "connected; resumed {streams} streams"),
            Event::Retrying(d) => write!(f, "retrying in {:.1} s", d.as_secs_f64()),
            Event::Relay { relay, event } => write!(f, "relay {relay}: {event}"),
        }
    }
}

/// Why the client stopped for good.
#[derive(Debug)]
pub enum ClientError {
    /// A local listener could not be bound.
    Listen(String),
    /// The relay or a proxy on the way refused us in a way retrying cannot fix.
    Fatal(String),
    /// The stdio stream failed.
    Stdio(String),
    /// The configuration cannot be served as given.
    Config(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Listen(why)
            | ClientError::Fatal(why)
            | ClientError::Stdio(why)
            | ClientError::Config(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ClientError {}

/// What `/readyz` reports: connected, and every `-R` in force bound.
#[derive(Default)]
pub(super) struct Readiness {
    connected: std::sync::atomic::AtomicBool,
    /// bindings the relay confirmed in this session
    pub(super) bound: Mutex<HashSet<u32>>,
    /// the ids of the `-R` in force (a reload changes them)
    want: Mutex<HashSet<u32>>,
}

impl Readiness {
    /// Ready once connected with every binding of `want` confirmed.
    pub(super) fn new(want: Vec<u32>) -> Self {
        Readiness {
            want: Mutex::new(want.into_iter().collect()),
            ..Readiness::default()
        }
    }

    /// A new session: nothing is bound in it yet.
    pub(super) fn new_session(&self) {
        self.bound.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Connected or not; a resumed session keeps its bindings (the relay kept them).
    pub(super) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::SeqCst);
    }

    /// The bindings in force changed (a reload).
    pub(super) fn set_want(&self, want: Vec<u32>) {
        *self.want.lock().unwrap_or_else(|e| e.into_inner()) = want.into_iter().collect();
    }

    /// A binding was removed: it is no longer bound (nor wanted).
    pub(super) fn unbound(&self, bind_id: u32) {
        self.bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&bind_id);
    }

    pub(super) fn is_ready(&self) -> bool {
        let want = self.want.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.connected.load(Ordering::SeqCst)
            && want.is_subset(&self.bound.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
