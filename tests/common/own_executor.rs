//! For tests that run sessions on an executor of their own (never smol's global one), with
//! deadlines: included with `#[path]` by the session suites, which need no sockets.
#![allow(dead_code)]

use futures_lite::FutureExt;
use smol::Executor;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Longest a whole test may run before it fails instead of hanging CI.
const TEST_DEADLINE: Duration = Duration::from_secs(60);
/// Longest one awaited step may take.
const STEP_DEADLINE: Duration = Duration::from_secs(20);

/// Runs `f` on a fresh executor owned by this test, with a deadline.
pub fn on_own_executor<F, Fut>(f: F)
where
    F: FnOnce(Arc<Executor<'static>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let ex = Arc::new(Executor::new());
    let fut = f(ex.clone());
    futures_lite::future::block_on(ex.run(fut.or(async {
        smol::Timer::after(TEST_DEADLINE).await;
        panic!("test deadline passed")
    })));
}

/// Awaits `f`, failing the test with `what` after a deadline.
pub async fn deadline<T>(what: &str, f: impl Future<Output = T>) -> T {
    f.or(async {
        smol::Timer::after(STEP_DEADLINE).await;
        panic!("{what}: timed out")
    })
    .await
}
