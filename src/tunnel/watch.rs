//! A watched value: readers wait for a condition on it and are woken when it changes, never
//! by a timer (the session's stream count; the client role's "a session is up").

use event_listener::Event;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

/// A value whose changes wake the tasks waiting on it.
pub struct Watch<T> {
    value: Mutex<T>,
    changed: Event,
}

impl<T: fmt::Debug> fmt::Debug for Watch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Watch").field(&*self.lock()).finish()
    }
}

impl<T: Default> Default for Watch<T> {
    fn default() -> Self {
        Watch::new(T::default())
    }
}

impl<T> Watch<T> {
    /// A watch holding `value`.
    pub fn new(value: T) -> Self {
        Watch {
            value: Mutex::new(value),
            changed: Event::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        // Plain data: a panic elsewhere leaves it usable.
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the value and wakes every waiter.
    pub fn set(&self, value: T) {
        *self.lock() = value;
        self.changed.notify(usize::MAX);
    }

    /// Changes the value in place and wakes every waiter; returns what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify(usize::MAX);
        r
    }

    /// Reads the value.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.lock())
    }

    /// Resolves with `f`'s answer once it has one for the value (at once if it has now).
    /// Cancel-safe.
    pub async fn wait_for<R>(&self, f: impl Fn(&T) -> Option<R>) -> R {
        loop {
            if let Some(r) = self.with(&f) {
                return r;
            }
            let listener = self.changed.listen();
            // Re-check: the value may have changed between the read and the listen.
            if let Some(r) = self.with(&f) {
                return r;
            }
            listener.await;
        }
    }
}

impl<T: Clone> Watch<T> {
    /// A copy of the value.
    pub fn get(&self) -> T {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::FutureExt;
    use std::time::Duration;

    #[test]
    fn a_waiter_wakes_on_the_change_it_waits_for() {
        smol::block_on(async {
            let w = Watch::new(3usize);
            let waiter = w.wait_for(|n| (*n == 0).then_some("done"));
            let setter = async {
                for n in (0..3).rev() {
                    futures_lite::future::yield_now().await;
                    w.set(n);
                }
            };
            let both = async { futures_lite::future::zip(waiter, setter).await.0 };
            let got = both
                .or(async {
                    smol::Timer::after(Duration::from_secs(10)).await;
                    "timed out"
                })
                .await;
            assert_eq!(got, "done");
            // Already true: at once.
            assert_eq!(w.wait_for(|n| Some(*n)).await, 0);
        });
    }
}
