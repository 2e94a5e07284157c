//! Racing the driver's loops, each polled only when its own waker fired.
//!
//! `or` polls every branch on every wake-up of the task: a frame queued for the writer made
//! the reader try the socket again (a `recvfrom` that returns EAGAIN), and a message read made
//! the writer look at its queue. Here each branch has its own waker, which marks the branch
//! and wakes the task; a poll runs the marked branches only.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The futures raced by [`race`].
pub(super) type Branch<'a, T> = Pin<&'a mut (dyn Future<Output = T> + Send + 'a)>;

/// One branch's waker: marks the branch, then wakes the task.
struct Mark {
    woken: AtomicBool,
    task: Arc<Mutex<Option<Waker>>>,
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(w) = task {
            w.wake();
        }
    }
}

/// Resolves with the output of the first branch that finishes.
pub(super) async fn race<T, const N: usize>(mut branches: [Branch<'_, T>; N]) -> T {
    // The task's waker, shared by every branch's: one lock per poll to keep it current.
    let task: Arc<Mutex<Option<Waker>>> = Arc::default();
    let marks: [Arc<Mark>; N] = std::array::from_fn(|_| {
        Arc::new(Mark {
            // Every branch runs at the first poll.
            woken: AtomicBool::new(true),
            task: task.clone(),
        })
    });
    let wakers: [Waker; N] = std::array::from_fn(|i| Waker::from(marks[i].clone()));
    std::future::poll_fn(move |cx| {
        {
            let mut task = task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        for (i, mark) in marks.iter().enumerate() {
            if !mark.woken.swap(false, Ordering::AcqRel) {
                continue;
            }
            let mut bcx = Context::from_waker(&wakers[i]);
            if let Poll::Ready(v) = branches[i].as_mut().poll(&mut bcx) {
                return Poll::Ready(v);
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set.
    struct Probe<'a> {
        polls: &'a AtomicUsize,
        ready: &'a AtomicBool,
        waker: &'a Mutex<Option<Waker>>,
    }

    impl Future for Probe<'_> {
        type Output = usize;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.ready.load(Ordering::Relaxed) {
                return Poll::Ready(self.polls.load(Ordering::Relaxed));
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn a_wake_up_polls_only_the_branch_it_was_for() {
        let polls = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let ready = [AtomicBool::new(false), AtomicBool::new(false)];
        let wakers = [Mutex::new(None), Mutex::new(None)];
        let mut a = Probe {
            polls: &polls[0],
            ready: &ready[0],
            waker: &wakers[0],
        };
        let mut b = Probe {
            polls: &polls[1],
            ready: &ready[1],
            waker: &wakers[1],
        };
        let (pa, pb): (Pin<&mut Probe>, Pin<&mut Probe>) = (Pin::new(&mut a), Pin::new(&mut b));
        let branches: [Branch<'_, usize>; 2] = [pa, pb];
        let mut fut = Box::pin(race(branches));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.each_ref().map(|p| p.load(Ordering::Relaxed)), [1, 1]);
        // Waking branch b three times polls b only, once per poll of the race.
        for round in 2..5 {
            wakers[1].lock().unwrap().take().unwrap().wake();
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert_eq!(polls[0].load(Ordering::Relaxed), 1);
            assert_eq!(polls[1].load(Ordering::Relaxed), round);
        }
        // A poll without any wake-up polls nothing.
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls[1].load(Ordering::Relaxed), 4);
        // Branch a finishes when woken: its output is the race's.
        ready[0].store(true, Ordering::Relaxed);
        wakers[0].lock().unwrap().take().unwrap().wake();
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(2));
    }
}
