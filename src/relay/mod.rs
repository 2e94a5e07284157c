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
use crate::metrics::{Metrics, Refusal};
use crate::proxy::{ProxyConfig, serve_connection};
use crate::secret::Secret;
use crate::shutdown::ShutdownSignal;
use crate::tunnel::ws::{self, Upgrade};
use crate::tunnel::{
    BindMode, Frame, Incoming, OpenTarget, RefuseCode, Session, SessionConfig, Side,
};
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
mod streams;

use binds::{Registry, SessionBinds, control_loop, hold_for_grace};
use front::{FrontStream, reply};
use limits::{ConnPermit, Limiter, RelayLimits, left_out};
use streams::incoming_loop;

/// How long a returning client waits for its stale earlier session to wind down.
const REPLACE_WAIT: Duration = Duration::from_secs(5);

/// How long a websocket handshake (TLS and head included) may take, by default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `burrow server` is configured with.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// required bearer token; `None` only with `--no-auth`
    pub token: Option<Secret>,
    /// ports clients may bind (inclusive)
    pub allow_ports: (u16, u16),
    /// rules for targets clients ask us to dial
    pub rules: Rules,
    /// session limits and keepalive
    pub session: SessionConfig,
    /// how long streams may finish after shutdown begins
    pub drain_timeout: Duration,
    /// how long a gone client's listeners are held for it
    pub grace: Duration,
    /// limit for dialing a target
    pub connect_timeout: Duration,
    /// limit for a connection's TLS handshake and request head
    pub handshake_timeout: Duration,
    /// relay-wide limits: connections, sessions, streams, dials
    pub limits: RelayLimits,
    /// serve `/healthz` and `/metrics` without a token on this address (`--admin`; meant
    /// for loopback)
    pub admin: Option<SocketAddr>,
    /// serve `wss://` with this certificate (reloadable)
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            token: None,
            allow_ports: (1024, 65535),
            rules: Rules::default(),
            session: SessionConfig::default(),
            drain_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            limits: RelayLimits::default(),
            admin: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// What every connection task of the relay shares.
struct Ctx {
    cfg: RelayConfig,
    metrics: Arc<Metrics>,
    registry: Mutex<Registry>,
    default_bind: IpAddr,
    spawner: Spawner,
    shutdown: ShutdownSignal,
    ids: AtomicU64,
    /// reapers of grace periods (owned here, cancelled with the relay)
    reapers: TaskSet,
    /// relay-wide limit counters
    limits: Limiter,
}

/// A bound relay, ready to run.
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
            registry: Mutex::new(Registry::default()),
            default_bind: self.default_bind,
            reapers: TaskSet::new(spawner.clone()),
            spawner: spawner.clone(),
            shutdown: shutdown.clone(),
            ids: AtomicU64::new(1),
        });
        let admin = async {
            if let Some(admin) = self.admin {
                let route = surface::standard_route(ctx.metrics.clone(), None);
                let sd = shutdown.clone();
                surface::serve_listener_as("admin", admin, route, spawner.clone(), sd).await;
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

/// The tunnel upgrade: token and version checks, the session limits, then the session's
/// life. `conn` (this connection's slot) is held until the session ends.
async fn tunnel<S: FrontStream>(
    ctx: Arc<Ctx>,
    stream: S,
    peer: SocketAddr,
    head: RequestHead,
    leftover: Vec<u8>,
    mut conn: ConnPermit,
    deadline: Instant,
) {
    let (session_id, _session_permit) = match ws::check_upgrade(&head, ctx.cfg.token.as_ref()) {
        Upgrade::Refuse(status, why) => {
            if status == 401 {
                ctx.metrics.refused(Refusal::Auth);
            } else {
                ctx.metrics.refused(Refusal::BadRequest);
            }
            if let Some(n) = ctx.limits.logs.auth.hit() {
                log::warn!(
                    "relay {peer}: tunnel refused: {why} ({status}){}",
                    left_out(n)
                );
            }
            let challenge: &[(&str, &str)] = if status == 401 {
                &[("WWW-Authenticate", "Bearer")]
            } else {
                &[]
            };
            return reply(&stream, status, &why, challenge).await;
        }
        Upgrade::Accept {
            response,
            session_id,
        } => {
            let Some(permit) = admit_session(&ctx, &stream, peer, &session_id).await else {
                return;
            };
            let mut w = stream.clone();
            let write = crate::time::with_timeout(
                deadline.saturating_duration_since(Instant::now()),
                w.write_all(&response),
                || io::Error::new(io::ErrorKind::TimedOut, "upgrade answer not taken in time"),
            );
            if let Err(e) = write.await {
                log::debug!("relay {peer}: upgrade write failed: {e}");
                return;
            }
            conn.upgraded();
            (session_id, permit)
        }
    };
    let ws = ws::server_stream(stream, leftover).await;
    let label = format!("{}@{peer}", &session_id[..session_id.len().min(8)]);
    let (session, driver) = Session::new(
        Side::Relay,
        ctx.cfg.session.clone(),
        label.clone(),
        ctx.metrics.clone(),
    );
    // Dropped when this session has wound down: a successor with the same id waits for it.
    let (_wound_down, wound_down_rx) = smol::channel::bounded::<()>(1);
    let previous = ctx
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .live
        .insert(session_id.clone(), (session.clone(), wound_down_rx));
    if let Some((old, old_done)) = previous {
        // The client came back before this relay noticed its old connection die (a dead
        // path often looks alive from this side). The old session is stale: end it, and take
        // its listeners over once it has handed them to the grace registry.
        log::info!("session {label}: replaces the same client's earlier connection");
        old.close("replaced by a newer connection of the same client");
        let _ = old_done
            .recv()
            .or(async {
                smol::Timer::after(REPLACE_WAIT).await;
                Ok(())
            })
            .await;
    }
    let reclaimed = ctx
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .held
        .remove(&session_id)
        .map(|(_, ls)| ls)
        .unwrap_or_default();
    if !reclaimed.is_empty() {
        ctx.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "session {label}: resumed, {} listeners handed back",
            reclaimed.len()
        );
    } else {
        log::info!("session {label}: connected");
    }
    let tasks = TaskSet::new(ctx.spawner.clone());
    let state = SessionBinds {
        reclaimed: Mutex::new(reclaimed),
        live: Mutex::new(Vec::new()),
    };
    let drive = async {
        driver.run(ws).await;
    };
    // This session's own drain: the relay's, or the client's GO_AWAY. Visitors' idle
    // keep-alive connections close on it, so a client's shutdown is not held up by them.
    let session_sd = crate::shutdown::Shutdown::new();
    let control = control_loop(&ctx, &session, &session_id, &tasks, &state, &session_sd);
    let incoming = incoming_loop(&ctx, &session, &tasks);
    let drain = drain_session(&ctx, &session, &session_sd);
    drive.or(control).or(incoming).or(drain).await;
    drop(tasks);
    // Keep this client's listeners for its return.
    let listeners = std::mem::take(&mut *state.live.lock().unwrap_or_else(|e| e.into_inner()));
    {
        let mut reg = ctx.registry.lock().unwrap_or_else(|e| e.into_inner());
        if reg
            .live
            .get(&session_id)
            .is_some_and(|(s, _)| s.same(&session))
        {
            reg.live.remove(&session_id);
        }
    }
    if !listeners.is_empty() && !ctx.shutdown.is_draining() {
        hold_for_grace(&ctx, session_id, listeners);
    }
}

/// Admits a session under `--max-sessions` and `--max-sessions-per-token`, or answers 503
/// (the client retries with backoff). With a token the count is per token (one token today,
/// so it is a second total); with `--no-auth` it is per client address.
async fn admit_session<S: FrontStream>(
    ctx: &Ctx,
    stream: &S,
    peer: SocketAddr,
    session_id: &str,
) -> Option<limits::SessionPermit> {
    let key = match &ctx.cfg.token {
        Some(_) => "token".to_string(),
        None => peer.ip().to_string(),
    };
    let replacing = ctx
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .live
        .contains_key(session_id);
    match ctx.limits.sessions.admit(&key, replacing) {
        Ok(p) => Some(p),
        Err(why) => {
            ctx.metrics.refused(Refusal::TooManySessions);
            if let Some(n) = ctx.limits.logs.sessions.hit() {
                log::warn!("relay {peer}: tunnel refused: {why} (503){}", left_out(n));
            }
            reply(stream, 503, &why.to_string(), &[]).await;
            None
        }
    }
}

/// On drain: go-away, then close the session once its streams are done.
async fn drain_session(ctx: &Ctx, session: &Session, session_sd: &crate::shutdown::Shutdown) {
    ctx.shutdown.draining().await;
    session_sd.drain();
    session.go_away("relay shutting down");
    session.streams_done().await;
    session.close("relay shutting down");
    std::future::pending::<()>().await
}
