//! The relay's lame duck: when shutdown begins, `/readyz` answers 503 at once while the
//! relay keeps accepting and serving for [`RelayConfig::lame_duck`](super::RelayConfig), so
//! that a load balancer's health check takes it out of rotation before it stops accepting.
//! Then the drain starts as without a lame duck. An abort skips what is left of it.
//!
//! Shape: the relay's work watches an inner [`Shutdown`] that follows the outer one (the
//! one `run` was given) after the delay; readiness watches the outer one.

use crate::shutdown::{Shutdown, ShutdownSignal};
use std::time::Duration;

/// The inner shutdown and whether the relay is ready, for one relay run.
#[derive(Debug, Clone)]
pub(super) struct LameDuck {
    /// what `run` was given: readiness ends when it drains
    outer: ShutdownSignal,
    /// what everything else of the relay watches: drains `delay` after `outer`, aborts with it
    inner: Shutdown,
    delay: Duration,
}

impl LameDuck {
    /// A lame duck of `delay` between `outer` draining and the relay's own drain.
    pub(super) fn new(outer: ShutdownSignal, delay: Duration) -> Self {
        LameDuck {
            outer,
            inner: Shutdown::new(),
            delay,
        }
    }

    /// The signal the relay's listeners, sessions and streams watch.
    pub(super) fn signal(&self) -> ShutdownSignal {
        self.inner.signal()
    }

    /// Whether the relay is ready for new traffic (what `/readyz` says): until the outer
    /// shutdown drains.
    pub(super) fn ready(&self) -> crate::http::surface::Ready {
        let outer = self.outer.clone();
        std::sync::Arc::new(move || !outer.is_draining())
    }

    /// Drives the inner shutdown: drains it `delay` after the outer one drains (at once on
    /// an abort), and aborts it with the outer one. Never ends. Dropping it drops the inner
    /// trigger, which closes both stages (whatever still watches sees an abort); `run` drops
    /// it only once the relay has stopped, or when `run` itself is dropped.
    pub(super) async fn follow(self) {
        self.outer.draining().await;
        if !self.delay.is_zero() && !self.outer.is_aborted() {
            log::info!(
                "relay: lame duck for {}: /readyz 503, still serving",
                show(self.delay)
            );
            let left =
                crate::time::unless(self.outer.aborted(), crate::time::Sleep::after(self.delay));
            if left.await.is_none() {
                log::info!("relay: aborted during the lame duck");
            }
        }
        self.inner.drain();
        self.outer.aborted().await;
        self.inner.abort();
        std::future::pending::<()>().await
    }
}

/// `5 s`, `1.5 s`, `300 ms`: a delay as the log line shows it.
fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_show_in_their_unit() {
        let cases = [
            (Duration::from_secs(5), "5 s"),
            (Duration::from_millis(300), "300 ms"),
            (Duration::from_millis(1500), "1.5 s"),
            (Duration::from_secs(60), "60 s"),
        ];
        for (d, want) in cases {
            assert_eq!(show(d), want);
        }
    }

    #[test]
    fn ready_until_the_outer_drains_inner_follows_after_the_delay() {
        smol::block_on(async {
            let outer = Shutdown::new();
            let lame = LameDuck::new(outer.signal(), Duration::from_secs(60));
            let (inner, ready) = (lame.signal(), lame.ready());
            let follow = smol::spawn(lame.follow());
            assert!(ready());
            outer.drain();
            assert!(!ready());
            assert!(!inner.is_draining(), "the lame duck keeps the relay up");
            outer.abort();
            let aborted = crate::time::within(Duration::from_secs(10), inner.aborted());
            assert!(
                aborted.await.is_some(),
                "an abort ends the lame duck at once"
            );
            assert!(inner.is_draining());
            drop(follow);
        });
    }

    #[test]
    fn a_zero_delay_drains_at_once() {
        smol::block_on(async {
            let outer = Shutdown::new();
            let lame = LameDuck::new(outer.signal(), Duration::ZERO);
            let inner = lame.signal();
            let _follow = smol::spawn(lame.follow());
            outer.drain();
            let drained = crate::time::within(Duration::from_secs(10), inner.draining());
            assert!(drained.await.is_some());
            assert!(!inner.is_aborted());
        });
    }
}
