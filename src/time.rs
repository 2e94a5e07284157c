//! Deadlines: racing a future against a timer.

use std::time::Duration;

/// Races `fut` with a timer; on expiry returns `on_timeout()`.
pub async fn with_timeout<T, E>(
    d: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
    on_timeout: impl FnOnce() -> E,
) -> Result<T, E> {
    use futures_lite::FutureExt;
    let timer = async {
        smol::Timer::after(d).await;
        None
    };
    match async { Some(fut.await) }.or(timer).await {
        Some(r) => r,
        None => Err(on_timeout()),
    }
}
