//! Shutdown: signals become one cancellation handle.
//!
//! Two stages. [`Shutdown::drain`] (first SIGINT/SIGTERM): roles stop accepting, send go-away and
//! let open connections finish. [`Shutdown::abort`] (second signal, or the drain deadline): roles
//! drop every task at once. Waiters learn of a stage by a closed channel, which wakes all of
//! them at once and can never be missed.

use smol::channel::{Receiver, Sender};
use std::sync::{Arc, Mutex};

/// The trigger side; cloning is cheap, every clone triggers the same stages.
#[derive(Clone)]
pub struct Shutdown {
    drain_tx: Arc<Mutex<Option<Sender<()>>>>,
    abort_tx: Arc<Mutex<Option<Sender<()>>>>,
    signal: ShutdownSignal,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("signal", &self.signal)
            .finish()
    }
}

/// The listening side, handed to roles.
#[derive(Clone)]
pub struct ShutdownSignal {
    drain_rx: Receiver<()>,
    abort_rx: Receiver<()>,
}

impl std::fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownSignal")
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A handle with neither stage triggered.
    pub fn new() -> Self {
        let (drain_tx, drain_rx) = smol::channel::bounded(1);
        let (abort_tx, abort_rx) = smol::channel::bounded(1);
        Shutdown {
            drain_tx: Arc::new(Mutex::new(Some(drain_tx))),
            abort_tx: Arc::new(Mutex::new(Some(abort_tx))),
            signal: ShutdownSignal { drain_rx, abort_rx },
        }
    }

    /// The signal roles listen on.
    pub fn signal(&self) -> ShutdownSignal {
        self.signal.clone()
    }

    /// Stage one: stop accepting, let open work finish.
    pub fn drain(&self) {
        take(&self.drain_tx);
    }

    /// Stage two: drop everything now (implies drain).
    pub fn abort(&self) {
        self.drain();
        take(&self.abort_tx);
    }
}

fn take(tx: &Mutex<Option<Sender<()>>>) {
    // Dropping the only sender closes the channel and wakes every receiver.
    drop(tx.lock().unwrap_or_else(|e| e.into_inner()).take());
}

impl ShutdownSignal {
    /// A signal that never fires (for callers that do not shut down).
    pub fn never() -> Self {
        let sd = Shutdown::new();
        let signal = sd.signal();
        // Keep the senders alive forever: this signal must not fire.
        std::mem::forget(sd);
        signal
    }

    /// Resolves once draining has begun. Cancel-safe.
    pub async fn draining(&self) {
        // Only closing ends a receive: nothing is ever sent.
        let _ = self.drain_rx.recv().await;
    }

    /// Resolves once abort was requested. Cancel-safe.
    pub async fn aborted(&self) {
        let _ = self.abort_rx.recv().await;
    }

    /// True once draining has begun.
    pub fn is_draining(&self) -> bool {
        self.drain_rx.is_closed()
    }

    /// True once abort was requested.
    pub fn is_aborted(&self) -> bool {
        self.abort_rx.is_closed()
    }
}

/// Turns SIGINT/SIGTERM into `shutdown`: the first starts the drain, the second exits the
/// process at once with status 130. Runs forever; the binary spawns it for its whole life
/// (dropping async-signal's `Signals` does not restore the default action: a later Ctrl-C
/// would be ignored).
pub async fn watch_signals(shutdown: Shutdown) -> std::io::Result<()> {
    use async_signal::{Signal, Signals};
    use futures_lite::StreamExt;
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    let mut seen = 0;
    while let Some(sig) = signals.next().await {
        let sig = sig?;
        seen += 1;
        if seen == 1 {
            log::info!("received {sig:?}: draining (send it again to exit at once)");
            shutdown.drain();
        } else {
            log::warn!("received {sig:?} again: exiting now");
            std::process::exit(130);
        }
    }
    Ok(())
}

/// Calls `reload` on every SIGHUP (certificate reloads). Runs forever; the binary spawns it
/// for the role's whole life.
pub async fn watch_hangups(mut reload: impl FnMut()) -> std::io::Result<()> {
    use async_signal::{Signal, Signals};
    use futures_lite::StreamExt;
    let mut signals = Signals::new([Signal::Hup])?;
    while let Some(sig) = signals.next().await {
        sig?;
        reload();
    }
    Ok(())
}
