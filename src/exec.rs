//! Spawning without a runtime: the library spawns only through a [`Spawn`] handle it is given,
//! and every task it spawns belongs to a [`TaskSet`] whose drop cancels it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

/// A boxed task body.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A handle to a running task. Dropping it must cancel the task (as `smol::Task` does).
pub type TaskGuard = Box<dyn Send + Sync>;

/// Something that can run futures: a `smol::Executor`, or a test's own executor.
pub trait Spawn: Send + Sync + 'static {
    /// Starts `fut`; the returned guard cancels it when dropped.
    fn spawn_boxed(&self, fut: BoxFuture) -> TaskGuard;
}

impl Spawn for smol::Executor<'static> {
    fn spawn_boxed(&self, fut: BoxFuture) -> TaskGuard {
        Box::new(self.spawn(fut))
    }
}

/// A shared spawn handle.
pub type Spawner = Arc<dyn Spawn>;

/// The owner of a group of tasks (one listener's connections, one session's streams).
///
/// Finished tasks remove themselves, so the set holds only live ones; dropping the set
/// cancels every task still in it.
pub struct TaskSet {
    spawner: Spawner,
    inner: Arc<Mutex<Inner>>,
    idle: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
}

impl std::fmt::Debug for TaskSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSet")
            .field("tasks", &self.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    next_id: u64,
    tasks: HashMap<u64, TaskGuard>,
    /// Set once the owner is gone: late finishers must not touch the map.
    closed: bool,
}

impl TaskSet {
    /// A new, empty set that spawns on `spawner`.
    pub fn new(spawner: Spawner) -> Self {
        TaskSet {
            spawner,
            inner: Arc::new(Mutex::new(Inner {
                next_id: 0,
                tasks: HashMap::new(),
                closed: false,
            })),
            idle: smol::channel::bounded(1),
        }
    }

    /// The spawn handle this set uses.
    pub fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    /// Spawns `fut` as a member of this set.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut inner = lock(&self.inner);
        let id = inner.next_id;
        inner.next_id += 1;
        let done = Done {
            set: Arc::downgrade(&self.inner),
            idle: self.idle.0.clone(),
            id,
        };
        let guard = self.spawner.spawn_boxed(Box::pin(Tracked {
            fut,
            done: Some(done),
        }));
        if !inner.closed {
            inner.tasks.insert(id, guard);
        }
    }

    /// How many tasks are still running.
    pub fn len(&self) -> usize {
        lock(&self.inner).tasks.len()
    }

    /// True when no task is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The graceful end of a role: waits for every task to finish, at most `timeout` and not
    /// past an abort, then cancels what is left. Returns how many tasks were cancelled.
    pub async fn drain(
        self,
        timeout: std::time::Duration,
        shutdown: &crate::shutdown::ShutdownSignal,
    ) -> usize {
        // Whichever comes first: every task done, the deadline, or an abort.
        let _ = crate::time::unless(
            shutdown.aborted(),
            crate::time::within(timeout, self.wait_empty()),
        )
        .await;
        let left = self.len();
        drop(self);
        left
    }

    /// Resolves once every task has finished (immediately when none runs).
    /// Cancel-safe: dropping it loses nothing.
    pub async fn wait_empty(&self) {
        while !self.is_empty() {
            // The sender lives in `self`, so this never errors; it wakes on every
            // transition to empty, and the loop re-checks.
            let _ = self.idle.1.recv().await;
        }
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        let tasks = {
            let mut inner = lock(&self.inner);
            inner.closed = true;
            std::mem::take(&mut inner.tasks)
        };
        // Cancels every remaining task (outside the lock: a task's drop may touch the set).
        drop(tasks);
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts
    // and removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pin_project_lite::pin_project! {
    /// A task body that leaves its set when it finishes. A hand-written future rather than an
    /// `async` block: an async block that awaits a captured future stores it twice (once as
    /// the capture, once as the awaited value), doubling every connection's task.
    struct Tracked<F> {
        #[pin]
        fut: F,
        done: Option<Done>,
    }
}

impl<F: Future<Output = ()>> Future for Tracked<F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.fut.poll(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(done) = this.done.take() {
            done.finish();
        }
        Poll::Ready(())
    }
}

/// Removes a finished task from its set.
struct Done {
    set: Weak<Mutex<Inner>>,
    idle: smol::channel::Sender<()>,
    id: u64,
}

impl Done {
    fn finish(self) {
        let Some(inner) = self.set.upgrade() else {
            return;
        };
        let removed = {
            let mut inner = lock(&inner);
            let removed = inner.tasks.remove(&self.id);
            if inner.tasks.is_empty() {
                // A full channel already carries the wake-up; nothing is lost.
                let _ = self.idle.try_send(());
            }
            removed
        };
        // Dropping a finished task's handle is a no-op; it is dropped outside the lock.
        drop(removed);
    }
}

/// A multi-threaded smol executor owned by a role: `threads` workers run until the
/// returned handle is dropped.
pub struct Runtime {
    executor: Arc<smol::Executor<'static>>,
    stop: Option<smol::channel::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts `threads` worker threads (0: only the thread that calls `block_on` runs tasks).
    pub fn new(threads: usize) -> Self {
        let executor = Arc::new(smol::Executor::new());
        let (stop, stopped) = smol::channel::unbounded::<()>();
        let threads = (0..threads)
            .map(|i| {
                let ex = executor.clone();
                let stopped = stopped.clone();
                std::thread::Builder::new()
                    .name(format!("burrow-{i}"))
                    .spawn(move || {
                        // Ends when the stop channel closes.
                        let _ = smol::block_on(ex.run(stopped.recv()));
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        Runtime {
            executor,
            stop: Some(stop),
            threads,
        }
    }

    /// The spawn handle for library code.
    pub fn spawner(&self) -> Spawner {
        self.executor.clone()
    }

    /// Runs `fut` to completion as a task while the calling thread works for the executor
    /// too. (A future polled by `block_on` itself would be re-polled on every wake-up of the
    /// thread, retrying an idle `accept` each time.)
    pub fn block_on<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let task = self.executor.spawn(fut);
        smol::block_on(self.executor.run(task))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        drop(self.stop.take());
        for t in self.threads.drain(..) {
            // A worker that panicked has nothing left for us to clean up.
            let _ = t.join();
        }
    }
}
