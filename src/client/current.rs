//! The client's current session as a watched value: `-L` connections that arrive while the
//! client is (re)connecting wait for it, and are woken the moment it is up.

use crate::tunnel::{Session, Watch};
use std::time::Duration;

/// The session the client is serving now, if any. Setting it wakes every waiter at once.
pub(super) struct CurrentSession(Watch<Option<Session>>);

impl CurrentSession {
    /// No session yet.
    pub(super) fn new() -> Self {
        CurrentSession(Watch::new(None))
    }

    /// Sets (or, with `None`, clears) the current session and wakes every waiter.
    pub(super) fn set(&self, session: Option<Session>) {
        self.0.set(session);
    }

    /// The current session, waiting at most `timeout` for one to come up. Cancel-safe.
    pub(super) async fn wait(&self, timeout: Duration) -> Option<Session> {
        let up = async { Ok(self.0.wait_for(|s| s.clone()).await) };
        crate::time::with_timeout(timeout, up, || ()).await.ok()
    }
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

    #[test]
    fn setting_the_session_wakes_a_waiter_at_once() {
        let current = CurrentSession::new();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut wait = std::pin::pin!(current.wait(Duration::from_secs(3600)));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        // A waiter that polls on a timer is not woken by this; a watched value is, right now.
        current.set(Some(session()));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "set did not wake the waiter"
        );
        assert!(matches!(wait.as_mut().poll(&mut cx), Poll::Ready(Some(_))));
    }

    #[test]
    fn clearing_keeps_waiters_waiting_and_a_set_session_is_returned_at_once() {
        let current = CurrentSession::new();
        let (_, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut wait = std::pin::pin!(current.wait(Duration::from_secs(3600)));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        current.set(None);
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "no session yet");
        current.set(Some(session()));
        assert!(matches!(wait.as_mut().poll(&mut cx), Poll::Ready(Some(_))));
        // Already up: no waiting at all.
        let mut again = std::pin::pin!(current.wait(Duration::from_secs(3600)));
        assert!(matches!(again.as_mut().poll(&mut cx), Poll::Ready(Some(_))));
    }

    #[test]
    fn no_session_within_the_timeout_is_none() {
        let current = CurrentSession::new();
        assert!(smol::block_on(current.wait(Duration::from_millis(20))).is_none());
    }
}
