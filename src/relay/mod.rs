//! `burrow server`: the relay. One listener behind the front door: tunnel upgrades on
//! `/burrow`, `/healthz`, and `/metrics` for the token holder (or on `--admin`). For each
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
use crate::tunnel::{BindMode, Frame, Incoming, OpenTarget, Session, SessionConfig, Side};
use futures_lite::FutureExt;
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod binds;
mod front;
pub mod limits;
mod registry;
mod resume;
mod session;
mod status;
mod streams;
pub mod tokens;

use binds::{Bindings, GraceHold, hold_for_grace, session_frames_loop};
use front::{FrontStream, reply};
use limits::{ConnPermit, Limiter, RelayLimits, left_out};
use session::tunnel;
use streams::incoming_loop;

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
    /// how long a gone client's session (resumable) or listeners are held for it
    pub grace: Duration,
    /// resume sessions whose connection was lost (`--no-resume` turns it off)
    pub resume: bool,
    /// limit for dialing a target
    pub connect_timeout: Duration,
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
            grace: Duration::from_secs(60),
            resume: true,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            limits: RelayLimits::default(),
            admin: None,
            admin_token: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// What every connection task of the relay shares.
struct Ctx {
    cfg: RelayConfig,
    metrics: Arc<Metrics>,
    registry: Mutex<GraceHold>,
    default_bind: IpAddr,
    spawner: Spawner,
    shutdown: ShutdownSignal,
    ids: AtomicU64,
    /// reapers of grace periods (owned here, cancelled with the relay)
    reapers: TaskSet,
    /// relay-wide limit counters
    limits: Limiter,
    /// what the operator's view lists: sessions, bindings, last refusals
    view: Arc<registry::Registry>,
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
    metrics: Arc<Metrics>,
}

impl Relay {
    /// Binds the public listener (and the `--admin` one, if configured).
    pub async fn bind(addr: SocketAddr, cfg: RelayConfig) -> io::Result<Relay> {
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
        Ok(Relay {
            listener,
            admin,
            default_bind,
            cfg,
            metrics: Arc::new(Metrics::default()),
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
        RelayHandle { _todo: () }
    }

    /// The relay's counters (what `/metrics` shows).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` drains: then stops accepting, sends go-away to every session,
    /// lets streams finish within the drain timeout, and cancels the rest.
    pub async fn run(self, spawner: Spawner, shutdown: ShutdownSignal) {
        let ctx = Arc::new(Ctx {
            limits: Limiter::new(self.cfg.limits.clone()),
            cfg: self.cfg,
            metrics: self.metrics,
            registry: Mutex::new(GraceHold::default()),
            default_bind: self.default_bind,
            reapers: TaskSet::new(spawner.clone()),
            spawner: spawner.clone(),
            shutdown: shutdown.clone(),
            ids: AtomicU64::new(1),
            view: registry::Registry::new(),
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
        futures_lite::future::zip(admin, public).await;
    }
}

/// Applies new configurations to a running [`Relay`] (see [`crate::reload`]).
#[derive(Debug, Clone)]
pub struct RelayHandle {
    _todo: (),
}

impl RelayHandle {
    /// Applies `cfg` to the running relay: tokens, rules, ports, limits and certificates apply
    /// to new sessions and streams at once; sessions of a removed token get GO_AWAY. A new
    /// `admin` address is [`ReloadError::Restart`](crate::reload::ReloadError::Restart).
    pub fn reload(
        &self,
        cfg: RelayConfig,
    ) -> Result<crate::reload::Changes, crate::reload::ReloadError> {
        let _ = cfg;
        Err(crate::reload::ReloadError::Restart(
            "live reload of the relay is not built yet".into(),
        ))
    }
}
