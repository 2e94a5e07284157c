//! Deadlines: racing a future against a timer ([`Sleep`], which costs no system call to set);
//! and [`utc::UtcSecond`], a UTC time printed without a date-time crate.

use std::time::Duration;

pub mod utc;
mod wheel;
pub use wheel::Sleep;

/// Races `fut` with a timer; on expiry returns `on_timeout()`.
pub async fn with_timeout<T, E>(
    d: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
    on_timeout: impl FnOnce() -> E,
) -> Result<T, E> {
    use futures_lite::FutureExt;
    let timer = async {
        Sleep::after(d).await;
        None
    };
    match async { Some(fut.await) }.or(timer).await {
        Some(r) => r,
        None => Err(on_timeout()),
    }
}

/// Runs `fut` unless `stop` resolves first, which gives `None` (for a shutdown racing an
/// operation or a pause). `fut` is polled first, so a result that is ready wins. Cancel-safe
/// when `fut` is.
pub async fn unless<T>(
    stop: impl std::future::Future<Output = ()>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    use futures_lite::FutureExt;
    async { Some(fut.await) }
        .or(async {
            stop.await;
            None
        })
        .await
}

/// Runs `fut` for at most `d`: `None` when the time ran out first.
pub async fn within<T>(d: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    unless(Sleep::after(d), fut).await
}
