//! One relay of a client: what is per relay (its URL and TLS client, its session id, the
//! ports it gave our `-R` bindings, its readiness and status) and the reconnect loop that
//! holds one session to it, with its own backoff. The [`Client`] runs one link per relay and
//! shares the rest among them: the configuration in force and the `-L` listeners
//! ([`live::Live`]), the set of sessions `-L` streams choose from, the metrics, the events.

use super::*;
use std::future::Future;
use std::sync::atomic::AtomicBool;

/// One relay the client holds a session to.
pub(super) struct RelayLink {
    /// its place in config order: its slot in `current`, its series in the metrics
    pub(super) index: usize,
    pub(super) url: TunnelUrl,
    /// the client has several relays: events say which (wrapped in [`Event::Relay`])
    tagged: bool,
    /// the configuration the client started with (what only a restart changes: token,
    /// `--via`, timeouts, session settings); what a reload changes is read from `live`
    pub(super) cfg: Arc<ClientConfig>,
    pub(super) metrics: Arc<Metrics>,
    /// what this relay knows us by (each relay its own: they share nothing)
    pub(super) session_id: String,
    events: Sender<Event>,
    /// the sessions `-L` streams choose from, one slot per relay
    pub(super) current: Arc<CurrentSession>,
    /// ports this relay gave each binding, asked for again after a reconnect
    pub(super) bound_ports: Mutex<HashMap<u32, u16>>,
    /// what a reload changes, shared by every relay
    pub(super) live: Arc<live::Live>,
    pub(super) readiness: Readiness,
    /// what `/status` shows of this relay
    pub(super) status: status::Board,
    /// set while some relay's session serves the `-L stdio:` stream (one at a time)
    stdio_taken: Arc<AtomicBool>,
    #[cfg(feature = "tls")]
    pub(super) tls: Option<crate::tls::ClientTls>,
}

/// What every link of one client shares.
pub(super) struct Shared {
    pub(super) cfg: Arc<ClientConfig>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) events: Sender<Event>,
    pub(super) current: Arc<CurrentSession>,
    pub(super) live: Arc<live::Live>,
    pub(super) stdio_taken: Arc<AtomicBool>,
}

impl RelayLink {
    /// The link to relay `index` (`url`) of `shared.cfg`.
    pub(super) fn new(index: usize, url: TunnelUrl, shared: &Shared) -> Result<Self, ClientError> {
        #[cfg(feature = "tls")]
        let tls = match url.tls {
            true => Some(
                crate::tls::ClientTls::new(&shared.cfg.tls)
                    .map_err(|e| ClientError::Fatal(e.to_string()))?,
            ),
            false => None,
        };
        #[cfg(feature = "tls")]
        if shared.cfg.tls.insecure && url.tls {
            log::warn!(
                "--insecure: the certificate of relay {url} is not verified; anyone on the path can read and change the tunnel"
            );
        }
        Ok(RelayLink {
            index,
            url,
            tagged: !shared.cfg.more_relays.is_empty(),
            cfg: shared.cfg.clone(),
            metrics: shared.metrics.clone(),
            session_id: ws::random_id(),
            events: shared.events.clone(),
            current: shared.current.clone(),
            bound_ports: Mutex::new(HashMap::new()),
            live: shared.live.clone(),
            readiness: Readiness::new(shared.live.remote_ids()),
            status: status::Board::new(),
            stdio_taken: shared.stdio_taken.clone(),
            #[cfg(feature = "tls")]
            tls,
        })
    }

    /// Reports a state change of this relay: on its status board, in its metrics, and as an
    /// event (saying which relay when there are several).
    pub(super) fn emit(&self, e: Event) {
        let was_up = self.status.was_up();
        self.status.record(&e);
        match &e {
            Event::Connected | Event::Resumed { .. } => {
                self.metrics.relay_up(self.index, true);
                if was_up {
                    self.metrics.relay_reconnected(self.index);
                }
            }
            Event::Lost(_) | Event::Suspended { .. } => self.metrics.relay_up(self.index, false),
            _ => {}
        }
        let e = match self.tagged {
            true => Event::Relay {
                relay: self.url.to_string(),
                event: Box::new(e),
            },
            false => e,
        };
        log::debug!("client: {e}");
        // Unbounded channel: never full; closed only when the client is gone.
        let _ = self.events.try_send(e);
    }

    /// Holds a session to this relay until shutdown (then drains) or a fatal error, or until
    /// the `-L stdio:` stream this relay carried ends.
    pub(super) async fn run(
        &self,
        spawner: &Spawner,
        shutdown: &ShutdownSignal,
    ) -> Result<(), ClientError> {
        let stdio = self.cfg.locals.iter().find_map(|s| match s {
            LocalSpec::Stdio { host, port } => Some((host.clone(), *port)),
            _ => None,
        });
        let mut retry = Retry::new(&self.session_id);
        // A connection the relay upgraded for a new session while we asked to resume one.
        let mut ready: Option<Box<Link>> = None;
        let mut first = true;
        loop {
            let link = match ready.take() {
                Some(link) => link,
                None => {
                    let next = self.next_link(&mut retry, &ResumeAsk::New, shutdown, !first);
                    match next.await {
                        Next::Link(link) => link,
                        Next::Stop(result) => return result,
                        // No deadline without a session to resume.
                        Next::GaveUp => continue,
                    }
                }
            };
            first = false;
            let started = Instant::now();
            let (session, driver) = self.new_session(&link);
            let live = self.live(
                &session, driver, *link, spawner, shutdown, &stdio, &mut retry,
            );
            match live.await {
                SessionEnd::Stdio(result) | SessionEnd::Stop(result) => return result,
                SessionEnd::Drained => return Ok(()),
                SessionEnd::Lost(why) => self.emit(Event::Lost(why)),
                SessionEnd::Replaced(link) => ready = Some(link),
            }
            if started.elapsed() >= STABLE_SESSION {
                retry.attempt = 0;
            }
        }
    }

    /// A new session that is up: it is this relay's in the set `-L` connections choose from
    /// (and ready) while it is served, across the connections that resume it. It carries the
    /// `-L stdio:` stream when no other relay's session does.
    #[allow(clippy::too_many_arguments)]
    async fn live(
        &self,
        session: &Session,
        driver: crate::tunnel::Driver,
        link: Link,
        spawner: &Spawner,
        shutdown: &ShutdownSignal,
        stdio: &Option<(String, u16)>,
        retry: &mut Retry,
    ) -> SessionEnd {
        self.readiness.new_session();
        self.readiness.set_connected(true);
        self.emit(Event::Connected);
        self.current.set(self.index, Some(session.clone()));
        self.status.set_session(Some(session.clone()));
        let take = || {
            self.stdio_taken
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        };
        let stdio = stdio.as_ref().filter(|_| take());
        let conn = (driver, link);
        let end = self
            .serve_session(session, conn, spawner, shutdown, stdio, retry)
            .await;
        if stdio.is_some() {
            self.stdio_taken.store(false, Ordering::SeqCst);
        }
        self.live.session_ended(session);
        self.current.set(self.index, None);
        self.status.set_session(None);
        self.readiness.set_connected(false);
        end
    }

    pub(super) fn remote_target(&self, bind_id: u32) -> String {
        self.live
            .remote(bind_id)
            .map(|r| r.to_string())
            .unwrap_or_else(|| format!("binding {bind_id}"))
    }
}

/// True when `/readyz` should answer 200: every relay (or, with `--ready any`, one) connected
/// with every `-R` in force bound on it.
pub(super) fn ready(links: &[Arc<RelayLink>], when: ReadyWhen) -> bool {
    let mut each = links.iter().map(|l| l.readiness.is_ready());
    match when {
        ReadyWhen::All => each.all(|r| r),
        ReadyWhen::Any => each.any(|r| r),
    }
}

/// Runs every link until each is done, or until one ends the client (a fatal error, or the
/// `-L stdio:` stream ended): then the others are dropped with it. On shutdown each link
/// drains its own session, and this waits for the last.
pub(super) async fn run_all(
    links: &[Arc<RelayLink>],
    spawner: &Spawner,
    shutdown: &ShutdownSignal,
) -> Result<(), ClientError> {
    type Run<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send + 'a>>;
    let mut runs: Vec<Option<Run<'_>>> = links
        .iter()
        .map(|l| Some(Box::pin(l.run(spawner, shutdown)) as Run<'_>))
        .collect();
    // Polls every link still running at each wake: a handful of relays, each a few futures.
    std::future::poll_fn(|cx| {
        for slot in runs.iter_mut() {
            let Some(run) = slot else { continue };
            if let std::task::Poll::Ready(result) = run.as_mut().poll(cx) {
                *slot = None;
                if result.is_err() || !shutdown.is_draining() {
                    return std::task::Poll::Ready(result);
                }
            }
        }
        match runs.iter().all(Option::is_none) {
            true => std::task::Poll::Ready(Ok(())),
            false => std::task::Poll::Pending,
        }
    })
    .await
}
