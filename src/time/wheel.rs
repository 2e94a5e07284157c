//! Deadlines without the reactor: one thread sleeps until the earliest deadline and wakes the
//! tasks whose time came.
//!
//! A reactor timer (`smol::Timer`) costs system calls every time one is set: the reactor is
//! notified through its eventfd (a write, an extra `epoll_wait` round and a read) and re-arms
//! its timerfd. A proxy connection sets three or four (the head read, the dial, the idle
//! limit), which was a fifth of its system calls. Here setting, moving and dropping a deadline
//! is a map operation under a mutex; the thread is told only when a deadline earlier than the
//! one it sleeps for arrives, and it wakes a task only when its deadline really passed (which
//! for timeouts is rare). The thread starts at the first deadline and sleeps without a timeout
//! while there is none.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The timer thread's stack: it only sorts and wakes.
const STACK: usize = 64 * 1024;

/// A future that resolves once its deadline has passed.
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    /// the registration, once polled before the deadline
    key: Option<u64>,
    /// the waker registered with it (a poll with the same one needs no lock)
    waker: Option<Waker>,
    /// used instead when the timer thread could not be started
    fallback: Option<smol::Timer>,
}

impl Sleep {
    /// Resolves at `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Sleep {
            deadline,
            key: None,
            waker: None,
            fallback: None,
        }
    }

    /// Resolves after `d`.
    pub fn after(d: Duration) -> Self {
        Self::until(Instant::now() + d)
    }

    /// Moves the deadline (to reuse one `Sleep` for a limit that restarts).
    pub fn reset(&mut self, deadline: Instant) {
        self.unregister();
        self.deadline = deadline;
        if let Some(t) = self.fallback.as_mut() {
            t.set_at(deadline);
        }
    }

    /// The current deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn unregister(&mut self) {
        if let Some(key) = self.key.take() {
            wheel().remove(self.deadline, key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(t) = self.fallback.as_mut() {
            return Pin::new(t).poll(cx).map(|_| ());
        }
        if Instant::now() >= self.deadline {
            self.unregister();
            return Poll::Ready(());
        }
        if self.key.is_some() && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let deadline = self.deadline;
        match wheel().register(deadline, self.key, cx.waker()) {
            Some(key) => {
                self.key = Some(key);
                self.waker = Some(cx.waker().clone());
            }
            None => {
                let mut t = smol::Timer::at(deadline);
                let ready = Pin::new(&mut t).poll(cx).is_ready();
                self.fallback = Some(t);
                if ready {
                    return Poll::Ready(());
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// The deadlines and the thread that watches them.
struct Wheel {
    state: Mutex<State>,
    cond: Condvar,
}

struct State {
    timers: BTreeMap<(Instant, u64), Waker>,
    next_key: u64,
    /// false until the thread runs; `Err` once starting it failed
    thread: Result<bool, ()>,
    /// what the thread sleeps for: `None` without a timeout
    sleeping_until: Option<Instant>,
}

fn wheel() -> &'static Wheel {
    static WHEEL: OnceLock<Wheel> = OnceLock::new();
    WHEEL.get_or_init(|| Wheel {
        state: Mutex::new(State {
            timers: BTreeMap::new(),
            next_key: 0,
            thread: Ok(false),
            sleeping_until: None,
        }),
        cond: Condvar::new(),
    })
}

impl Wheel {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers (or refreshes) the waker for `deadline`; `None` when there is no timer thread.
    fn register(&'static self, deadline: Instant, key: Option<u64>, waker: &Waker) -> Option<u64> {
        let mut st = self.lock();
        if let Some(key) = key
            && let Some(w) = st.timers.get_mut(&(deadline, key))
        {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
            return Some(key);
        }
        match st.thread {
            Err(()) => return None,
            Ok(false) => {
                let started = std::thread::Builder::new()
                    .name("burrow-timer".into())
                    .stack_size(STACK)
                    .spawn(move || self.run());
                if let Err(e) = started {
                    log::warn!("cannot start the timer thread ({e}); using reactor timers");
                    st.thread = Err(());
                    return None;
                }
                st.thread = Ok(true);
            }
            Ok(true) => {}
        }
        let key = st.next_key;
        st.next_key += 1;
        st.timers.insert((deadline, key), waker.clone());
        if st.sleeping_until.is_none_or(|t| deadline < t) {
            self.cond.notify_one();
        }
        Some(key)
    }

    fn remove(&self, deadline: Instant, key: u64) {
        self.lock().timers.remove(&(deadline, key));
    }

    /// The timer thread: wakes what is due, then sleeps until the next deadline.
    fn run(&self) {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(entry) = st.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            if !due.is_empty() {
                drop(st);
                due.into_iter().for_each(Waker::wake);
                st = self.lock();
                continue;
            }
            let next = st.timers.first_key_value().map(|(k, _)| k.0);
            st.sleeping_until = next;
            st = match next {
                None => self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(t) => {
                    let wait = t.saturating_duration_since(now);
                    self.cond
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_its_deadline_not_before() {
        smol::block_on(async {
            let start = Instant::now();
            Sleep::after(Duration::from_millis(30)).await;
            assert!(start.elapsed() >= Duration::from_millis(30));
        });
    }

    #[test]
    fn the_earlier_of_two_fires_first_even_when_registered_later() {
        smol::block_on(async {
            use futures_lite::FutureExt;
            let late = async {
                Sleep::after(Duration::from_secs(60)).await;
                "late"
            };
            let early = async {
                Sleep::after(Duration::from_millis(20)).await;
                "early"
            };
            assert_eq!(late.or(early).await, "early");
        });
    }

    #[test]
    fn a_dropped_or_reset_sleep_leaves_no_registration() {
        let key = smol::block_on(async {
            let mut s = Sleep::after(Duration::from_secs(3600));
            assert!(futures_lite::future::poll_once(&mut s).await.is_none());
            let key = s.key.expect("registered");
            let old = s.deadline();
            s.reset(Instant::now() + Duration::from_secs(7200));
            assert!(!wheel().lock().timers.contains_key(&(old, key)));
            assert!(futures_lite::future::poll_once(&mut s).await.is_none());
            let key = s.key.expect("registered again");
            let d = s.deadline();
            drop(s);
            (d, key)
        });
        assert!(!wheel().lock().timers.contains_key(&key));
    }

    #[test]
    fn a_past_deadline_is_ready_without_registering() {
        let mut s = Sleep::until(Instant::now() - Duration::from_millis(1));
        let ready = smol::block_on(futures_lite::future::poll_once(&mut s));
        assert!(ready.is_some());
        assert!(s.key.is_none());
    }
}
