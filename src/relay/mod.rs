//! `burrow server`: the relay. One listener behind the front door: tunnel upgrades on
//! `/burrow`, `/healthz`, `/readyz` (503 once shutdown begins, see `lame_duck.rs`), and
//! `/metrics` for the token holder (or on `--admin`). For each
//! client session it binds public listeners (`-R`, within `--allow-ports`), dials targets
//! (`-L`, within the rules), and keeps a returning client's listeners through a grace
//! period. Relay-wide limits (`limits.rs`) cap connections, sessions, streams and dials.

use crate::bridge::{self, MuxDialer};
use crate::dial::rules::Rules;
use crate::exec::{Spawner, TaskSet};
use crate::http::head::RequestHead;
use crate::http::surface;
use crate::listen::{self, AcceptLoop, Drain};
use crate::metrics::Metrics;
use crate::proxy::{ProxyConfig, serve_connection};
use crate::refusal::Refusal;
use crate::secret::Secret;
use crate::shutdown::ShutdownSignal;
use crate::tunnel::ws::{self, Upgrade};
use crate::tunnel::{
    BindMode, BindPool, Frame, Incoming, OpenTarget, Session, SessionConfig, Side,
};
use futures_lite::FutureExt;
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub mod auth;
mod binds;
mod front;
mod lame_duck;
pub mod limits;
mod pools;
mod registry;
mod resume;
mod session;
mod status;
mod streams;
pub mod tokens;
mod udp_binds;
mod visitors;

use auth::{Auth, Grant};
use binds::{Bindings, GraceHold, hold_for_grace, session_frames_loop};
use front::{FrontStream, reply};
use limits::{ConnPermit, Limiter, RelayLimits, left_out};
use session::tunnel;
use streams::incoming_loop;
pub use tokens::SessionInfo;
use tokens::Tracked;

pub use crate::tunnel::ws::HANDSHAKE_TIMEOUT;

/// Everything `burrow server` is configured with.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// required bearer token; `None` only with `--no-auth` (or when `tokens` has them all)
    pub token: Option<Secret>,
    /// per-client tokens (`[[relay.tokens]]`), each with a name and limits of its own; a
    /// client may present any of them or `token`
    pub tokens: Vec<tokens::TokenSpec>,
    /// ports clients may bind (inclusive)
    pub allow_ports: (u16, u16),
    /// rules for targets clients ask us to dial
    pub rules: Rules,
    /// session limits and keepalive
    pub session: SessionConfig,
    /// how long streams may finish after shutdown begins
    pub drain_timeout: Duration,
    /// on shutdown, how long `/readyz` answers 503 while the relay keeps accepting and serving
    /// (so a load balancer's health check notices), before the drain starts. `burrow server`
    /// defaults to 5 s; the library's default is 0 (the drain starts at once)
    pub lame_duck: Duration,
    /// how long a gone client's session (resumable) or listeners are held for it
    pub grace: Duration,
    /// resume sessions whose connection was lost (`--no-resume` turns it off)
    pub resume: bool,
    /// limit for dialing a target
    pub connect_timeout: Duration,
    /// a UDP flow (`-L udp:`, `-R udp:`) with no datagram either way for this long is dropped
    /// (`--udp-idle-timeout`)
    pub udp_idle_timeout: Duration,
    /// limit for a connection's TLS handshake and request head
    pub handshake_timeout: Duration,
    /// relay-wide limits: connections, sessions, streams, dials
    pub limits: RelayLimits,
    /// serve `/healthz` and `/metrics` without a token on this address (`--admin`; meant
    /// for loopback)
    pub admin: Option<SocketAddr>,
    /// bearer token for `/status`, `/status.json`, `/config` and `/metrics` on a non-loopback
    /// `--admin` (`--admin-token`)
    pub admin_token: Option<Secret>,
    /// serve `wss://` with this certificate (reloadable)
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            token: None,
            tokens: Vec::new(),
            allow_ports: (1024, 65535),
            rules: Rules::default(),
            session: SessionConfig::default(),
            drain_timeout: Duration::from_secs(10),
            lame_duck: Duration::ZERO,
            grace: Duration::from_secs(60),
            resume: true,
            connect_timeout: Duration::from_secs(10),
            udp_idle_timeout: crate::bridge::udp::UDP_IDLE_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            limits: RelayLimits::default(),
            admin: None,
            admin_token: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// The configuration a running relay applies to new sessions, streams and binds; a reload
/// swaps it whole.
struct Active {
    cfg: RelayConfig,
    /// `cfg`'s tokens, hashed
    auth: Auth,
}

/// What the relay and its handles share (made at `bind`, so a handle works before `run`).
struct Shared {
    active: RwLock<Arc<Active>>,
    /// open sessions by a relay-local number: their token, and how to revoke them. Also held
    /// while a reload swaps `active` and scans it, so a session either registers before the
    /// scan (and is scanned) or checks its token against the new configuration.
    sessions: Mutex<HashMap<u64, Tracked>>,
    /// relay-wide limit counters
    limits: Arc<Limiter>,
    metrics: Arc<Metrics>,
    /// the `--admin` address it was bound with (a different one needs a restart)
    admin: Option<SocketAddr>,
}

impl Shared {
    fn active(&self) -> Arc<Active> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What every connection task of the relay shares.
struct Ctx {
    /// the configuration at start: what a reload cannot change (grace, resume, timeouts);
    /// everything else is read from [`Ctx::active`]
    cfg: RelayConfig,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    registry: Mutex<GraceHold>,
    default_bind: IpAddr,
    spawner: Spawner,
    /// the relay's own shutdown: drains after the lame duck (see [`lame_duck`])
    shutdown: ShutdownSignal,
    /// what `/readyz` says: true until shutdown begins (before the lame duck)
    ready: surface::Ready,
    ids: AtomicU64,
    /// reapers of grace periods (owned here, cancelled with the relay)
    reapers: TaskSet,
    /// relay-wide limit counters
    limits: Arc<Limiter>,
    /// what the operator's view lists: sessions, bindings, last refusals
    view: Arc<registry::Registry>,
    /// public ports shared by pools of clients
    pools: pools::Pools,
}

impl Ctx {
    /// The configuration for a new session, stream or bind.
    fn active(&self) -> Arc<Active> {
        self.shared.active()
    }

    /// The public ports a session of `grant` may bind now, and where the range comes from;
    /// `Err` when its token was removed or changed meanwhile.
    fn allow_ports(&self, grant: &Grant) -> Result<((u16, u16), String), String> {
        let now = self.active().auth.current(grant).ok_or_else(revoked)?;
        Ok((now.allow_ports, now.ports_source()))
    }
}

/// Why a session's request is refused once its token is gone.
fn revoked() -> String {
    "this session's token was removed or changed".to_string()
}

/// A bound relay, ready to run.
#[derive(Debug)]
pub struct Relay {
    listener: TcpListener,
    /// the `--admin` listener, if configured
    admin: Option<TcpListener>,
    /// where `-R` binds without an address: the public listener's address
    default_bind: IpAddr,
    cfg: RelayConfig,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Relay {
    /// Binds the public listener (and the `--admin` one, if configured).
    pub async fn bind(addr: SocketAddr, cfg: RelayConfig) -> io::Result<Relay> {
        let auth = Auth::from_config(&cfg)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = TcpListener::bind(addr).await?;
        // Known now, or no relay: guessing 0.0.0.0 would open -R ports wider than meant.
        let default_bind = listener.local_addr()?.ip();
        let admin = match cfg.admin {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("--admin {a}: {e}")))?,
            ),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        metrics.set_tokens(&auth.names());
        let shared = Arc::new(Shared {
            limits: Arc::new(Limiter::new(cfg.limits.clone())),
            active: RwLock::new(Arc::new(Active {
                cfg: cfg.clone(),
                auth,
            })),
            sessions: Mutex::new(HashMap::new()),
            metrics,
            admin: cfg.admin,
        });
        Ok(Relay {
            listener,
            admin,
            default_bind,
            cfg,
            shared,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound `--admin` address, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle that applies a new configuration to this relay while it runs.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle {
            shared: self.shared.clone(),
        }
    }

    /// The relay's counters (what `/metrics` shows).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Serves until `shutdown` drains: then answers `/readyz` 503 at once but keeps serving
    /// for the lame duck (`lame_duck`), then stops accepting, sends go-away to every session,
    /// lets streams finish within the drain timeout, and cancels the rest. An abort skips
    /// what is left of the lame duck.
    pub async fn run(self, spawner: Spawner, shutdown: ShutdownSignal) {
        let lame = lame_duck::LameDuck::new(shutdown, self.cfg.lame_duck);
        let ready = lame.ready();
        // From here on, everything of the relay watches the inner shutdown.
        let shutdown = lame.signal();
        let ctx = Arc::new(Ctx {
            limits: self.shared.limits.clone(),
            metrics: self.shared.metrics.clone(),
            shared: self.shared,
            cfg: self.cfg,
            registry: Mutex::new(GraceHold::default()),
            default_bind: self.default_bind,
            reapers: TaskSet::new(spawner.clone()),
            spawner: spawner.clone(),
            shutdown: shutdown.clone(),
            ready,
            ids: AtomicU64::new(1),
            view: registry::Registry::new(),
            pools: pools::Pools::default(),
        });
        let listen = self.listener.local_addr().ok();
        let admin = async {
            if let Some(admin) = self.admin {
                let route = status::admin_route(&ctx, listen);
                let guard = status::admin_guard(&ctx.cfg);
                let sd = shutdown.clone();
                let sp = spawner.clone();
                surface::serve_listener_guarded("admin", admin, route, guard, sp, sd).await;
            }
        };
        let accept_loop = AcceptLoop {
            what: "relay",
            // Each connection task holds a `--max-connections` slot, so the limiter (in
            // `admit`) refuses first; this is the same bound, kept for the loop's sake.
            limit: ctx.cfg.limits.max_connections,
            drain: Drain::Within(ctx.cfg.drain_timeout),
        };
        let public = accept_loop.run(
            self.listener,
            spawner.clone(),
            &shutdown,
            |stream, peer| front::admit(&ctx, stream, peer),
            |stream, peer, open| front::over_limit(&ctx, stream, peer, open),
        );
        // `follow` never ends: the relay's run ends when its listeners have drained.
        let serve = async {
            futures_lite::future::zip(admin, public).await;
        };
        serve.or(lame.follow()).await;
    }
}

/// Applies new configurations to a running [`Relay`] (see [`crate::reload`]), and shows its
/// sessions and configuration (for `/status` and `/config`).
#[derive(Clone)]
pub struct RelayHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayHandle")
    }
}

impl RelayHandle {
    /// The sessions open now, each with its token's name.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let sessions = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sessions.values().map(|t| t.info.clone()).collect()
    }

    /// The configuration the relay applies now (secrets stay in their masked types).
    pub fn config(&self) -> RelayConfig {
        self.shared.active().cfg.clone()
    }

    /// Applies `cfg` to the running relay: tokens, rules, ports, limits and certificates apply
    /// to new sessions and streams at once; sessions of a removed token (or one whose key
    /// changed) get GO_AWAY with the reason, their streams drain (within `drain-timeout`),
    /// then they close. A new `admin` address, or turning TLS or authentication on or off, is
    /// [`ReloadError::Restart`](crate::reload::ReloadError::Restart); grace, resume and the
    /// timeouts other than the handshake's keep their start values (logged).
    pub fn reload(
        &self,
        cfg: RelayConfig,
    ) -> Result<crate::reload::Changes, crate::reload::ReloadError> {
        use crate::reload::ReloadError;
        let sh = &self.shared;
        if cfg.admin != sh.admin {
            let show = |a: Option<SocketAddr>| a.map_or("none".to_string(), |a| a.to_string());
            let why = format!("admin {} -> {}", show(sh.admin), show(cfg.admin));
            return Err(ReloadError::Restart(why));
        }
        let auth = Auth::from_config(&cfg).map_err(|e| ReloadError::Failed(e.to_string()))?;
        // Held through the swap and the scan (see `Shared::sessions`).
        let mut sessions = sh.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let old = sh.active();
        if old.auth.is_open() != auth.is_open() {
            let why = "turning token authentication on or off".to_string();
            return Err(ReloadError::Restart(why));
        }
        let mut changes = Vec::new();
        #[cfg(feature = "tls")]
        changes.extend(reload_tls(&old.cfg, &cfg)?);
        let (lines, gone) = auth::diff((&old.auth, &auth), (&old.cfg.tokens, &cfg.tokens));
        changes.extend(lines);
        changes.extend(setting_changes(&old.cfg, &cfg));
        changes.extend(sh.limits.apply(&old.cfg.limits, &cfg.limits));
        sh.metrics.set_tokens(&auth.names());
        let new = Arc::new(Active { cfg, auth });
        *sh.active.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        let mut closed: HashMap<String, usize> = HashMap::new();
        for t in sessions.values_mut() {
            if new.auth.current(&t.grant).is_some() {
                continue;
            }
            let name = t.info.token_name.clone().unwrap_or_default();
            let what = gone
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("changed", |g| g.1);
            if t.revoke(&format!("token {name} {what} by reload")) {
                *closed.entry(name).or_default() += 1;
            }
        }
        drop(sessions);
        for (name, what) in gone {
            let n = closed.get(&name).copied().unwrap_or(0);
            changes.push(format!("token {name} {what}: {n} sessions closed"));
        }
        for line in &changes {
            log::info!("relay: reload: {line}");
        }
        Ok(changes)
    }
}

/// The certificate on reload: the same `ServerTls` re-reads its files; another one (other
/// paths) serves new connections from now on. On or off needs a restart (the clients' URL
/// scheme changes).
#[cfg(feature = "tls")]
fn reload_tls(
    old: &RelayConfig,
    new: &RelayConfig,
) -> Result<Option<String>, crate::reload::ReloadError> {
    use crate::reload::ReloadError;
    match (&old.tls, &new.tls) {
        (None, None) => Ok(None),
        (Some(a), Some(b)) if Arc::ptr_eq(a, b) => a
            .reload()
            .map(|()| Some("certificate reloaded".to_string()))
            .map_err(|e| ReloadError::Failed(format!("certificate: {e}"))),
        (Some(_), Some(_)) => Ok(Some("certificate replaced (new connections)".to_string())),
        _ => Err(ReloadError::Restart("turning TLS on or off".to_string())),
    }
}

/// The lines for settings other than tokens, limits and the certificate: what applies to new
/// sessions and streams, and what keeps its start value until a restart.
fn setting_changes(old: &RelayConfig, new: &RelayConfig) -> Vec<String> {
    let mut lines = Vec::new();
    if old.rules != new.rules {
        lines.push("rules changed".to_string());
    }
    if old.allow_ports != new.allow_ports {
        let ((a, b), (c, d)) = (old.allow_ports, new.allow_ports);
        lines.push(format!("allow-ports {a}-{b} -> {c}-{d}"));
    }
    // SessionConfig has no PartialEq (it lives in the tunnel layer); its Debug shows every
    // field and no secret.
    if format!("{:?}", old.session) != format!("{:?}", new.session) {
        lines.push("session settings changed (for new sessions)".to_string());
    }
    if old.handshake_timeout != new.handshake_timeout {
        lines.push("handshake timeout changed".to_string());
    }
    if old.admin_token != new.admin_token {
        lines.push("admin-token changed".to_string());
    }
    if old.udp_idle_timeout != new.udp_idle_timeout {
        lines.push("udp-idle-timeout changed (for new UDP flows)".to_string());
    }
    let later = [
        ("grace", old.grace != new.grace),
        ("resume", old.resume != new.resume),
        (
            "connect-timeout",
            old.connect_timeout != new.connect_timeout,
        ),
        ("drain-timeout", old.drain_timeout != new.drain_timeout),
        ("lame-duck", old.lame_duck != new.lame_duck),
    ];
    for (name, changed) in later {
        if changed {
            lines.push(format!("{name} changed: takes effect after a restart"));
        }
    }
    lines
}
