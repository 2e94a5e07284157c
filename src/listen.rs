//! Listeners: the one accept loop every role runs (a per-listener connection limit, a
//! [`TaskSet`] owning the connection tasks, the drain on shutdown).

use crate::exec::{Spawner, TaskSet};
use crate::shutdown::ShutdownSignal;
use smol::net::{TcpListener, TcpStream};
use std::borrow::Borrow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

/// How long to pause after a failed accept (out of descriptors, a reset in the backlog):
/// long enough not to spin on a persistent error, short enough not to be noticed.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Accepts the next connection, or `None` once `shutdown` drains. A failed accept (out of
/// descriptors, a connection reset in the backlog) is logged and retried after a short pause
/// instead of spinning. Cancel-safe.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &ShutdownSignal,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = crate::time::unless(shutdown.draining(), listener.accept()).await?;
        match accepted {
            Ok((stream, peer)) => {
                stream.set_nodelay(true).ok();
                return Some((stream, peer));
            }
            Err(e) => {
                log::warn!("{what}: accept failed: {e}");
                smol::Timer::after(ACCEPT_RETRY).await;
            }
        }
    }
}

/// An error a refusal's answer ended with (logged by the loop, at debug: the peer is being
/// turned away anyway).
pub type AnswerError = Box<dyn std::error::Error + Send + Sync>;

/// How a connection that is not served is turned away (the action; `refusal::Refusal` is the
/// reason). The loop awaits the answer before it
/// accepts again, so the answer must be bounded in time (the refusal writer has a deadline).
pub enum TurnAway {
    /// Closed without a word (the stream is dropped).
    Close,
    /// Answered by this future, which owns the stream and closes it.
    Answer(Pin<Box<dyn Future<Output = Result<(), AnswerError>> + Send>>),
}

impl std::fmt::Debug for TurnAway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TurnAway::Close => "TurnAway::Close",
            TurnAway::Answer(_) => "TurnAway::Answer",
        })
    }
}

impl TurnAway {
    /// A refusal answered by `fut` (which owns the stream).
    pub fn answer<E>(fut: impl Future<Output = Result<(), E>> + Send + 'static) -> Self
    where
        E: Into<AnswerError>,
    {
        TurnAway::Answer(Box::pin(async { fut.await.map_err(Into::into) }))
    }

    async fn send(self, what: &str, peer: SocketAddr) {
        if let TurnAway::Answer(fut) = self {
            if let Err(e) = fut.await {
                log::debug!("{what} {peer}: refusal not delivered: {e}");
            }
        }
    }
}

/// What happens to the connections still open once the listener stops accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// A role's own listener: they may finish within this time (or until abort), then the rest
    /// are cancelled, and both steps are logged.
    Within(Duration),
    /// A listener inside a session: they may finish; the session's own drain cancels this loop
    /// at its deadline.
    Owner,
    /// They are cancelled at once (each ends on the drain by itself anyway).
    Cancel,
}

/// One listener's accept loop: what it is called in logs, how many connections it serves at
/// once, and how it ends.
#[derive(Debug, Clone, Copy)]
pub struct AcceptLoop<'a> {
    /// the listener's name in log lines (`proxy`, `relay`, a session label)
    pub what: &'a str,
    /// connections served at once; one more is handed to the over-limit refusal
    pub limit: usize,
    /// what becomes of open connections after shutdown
    pub drain: Drain,
}

impl AcceptLoop<'_> {
    /// Accepts on `listener` until `shutdown` drains. Each connection goes to `admit`, which
    /// returns its task (spawned into this listener's [`TaskSet`]) or a refusal; once `limit`
    /// tasks run, a new connection goes to `over_limit` (given how many are open) instead, which
    /// logs and says how to refuse it. Then `listener` is dropped (new connections are
    /// refused by the kernel, unless the caller holds another handle) and the open connections
    /// end as [`Drain`] says.
    pub async fn run<L, A, O, F>(
        self,
        listener: L,
        spawner: Spawner,
        shutdown: &ShutdownSignal,
        mut admit: A,
        mut over_limit: O,
    ) where
        L: Borrow<TcpListener>,
        A: FnMut(TcpStream, SocketAddr) -> Result<F, TurnAway>,
        O: FnMut(TcpStream, SocketAddr, usize) -> TurnAway,
        F: Future<Output = ()> + Send + 'static,
    {
        let tasks = TaskSet::new(spawner);
        while let Some((stream, peer)) = accept(listener.borrow(), shutdown, self.what).await {
            let open = tasks.len();
            let verdict = if open >= self.limit {
                Err(over_limit(stream, peer, open))
            } else {
                admit(stream, peer)
            };
            match verdict {
                Ok(conn) => tasks.spawn(conn),
                Err(refusal) => refusal.send(self.what, peer).await,
            }
        }
        drop(listener);
        self.finish(tasks, shutdown).await;
    }

    async fn finish(self, tasks: TaskSet, shutdown: &ShutdownSignal) {
        let what = self.what;
        match self.drain {
            Drain::Within(timeout) => {
                if !tasks.is_empty() {
                    log::info!("{what} draining {} connections", tasks.len());
                }
                let cancelled = tasks.drain(timeout, shutdown).await;
                if cancelled > 0 {
                    log::warn!("{what} drain ended: cancelled {cancelled} connections");
                }
            }
            Drain::Owner => tasks.wait_empty().await,
            Drain::Cancel => drop(tasks),
        }
    }
}
