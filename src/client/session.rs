//! One session's life on the client: the `-R` bindings asked for, the relay's answers to
//! them, the streams the relay opens, the drain, `-L stdio`, and the bounded close.

use super::*;

/// How long a draining client waits for the relay's answer to its GO_AWAY.
const GO_AWAY_FENCE: Duration = Duration::from_secs(2);

impl RelayLink {
    /// Serves `session` until it is lost for good, drained, or its stdio stream ends.
    pub(super) async fn serve_session(
        &self,
        session: &Session,
        conn: (crate::tunnel::Driver, Link),
        spawner: &Spawner,
        shutdown: &ShutdownSignal,
        stdio: Option<&(String, u16)>,
        retry: &mut Retry,
    ) -> SessionEnd {
        let streams = TaskSet::new(spawner.clone());
        self.live
            .send_binds(session, conn.1.caps, &self.bound_ports);
        let done = std::sync::atomic::AtomicBool::new(false);
        let mut conns = std::pin::pin!(self.connections(session, conn, shutdown, retry, &done));
        let stdio_job = async {
            match stdio {
                Some((host, port)) => SessionEnd::Stdio(run_stdio(session, host, *port).await),
                None => std::future::pending().await,
            }
        };
        let lost = conns.as_mut();
        // Cancel-safety: the race ends the session; whatever loses is dropped with it.
        let end = lost
            .or(self.watch_binds(session))
            .or(self.accept_streams(session, &streams))
            .or(self.drain(session, shutdown))
            .or(stdio_job)
            .await;
        if !done.load(Ordering::Relaxed) {
            // We are the ones ending it: let the driver send the close frame (bounded).
            session.close("client done");
            let closed = async { Ok(conns.as_mut().await) };
            // Late: the close frame is given up on; the session ends either way.
            let _ = crate::time::with_timeout(CLOSE_WAIT, closed, || ()).await;
        }
        drop(streams);
        end
    }

    /// The relay's answers to the bindings (BOUND, BIND_REFUSED): remembered, reported,
    /// counted for readiness. Never ends by itself.
    async fn watch_binds(&self, session: &Session) -> SessionEnd {
        while let Some(frame) = session.session_frame().await {
            match frame {
                // An answer to a binding a reload removed since: not ours any more.
                Frame::Bound { bind_id, .. } | Frame::BindRefused { bind_id, .. }
                    if self.live.remote(bind_id).is_none() =>
                {
                    log::debug!(
                        "session {}: answer to removed binding {bind_id}",
                        session.label()
                    );
                }
                Frame::Bound { bind_id, addr } => {
                    if let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse().ok()) {
                        self.bound_ports
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(bind_id, port);
                    }
                    let in_force = self.live.remote_ids();
                    self.status.bind_answer(bind_id, &in_force, Ok(&addr));
                    let target = self.remote_target(bind_id);
                    self.readiness
                        .bound
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(bind_id);
                    self.emit(Event::Bound { addr, target });
                }
                Frame::BindRefused { bind_id, reason } => {
                    let in_force = self.live.remote_ids();
                    self.status.bind_answer(bind_id, &in_force, Err(&reason));
                    let target = self.remote_target(bind_id);
                    self.emit(Event::BindRefused { target, reason });
                }
                _ => {}
            }
        }
        // Session closed: the driver's result ends the race.
        std::future::pending().await
    }

    /// Streams the relay opens, each served on its own task in `streams`. Never ends by
    /// itself.
    async fn accept_streams(&self, session: &Session, streams: &TaskSet) -> SessionEnd {
        while let Some(inc) = session.accept().await {
            let (cfg, live) = (self.cfg.clone(), self.live.clone());
            let metrics = self.metrics.clone();
            let label = session.label().to_string();
            streams.spawn(async move { serve_incoming(&cfg, &live, inc, &label, &metrics).await });
        }
        std::future::pending().await
    }

    /// On shutdown: go-away, let the streams finish (within the drain timeout, or until
    /// abort), then close.
    async fn drain(&self, session: &Session, shutdown: &ShutdownSignal) -> SessionEnd {
        shutdown.draining().await;
        session.go_away("client shutting down");
        let settled = async {
            // The relay's answering GO_AWAY comes after every OPEN it sent before it read
            // ours: those streams are served too (a relay without the answer: bounded wait).
            let fence = async {
                while session.peer_going_away().is_none() && !session.is_closed() {
                    smol::Timer::after(Duration::from_millis(10)).await;
                }
                Ok(())
            };
            let _ = crate::time::with_timeout(GO_AWAY_FENCE, fence, || ()).await;
            session.streams_done().await;
            Ok(())
        };
        let drain_timeout = self.live.cfg().drain_timeout;
        let settled = crate::time::with_timeout(drain_timeout, settled, || ());
        // Late or aborted: the close below cuts what is left.
        let _ = settled
            .or(async {
                shutdown.aborted().await;
                Ok(())
            })
            .await;
        session.close("client shutting down");
        SessionEnd::Drained
    }
}
