//! Idle client sessions for `--scale`, opened from the bench process with burrow's library:
//! one `Client` per session (a `-R` binding each, as a real client has), each with its own
//! WebSocket, keepalive and reconnect loop, all on one executor thread. A `burrow client`
//! process per session would measure 1,000 processes rather than the relay.

use anyhow::{Context, Result, anyhow, bail};
use burrow::client::{Client, ClientConfig, Event};
use burrow::exec::{Runtime, TaskGuard};
use burrow::shutdown::Shutdown;
use futures_lite::FutureExt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Sessions connected at once: more would queue behind the relay's cap on connections not
/// yet upgraded (a quarter of `--max-connections`) and retry after a backoff.
const BATCH: usize = 100;
/// Longest a batch may take to connect and bind.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The open sessions. Dropping this stops them (abort: no drain) and their executor.
pub struct Sessions {
    rt: Runtime,
    running: Vec<(Shutdown, TaskGuard)>,
}

impl Sessions {
    /// One executor thread for every session (the bench's other threads block on sockets).
    pub fn new() -> Sessions {
        Sessions {
            rt: Runtime::new(1),
            running: Vec::new(),
        }
    }

    /// Opens sessions to `relay` until there are `n`, each binding `-R 127.0.0.1:0:TARGET`
    /// and pinging every `keepalive`; returns once every one is bound.
    pub fn grow_to(
        &mut self,
        relay: SocketAddr,
        target: SocketAddr,
        n: usize,
        keepalive: Duration,
    ) -> Result<()> {
        while self.running.len() < n {
            let batch = BATCH.min(n - self.running.len());
            let mut waits = Vec::with_capacity(batch);
            for _ in 0..batch {
                let url = format!("ws://{relay}/burrow")
                    .parse()
                    .map_err(|e| anyhow!("relay URL: {e}"))?;
                let mut cfg = ClientConfig::new(url);
                cfg.remotes = vec![
                    format!("127.0.0.1:0:{target}")
                        .parse()
                        .map_err(|e| anyhow!("-R spec: {e}"))?,
                ];
                cfg.session.keepalive = keepalive;
                let client = self
                    .rt
                    .block_on(Client::bind(cfg))
                    .map_err(|e| anyhow!("client: {e}"))?;
                waits.push(client.events());
                let shutdown = Shutdown::new();
                let run = client.run(self.rt.spawner(), shutdown.signal());
                let task = self.rt.spawner().spawn_boxed(Box::pin(async move {
                    if let Err(e) = run.await {
                        eprintln!("scale: a session's client ended: {e}");
                    }
                }));
                self.running.push((shutdown, task));
            }
            let t = Instant::now();
            let bound = self.rt.block_on(
                async move {
                    for events in waits {
                        loop {
                            match events.recv().await {
                                Ok(Event::Bound { .. }) => break,
                                Ok(Event::BindRefused { reason, .. }) => {
                                    return Err(anyhow!("bind refused: {reason}"));
                                }
                                Ok(_) => {}
                                Err(_) => return Err(anyhow!("a client stopped before binding")),
                            }
                        }
                    }
                    Ok(())
                }
                .or(async {
                    smol::Timer::after(BATCH_TIMEOUT).await;
                    Err(anyhow!("not bound within {BATCH_TIMEOUT:?}"))
                }),
            );
            bound.with_context(|| format!("sessions {} of {n}", self.running.len()))?;
            eprintln!(
                "scale: {} sessions bound ({batch} in {:.2?})",
                self.running.len(),
                t.elapsed()
            );
        }
        if self.running.len() > n {
            bail!("{} sessions open, more than {n}", self.running.len());
        }
        Ok(())
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for (shutdown, _) in &self.running {
            shutdown.abort();
        }
        // The tasks are cancelled as they drop; the runtime's thread stops after them.
        self.running.clear();
    }
}
