//! `burrow client URL…`: dials each relay (optionally through proxies) and keeps one
//! multiplexed session alive to each, reconnecting with jittered exponential backoff. Serves
//! `-L` listeners locally (each connection through the best connected relay) and every
//! relay's `-R` bindings from this network.

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
mod link;
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
use link::RelayLink;
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
    /// HTTP CONNECT and SOCKS5 proxies on the way to the relay (`--via`)
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
    /// a UDP flow (`-L udp:`, `-R udp:`) with no datagram either way for this long is
    /// dropped, on both ends (`--udp-idle-timeout`)
    pub udp_idle_timeout: Duration,
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
            udp_idle_timeout: crate::bridge::udp::UDP_IDLE_TIMEOUT,
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

/// The tunnel client: one session to each relay (a [`link::RelayLink`] each, with its own
/// reconnect loop), sharing the `-L` listeners, the configuration in force and the metrics.
pub struct Client {
    cfg: Arc<ClientConfig>,
    metrics: Arc<Metrics>,
    events: (Sender<Event>, Receiver<Event>),
    /// the sessions `-L` connections choose from, one slot per relay
    current: Arc<CurrentSession>,
    /// what a reload changes: the config in force, `-L` listeners, `-R` bindings
    live: Arc<live::Live>,
    /// one per relay, in config order (never empty)
    links: Arc<[Arc<RelayLink>]>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The session ids are left out: they reclaim this client's bindings.
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
        let urls: Vec<String> = cfg.relays().map(|u| u.to_string()).collect();
        if let Some(twice) = (1..urls.len()).find(|&i| urls[..i].contains(&urls[i])) {
            let why = format!("relay {} is given twice", urls[twice]);
            return Err(ClientError::Config(why));
        }
        let mut listeners = Vec::new();
        let events = smol::channel::unbounded();
        for spec in &cfg.locals {
            let Some((bind, l)) = live::Listener::bind(spec).await else {
                listeners.push(live::LocalEntry::new(spec.clone(), None));
                continue;
            };
            let l = l.map_err(|e| ClientError::Listen(format!("cannot listen on {bind}: {e}")))?;
            let addr = l
                .local_addr()
                .map_err(|e| ClientError::Listen(e.to_string()))?;
            let _ = events.0.try_send(Event::Listening {
                spec: describe_local(spec),
                addr,
            });
            listeners.push(live::LocalEntry::new(spec.clone(), Some(l)));
        }
        let cfg = Arc::new(cfg);
        let metrics = Arc::new(Metrics::default());
        metrics.set_relays(&urls);
        let shared = link::Shared {
            cfg: cfg.clone(),
            metrics: metrics.clone(),
            events: events.0.clone(),
            current: Arc::new(CurrentSession::new(urls.len())),
            live: Arc::new(live::Live::new(cfg.clone(), listeners)),
            stdio_taken: Arc::default(),
        };
        let links = (cfg.relays().cloned().enumerate())
            .map(|(i, url)| RelayLink::new(i, url, &shared).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Client {
            cfg,
            metrics,
            events,
            current: shared.current,
            live: shared.live,
            links: links.into(),
        })
    }

    /// A handle that applies a new configuration to this client while it runs.
    pub fn handle(&self) -> ClientHandle {
        ClientHandle {
            live: self.live.clone(),
            links: self.links.clone(),
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

    /// What `/readyz` answers: true once connected with every `-R` bound, on every relay (or,
    /// with `--ready any`, on one).
    pub fn readiness(&self) -> crate::http::surface::Ready {
        let (links, live) = (self.links.clone(), self.live.clone());
        Arc::new(move || link::ready(&links, live.cfg().ready))
    }

    /// The local addresses of the `-L` listeners in force, in spec order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.live.local_addrs()
    }

    /// Runs until shutdown (then drains) or a fatal error. With `-L stdio:…`, runs until
    /// that one stream ends.
    pub async fn run(self, spawner: Spawner, shutdown: ShutdownSignal) -> Result<(), ClientError> {
        self.live.start_locals(live::Runner {
            tasks: TaskSet::new(spawner.clone()),
            spawner: spawner.clone(),
            shutdown: shutdown.clone(),
            current: self.current.clone(),
            metrics: self.metrics.clone(),
        });
        let result = link::run_all(&self.links, &spawner, &shutdown).await;
        self.live.stop_locals();
        result
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
        LocalSpec::Udp { host, port, .. } => format!("udp {}", host_port(host, *port)),
    }
}
