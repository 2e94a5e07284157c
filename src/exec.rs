//! Spawning without a runtime: the library spawns only through a [`Spawn`] handle it is given,
//! and every task it spawns belongs to a [`TaskSet`] whose drop cancels it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

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
        let weak: Weak<Mutex<Inner>> = Arc::downgrade(&self.inner);
        let idle = self.idle.0.clone();
        let mut inner = lock(&self.inner);
        let id = inner.next_id;
        inner.next_id += 1;
        let guard = self.spawner.spawn_boxed(Box::pin(async move {
            fut.await;
            // Remove our own handle. Dropping a finished task's handle is a no-op; the
            // guard is dropped outside the lock.
            if let Some(inner) = weak.upgrade() {
                let removed = {
                    let mut inner = lock(&inner);
                    let removed = inner.tasks.remove(&id);
                    if inner.tasks.is_empty() {
                        // A full channel already carries the wake-up; nothing is lost.
                        let _ = idle.try_send(());
                    }
                    removed
                };
                drop(removed);
            }
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

/// A multi-threaded smol executor owned by a role: `threads` workers run until the
/// returned handle is dropped.
pub struct Runtime {
    executor: Arc<smol::Executor<'static>>,
    stop: Option<smol::channel::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Runtime {
    /// Starts `threads` worker threads (at least one).
    pub fn new(threads: usize) -> Self {
        let executor = Arc::new(smol::Executor::new());
        let (stop, stopped) = smol::channel::unbounded::<()>();
        let threads = (0..threads.max(1))
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

    /// Runs `fut` to completion on the calling thread while the workers run tasks.
    pub fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        smol::block_on(self.executor.run(fut))
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
