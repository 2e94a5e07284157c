//! `burrow client URL`: dials the relay (optionally through CONNECT proxies) and keeps one
//! multiplexed session alive, reconnecting with jittered exponential backoff. Serves `-L`
//! listeners locally and the relay's `-R` bindings from this network.

use crate::bridge::{self, MuxDialer};
use crate::client::spec::{LocalSpec, RemoteSpec};
use crate::dial::chain::{ChainNames, Upstream};
use crate::dial::host_port;
use crate::dial::rules::Rules;
use crate::exec::{Spawner, TaskSet};
use crate::http::auth::Credentials;
use crate::metrics::Metrics;
use crate::proxy::{ProxyConfig, serve_connection};
use crate::secret::Secret;
use crate::shutdown::ShutdownSignal;
use crate::tunnel::ws::{self, BoxIo, HandshakeError, TunnelUrl};
use crate::tunnel::{BindMode, Frame, Incoming, OpenTarget, Session, SessionConfig, Side};
use async_tungstenite::WebSocketStream;
use futures_lite::FutureExt;
use smol::channel::{Receiver, Sender};
use smol::net::{TcpListener, TcpStream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod attempt;
mod backoff;
mod current;
mod events;
mod live;
mod policy;
mod reload;
mod resume;
mod serve;
mod session;
pub mod spec;
mod status;

use events::Readiness;
pub use events::{ClientError, Event};
pub use reload::ClientHandle;

use crate::tunnel::ws::ResumeAsk;
use attempt::{AttemptError, Link};
use current::CurrentSession;
use resume::{Next, Retry};
use serve::{run_stdio, serve_incoming, serve_local};

/// How long the close handshake may take when the client ends a session.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// A session that lived this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Everything `burrow client` is configured with.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// the relay (the first one given)
    pub url: TunnelUrl,
    /// further relays: the client holds one session to each, beside `url`'s; every `-R` is
    /// bound on every relay, `-L` streams go to the connected one with the lowest round trip
    pub more_relays: Vec<TunnelUrl>,
    /// the pool every `-R` joins on the relay (`--pool`): clients of the same token and pool
    /// share a public port, and the relay spreads visitors over them
    pub pool: Option<String>,
    /// what `/readyz` waits for with several relays (`--ready`)
    pub ready: ReadyWhen,
    /// bearer token for the relay
    pub token: Option<Secret>,
    /// CONNECT proxies on the way to the relay (`--via`)
    pub via: Upstream,
    /// `-L` specs
    pub locals: Vec<LocalSpec>,
    /// `-R` specs
    pub remotes: Vec<RemoteSpec>,
    /// session limits and keepalive
    pub session: SessionConfig,
    /// limit for reaching the relay or a target
    pub connect_timeout: Duration,
    /// rules for what `-R …:proxy` visitors may reach from this network
    pub rules: Rules,
    /// credentials visitors of `-R …:proxy` must present
    pub proxy_auth: Option<Credentials>,
    /// how long streams may finish after shutdown begins
    pub drain_timeout: Duration,
    /// longest wait between reconnect attempts
    pub max_backoff: Duration,
    /// limit for the TLS handshake and the WebSocket upgrade
    pub handshake_timeout: Duration,
    /// keep streams across a dropped connection (`--no-resume` turns it off): the session
    /// outlives its WebSocket and continues on the next one, when the relay can resume it
    pub resume: bool,
    /// how `wss://` certificates are verified
    #[cfg(feature = "tls")]
    pub tls: crate::tls::ClientTlsOptions,
}

impl ClientConfig {
    /// A configuration with defaults for everything but the relay URL.
    pub fn new(url: TunnelUrl) -> Self {
        ClientConfig {
            url,
            more_relays: Vec::new(),
            pool: None,
            ready: ReadyWhen::All,
            token: None,
            via: Upstream::default(),
            locals: Vec::new(),
            remotes: Vec::new(),
            session: SessionConfig::default(),
            connect_timeout: Duration::from_secs(10),
            rules: Rules::default(),
            proxy_auth: None,
            drain_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            handshake_timeout: crate::tunnel::ws::HANDSHAKE_TIMEOUT,
            resume: true,
            #[cfg(feature = "tls")]
            tls: crate::tls::ClientTlsOptions::default(),
        }
    }
}

impl ClientConfig {
    /// Every relay, the first one (`url`) first.
    pub fn relays(&self) -> impl Iterator<Item = &TunnelUrl> {
        std::iter::once(&self.url).chain(&self.more_relays)
    }
}

/// What `/readyz` waits for when the client has several relays (`--ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadyWhen {
    /// every relay connected with every `-R` bound on it
    #[default]
    All,
    /// at least one relay connected with every `-R` bound on it
    Any,
}

impl std::str::FromStr for ReadyWhen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(ReadyWhen::All),
            "any" => Ok(ReadyWhen::Any),
            _ => Err(format!("{s:?}: give `all` or `any`")),
        }
    }
}

impl std::fmt::Display for ReadyWhen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadyWhen::All => "all",
            ReadyWhen::Any => "any",
        })
    }
}

/// Longest pool name (it rides in every BIND).
pub const MAX_POOL_NAME: usize = 64;

/// A pool name: 1 to [`MAX_POOL_NAME`] letters, digits, `.`, `_` or `-`.
pub fn check_pool_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_POOL_NAME || !name.chars().all(ok) {
        return Err(format!(
            "{name:?}: a pool name is 1 to {MAX_POOL_NAME} letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// The tunnel client.
pub struct Client {
    cfg: Arc<ClientConfig>,
    metrics: Arc<Metrics>,
    session_id: String,
    events: (Sender<Event>, Receiver<Event>),
    current: Arc<CurrentSession>,
    /// ports the relay gave each binding, asked for again after a reconnect
    bound_ports: Arc<Mutex<HashMap<u32, u16>>>,
    /// what a reload changes: the config in force, `-L` listeners, `-R` bindings
    live: Arc<live::Live>,
    readiness: Arc<Readiness>,
    /// what `/status` shows beyond the configuration
    status: Arc<status::Board>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ClientTls>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The session id is left out: it reclaims this client's bindings.
        f.debug_struct("Client")
            .field("cfg", &self.cfg)
            .field("listeners", &self.local_addrs().len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Binds the `-L` listeners (so a busy port fails at once).
    pub async fn bind(cfg: ClientConfig) -> Result<Client, ClientError> {
        // Credentials a BIND cannot carry whole are refused here, never cut on the wire.
        cfg.bind_auth().map_err(ClientError::Config)?;
        let mut listeners = Vec::new();
        let events = smol::channel::unbounded();
        for spec in &cfg.locals {
            let bind = match spec {
                LocalSpec::Forward { bind, .. } | LocalSpec::Proxy { bind } => *bind,
                LocalSpec::Stdio { .. } => {
                    listeners.push(live::LocalEntry::new(spec.clone(), None));
                    continue;
                }
            };
            let l = TcpListener::bind(bind)
                .await
                .map_err(|e| ClientError::Listen(format!("cannot listen on {bind}: {e}")))?;
            let addr = l
                .local_addr()
                .map_err(|e| ClientError::Listen(e.to_string()))?;
            let _ = events.0.try_send(Event::Listening {
                spec: describe_local(spec),
                addr,
            });
            listeners.push(live::LocalEntry::new(spec.clone(), Some(l)));
        }
        #[cfg(feature = "tls")]
        let tls = match cfg.url.tls {
            true => Some(
                crate::tls::ClientTls::new(&cfg.tls)
                    .map_err(|e| ClientError::Fatal(e.to_string()))?,
            ),
            false => None,
        };
        #[cfg(feature = "tls")]
        if cfg.tls.insecure && cfg.url.tls {
            log::warn!(
                "--insecure: the relay's certificate is not verified; anyone on the path can read and change the tunnel"
            );
        }
        let cfg = Arc::new(cfg);
        let live = Arc::new(live::Live::new(cfg.clone(), listeners));
        let readiness = Arc::new(Readiness::new(live.remote_ids()));
        Ok(Client {
            #[cfg(feature = "tls")]
            tls,
            cfg,
            metrics: Arc::new(Metrics::default()),
            session_id: ws::random_id(),
            events,
            current: Arc::new(CurrentSession::new()),
            bound_ports: Arc::new(Mutex::new(HashMap::new())),
            live,
            readiness,
            status: Arc::new(status::Board::new()),
        })
    }

    /// A handle that applies a new configuration to this client while it runs.
    pub fn handle(&self) -> ClientHandle {
        ClientHandle {
            live: self.live.clone(),
            readiness: self.readiness.clone(),
            bound_ports: self.bound_ports.clone(),
            events: self.events.0.clone(),
        }
    }

    /// State changes, in order (the receiver may be cloned; each event goes to one receiver).
    pub fn events(&self) -> Receiver<Event> {
        self.events.1.clone()
    }

    /// The client's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// True once connected with every `-R` bound (what `/readyz` answers).
    pub fn readiness(&self) -> crate::http::surface::Ready {
        let r = self.readiness.clone();
        Arc::new(move || r.is_ready())
    }

    /// The local addresses of the `-L` listeners in force, in spec order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.live.local_addrs()
    }

    fn emit(&self, e: Event) {
        log::debug!("client: {e}");
        self.status.record(&e);
        let _ = self.events.0.try_send(e);
    }

    /// Runs until shutdown (then drains) or a fatal error. With `-L stdio:…`, runs until
    /// that one stream ends.
    pub async fn run(self, spawner: Spawner, shutdown: ShutdownSignal) -> Result<(), ClientError> {
        self.live.start_locals(live::Runner {
            tasks: TaskSet::new(spawner.clone()),
            spawner: spawner.clone(),
            shutdown: shutdown.clone(),
            current: self.current.clone(),
        });
        let result = self.run_sessions(spawner, shutdown).await;
        self.live.stop_locals();
        result
    }

    async fn run_sessions(
        &self,
        spawner: Spawner,
        shutdown: ShutdownSignal,
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
                    let next = self.next_link(&mut retry, &ResumeAsk::New, &shutdown, !first);
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
                &session, driver, *link, &spawner, &shutdown, &stdio, &mut retry,
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

    /// A new session that is up: it is the current one (ready, `-L` connections use it) while
    /// it is served, across the connections that resume it.
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
        self.current.set(Some(session.clone()));
        self.status.set_session(Some(session.clone()));
        let conn = (driver, link);
        let end = self
            .serve_session(session, conn, spawner, shutdown, stdio.as_ref(), retry)
            .await;
        self.live.session_ended(session);
        self.current.set(None);
        self.status.set_session(None);
        self.readiness.set_connected(false);
        end
    }

    fn remote_target(&self, bind_id: u32) -> String {
        self.live
            .remote(bind_id)
            .map(|r| r.to_string())
            .unwrap_or_else(|| format!("binding {bind_id}"))
    }
}

/// How a session ended for the client.
enum SessionEnd {
    /// for good (closed, or lost and not resumable): a new session follows
    Lost(String),
    /// shutdown: drained and closed
    Drained,
    /// the `-L stdio` stream ended
    Stdio(Result<(), ClientError>),
    /// the client stops (a fatal error, or shutdown while reconnecting)
    Stop(Result<(), ClientError>),
    /// the relay no longer had the session we asked to resume: this connection carries a new one
    Replaced(Box<Link>),
}

fn describe_local(spec: &LocalSpec) -> String {
    match spec {
        LocalSpec::Forward { host, port, .. } => host_port(host, *port),
        LocalSpec::Proxy { .. } => "proxy".into(),
        LocalSpec::Stdio { host, port } => format!("stdio -> {}", host_port(host, *port)),
    }
}
