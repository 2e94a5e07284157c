//! The client's sessions, one slot per relay, as a watched value: `-L` connections take the
//! best one (connected, lowest round trip), and those that arrive while no relay is up wait
//! for one, woken the moment a session comes up.

use crate::tunnel::{Session, Watch};
use std::time::Duration;

/// One relay's session while it is served.
#[derive(Clone)]
struct Slot {
    session: Session,
    /// false while the session waits to be resumed on a new connection: its streams wait
    /// too, so a connected relay is chosen before it
    connected: bool,
}

/// The sessions the client serves now, by relay (config order). Every change wakes every
/// waiter at once.
pub(super) struct CurrentSession(Watch<Vec<Option<Slot>>>);

impl CurrentSession {
    /// `relays` empty slots.
    pub(super) fn new(relays: usize) -> Self {
        CurrentSession(Watch::new(vec![None; relays]))
    }

    /// Sets (or, with `None`, clears) relay `relay`'s session, connected, and wakes every
    /// waiter.
    pub(super) fn set(&self, relay: usize, session: Option<Session>) {
        self.0.update(|slots| {
            if let Some(slot) = slots.get_mut(relay) {
                *slot = session.map(|session| Slot {
                    session,
                    connected: true,
                });
            }
        });
    }

    /// Relay `relay`'s session lost its connection (`false`) or resumed on a new one.
    pub(super) fn set_connected(&self, relay: usize, connected: bool) {
        self.0.update(|slots| {
            if let Some(Some(slot)) = slots.get_mut(relay) {
                slot.connected = connected;
            }
        });
    }

    /// The best session, waiting at most `timeout` for one to come up. Cancel-safe.
    pub(super) async fn wait(&self, timeout: Duration) -> Option<Session> {
        let up = async { Ok(self.0.wait_for(|slots| best(slots)).await) };
        crate::time::with_timeout(timeout, up, || ()).await.ok()
    }
}

/// How a session ranks for a new `-L` stream (lowest first): connected to a relay that is
/// not going away; then a known round trip, the shortest; then config order (`min_by_key`
/// keeps the first of equals). A suspended session is still chosen when it is the only one:
/// its streams continue once it resumes.
fn rank(slot: &Slot) -> (bool, bool, Option<Duration>) {
    let usable = slot.connected && slot.session.peer_going_away().is_none();
    key(usable, slot.session.rtt())
}

/// The rank of a session that is `usable` with round trip `rtt`.
fn key(usable: bool, rtt: Option<Duration>) -> (bool, bool, Option<Duration>) {
    (!usable, rtt.is_none(), rtt)
}

fn best(slots: &[Option<Slot>]) -> Option<Session> {
    slots
        .iter()
        .flatten()
        .min_by_key(|s| rank(s))
        .map(|s| s.session.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::{SessionConfig, Side};
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker that counts its wakes.
    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    fn session() -> Session {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        Session::new(Side::Client, SessionConfig::default(), "t".into(), metrics).0
    }

    fn now(current: &CurrentSession) -> Option<Session> {
        smol::block_on(current.wait(Duration::ZERO))
    }

    #[test]
    fn setting_the_session_wakes_a_waiter_at_once() {
        let current = CurrentSession::new(1);
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut wait = std::pin::pin!(current.wait(Duration::from_secs(3600)));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        // A waiter that polls on a timer is not woken by this; a watched value is, right now.
        current.set(0, Some(session()));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "set did not wake the waiter"
        );
        assert!(matches!(wait.as_mut().poll(&mut cx), Poll::Ready(Some(_))));
    }

    #[test]
    fn clearing_keeps_waiters_waiting_and_a_set_session_is_returned_at_once() {
        let current = CurrentSession::new(2);
        let (_, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut wait = std::pin::pin!(current.wait(Duration::from_secs(3600)));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        current.set(0, None);
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "no session yet");
        // The second relay comes up first: it is the one.
        current.set(1, Some(session()));
        assert!(matches!(wait.as_mut().poll(&mut cx), Poll::Ready(Some(_))));
        // Already up: no waiting at all.
        let mut again = std::pin::pin!(current.wait(Duration::from_secs(3600)));
        assert!(matches!(again.as_mut().poll(&mut cx), Poll::Ready(Some(_))));
    }

    #[test]
    fn no_session_within_the_timeout_is_none() {
        let current = CurrentSession::new(1);
        assert!(smol::block_on(current.wait(Duration::from_millis(20))).is_none());
    }

    #[test]
    fn a_connected_relay_is_chosen_first_then_config_order() {
        let current = CurrentSession::new(3);
        let (a, b, c) = (session(), session(), session());
        current.set(1, Some(b.clone()));
        current.set(2, Some(c.clone()));
        assert!(now(&current).unwrap().same(&b), "ties go to config order");
        current.set(0, Some(a.clone()));
        assert!(now(&current).unwrap().same(&a));
        // Relay 1 loses its connection (its session waits to resume): new streams fail over.
        current.set_connected(0, false);
        assert!(now(&current).unwrap().same(&b));
        current.set(1, None);
        assert!(now(&current).unwrap().same(&c));
        // Only a suspended session left: it is still used (its streams wait for the resume).
        current.set(2, None);
        assert!(now(&current).unwrap().same(&a));
        current.set_connected(0, true);
        assert!(now(&current).unwrap().same(&a));
        // Out-of-range relays are ignored, never a panic.
        current.set(7, Some(session()));
        current.set_connected(7, false);
    }

    #[test]
    fn a_known_round_trip_ranks_before_an_unknown_one_and_the_shortest_first() {
        let key = |usable: bool, rtt: Option<u64>| key(usable, rtt.map(Duration::from_millis));
        let mut keys = [
            key(true, None),
            key(false, Some(1)),
            key(true, Some(30)),
            key(true, Some(5)),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                key(true, Some(5)),
                key(true, Some(30)),
                key(true, None),
                key(false, Some(1)),
            ]
        );
    }
}
