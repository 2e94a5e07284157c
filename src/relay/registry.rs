//! What the relay's operator's view lists: the sessions connected now, the public bindings
//! with their visitors, and the last refusals. Sessions and bindings register here and are
//! listed until their [`Listed`] guard drops; the registry is bounded by what it lists (the
//! session and binding limits) and by [`RECENT_REFUSALS`](crate::refusal::RECENT_REFUSALS).

use crate::refusal::{RecentRefusals, Refusal};
use crate::tunnel::Session;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// The relay's live lists.
#[derive(Debug)]
pub(super) struct Registry {
    /// when the relay started (uptime)
    pub(super) started: Instant,
    next: AtomicU64,
    sessions: Mutex<BTreeMap<u64, SessionEntry>>,
    bindings: Mutex<BTreeMap<u64, Arc<BindingEntry>>>,
    /// the last refusals
    pub(super) refusals: RecentRefusals,
}

/// A session as listed.
#[derive(Debug, Clone)]
pub(super) struct SessionEntry {
    /// the token's name (never its value)
    pub(super) token: String,
    /// the client's address when the session began
    pub(super) peer: SocketAddr,
    /// when the session began
    pub(super) since: SystemTime,
    /// the session (its streams, bytes and round trip are read from it)
    pub(super) session: Session,
}

/// A public binding as listed.
#[derive(Debug)]
pub(super) struct BindingEntry {
    /// the public listener's address
    pub(super) public: String,
    /// where visitors go: the session that holds it, and how (`forward`, `proxy`)
    pub(super) target: String,
    /// visitors connected now
    pub(super) now: AtomicU64,
    /// visitors ever accepted
    pub(super) total: AtomicU64,
    /// a pool's members now (`None`: a plain binding of one session)
    pub(super) members: Option<AtomicU64>,
}

impl BindingEntry {
    /// Counts a visitor in; the guard counts it out when dropped.
    pub(super) fn visitor(self: &Arc<Self>) -> Visitor {
        self.now.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        Visitor(self.clone())
    }
}

/// One visitor of a binding, counted in `now` while it lives.
pub(super) struct Visitor(Arc<BindingEntry>);

impl Drop for Visitor {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Relaxed);
    }
}

/// What a [`Listed`] guard takes out of the registry when dropped.
enum Kind {
    Session,
    Binding,
}

/// Keeps an entry listed; dropping it takes the entry out.
pub(super) struct Listed {
    registry: Arc<Registry>,
    id: u64,
    kind: Kind,
}

impl Drop for Listed {
    fn drop(&mut self) {
        match self.kind {
            Kind::Session => {
                self.registry.sessions().remove(&self.id);
            }
            Kind::Binding => {
                self.registry.bindings().remove(&self.id);
            }
        }
    }
}

impl Registry {
    /// An empty registry; uptime counts from now.
    pub(super) fn new() -> Arc<Registry> {
        Arc::new(Registry {
            started: Instant::now(),
            next: AtomicU64::new(1),
            sessions: Mutex::default(),
            bindings: Mutex::default(),
            refusals: RecentRefusals::default(),
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bindings(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<BindingEntry>>> {
        self.bindings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists a session until the guard drops.
    pub(super) fn add_session(self: &Arc<Self>, entry: SessionEntry) -> Listed {
        let id = self.next.fetch_add(1, Relaxed);
        self.sessions().insert(id, entry);
        Listed {
            registry: self.clone(),
            id,
            kind: Kind::Session,
        }
    }

    /// Lists a binding until the guard drops; count its visitors on the entry.
    pub(super) fn add_binding(
        self: &Arc<Self>,
        public: String,
        target: String,
        pool: bool,
    ) -> (Arc<BindingEntry>, Listed) {
        let id = self.next.fetch_add(1, Relaxed);
        let entry = Arc::new(BindingEntry {
            public,
            target,
            now: AtomicU64::new(0),
            total: AtomicU64::new(0),
            members: pool.then(|| AtomicU64::new(0)),
        });
        self.bindings().insert(id, entry.clone());
        let listed = Listed {
            registry: self.clone(),
            id,
            kind: Kind::Binding,
        };
        (entry, listed)
    }

    /// Lists a refusal (`who`: a peer address or a session label).
    pub(super) fn refused(&self, who: &str, refusal: Refusal, detail: &str) {
        self.refusals.record(who, refusal, detail);
    }

    /// The sessions listed now, oldest first.
    pub(super) fn session_list(&self) -> Vec<SessionEntry> {
        self.sessions().values().cloned().collect()
    }

    /// The bindings listed now, oldest first.
    pub(super) fn binding_list(&self) -> Vec<Arc<BindingEntry>> {
        self.bindings().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_leave_with_their_guard_and_visitors_are_counted() {
        let reg = Registry::new();
        let (b, listed) = reg.add_binding("127.0.0.1:1".into(), "s (forward)".into(), false);
        let v1 = b.visitor();
        let v2 = b.visitor();
        drop(v1);
        assert_eq!((b.now.load(Relaxed), b.total.load(Relaxed)), (1, 2));
        drop(v2);
        assert_eq!(b.now.load(Relaxed), 0);
        assert_eq!(reg.binding_list().len(), 1);
        drop(listed);
        assert!(reg.binding_list().is_empty());
    }
}
