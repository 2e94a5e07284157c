//! `burrow server`: the relay. One listener behind the front door: tunnel upgrades on
//! `/burrow`, `/healthz`, `/metrics`. For each client session it binds public listeners
//! (`-R`, within `--allow-ports`), dials targets (`-L`, within the rules), and keeps a
//! returning client's listeners through a grace period.

use crate::exec::{Spawner, TaskSet};
use crate::http::front::{self, error_response};
use crate::http::head::{RequestHead, Target};
use crate::http::surface;
use crate::metrics::{Metrics, Refusal};
use crate::proxy::rules::Rules;
use crate::proxy::{ProxyConfig, serve_connection};
use crate::secret::Secret;
use crate::shutdown::ShutdownSignal;
use crate::tunnel::bridge::{self, MuxDialer};
use crate::tunnel::ws::{self, TUNNEL_PATH, Upgrade};
use crate::tunnel::{
    BindMode, Frame, Incoming, OpenTarget, RefuseCode, Session, SessionConfig, Side,
};
use futures_lite::FutureExt;
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use smol::net::TcpListener;
#[cfg(feature = "tls")]
use smol::net::TcpStream;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod binds;

use binds::{Registry, SessionBinds, control_loop, hold_for_grace};

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
}

/// A bound relay, ready to run.
pub struct Relay {
    listener: TcpListener,
    cfg: RelayConfig,
    metrics: Arc<Metrics>,
}

impl Relay {
    /// Binds the public listener.
    pub async fn bind(addr: SocketAddr, cfg: RelayConfig) -> io::Result<Relay> {
        Ok(Relay {
            listener: TcpListener::bind(addr).await?,
            cfg,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The relay's counters (what `/metrics` shows).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` drains: then stops accepting, sends go-away to every session,
    /// lets streams finish within the drain timeout, and cancels the rest.
    pub async fn run(self, spawner: Spawner, shutdown: ShutdownSignal) {
        let default_bind = self
            .listener
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let ctx = Arc::new(Ctx {
            cfg: self.cfg,
            metrics: self.metrics,
            registry: Mutex::new(Registry::default()),
            default_bind,
            reapers: TaskSet::new(spawner.clone()),
            spawner: spawner.clone(),
            shutdown: shutdown.clone(),
            ids: AtomicU64::new(1),
        });
        let conns = TaskSet::new(spawner);
        while let Some((stream, peer)) =
            crate::net::accept(&self.listener, &shutdown, "relay").await
        {
            #[cfg(feature = "tls")]
            if let Some(tls) = ctx.cfg.tls.clone() {
                conns.spawn(tls_front_door(ctx.clone(), tls, stream, peer));
                continue;
            }
            conns.spawn(front_door(ctx.clone(), stream, peer));
        }
        drop(self.listener);
        log::info!("relay draining {} connections", conns.len());
        let cancelled = conns.drain(ctx.cfg.drain_timeout, &shutdown).await;
        if cancelled > 0 {
            log::warn!("relay drain ended: cancelled {cancelled} connections");
        }
    }
}

/// What the front door can serve: TCP, or TLS behind a shared handle.
pub trait FrontStream: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static {}
impl<S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static> FrontStream for S {}

async fn reply<S: FrontStream>(stream: &S, status: u16, why: &str, extra: &[(&str, &str)]) {
    let mut w = stream.clone();
    if let Err(e) = w.write_all(&error_response(status, why, extra)).await {
        log::debug!("writing {status} failed: {e}");
    }
    // Stop sending (a TCP write shutdown, or TLS close_notify) so the answer is read, not reset.
    w.close().await.ok();
}

/// The TLS handshake (bounded), then the front door over the encrypted stream.
#[cfg(feature = "tls")]
async fn tls_front_door(
    ctx: Arc<Ctx>,
    tls: Arc<crate::tls::ServerTls>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let handshake = crate::net::with_timeout(ctx.cfg.handshake_timeout, tls.accept(stream), || {
        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
    });
    match handshake.await {
        Ok(s) => front_door(ctx, async_dup::Arc::new(async_dup::Mutex::new(s)), peer).await,
        Err(e) => log::warn!("relay {peer}: TLS handshake failed: {e}"),
    }
}

/// Reads one head and dispatches: tunnel upgrade, local surface, or an error.
async fn front_door<S: FrontStream>(ctx: Arc<Ctx>, stream: S, peer: SocketAddr) {
    let mut reader = BufReader::with_capacity(4096, stream.clone());
    let raw = match front::read_head_bytes(&mut reader, ctx.cfg.handshake_timeout).await {
        Ok(raw) => raw,
        Err(e) => {
            if let Some(status) = e.status() {
                log::warn!("relay {peer}: {e} ({status})");
                reply(&stream, status, &e.to_string(), &[]).await;
            }
            return;
        }
    };
    let head = match crate::http::head::parse_request(&raw) {
        Ok(h) => h,
        Err(e) => {
            log::warn!("relay {peer}: {e} ({})", e.status());
            return reply(&stream, e.status(), &e.to_string(), &[]).await;
        }
    };
    let leftover = reader.buffer().to_vec();
    drop(reader);
    let path = match &head.target {
        Target::Origin(p) => p.split('?').next().unwrap_or(""),
        _ => "",
    };
    if path == TUNNEL_PATH && head.headers.get("upgrade").is_some() {
        return tunnel(ctx, stream, peer, head, leftover).await;
    }
    let mut all = raw;
    all.extend_from_slice(&leftover);
    let standard = surface::standard_route(ctx.metrics.clone(), None);
    let route = move |method: &str, path: &str| -> surface::Answer {
        if path == TUNNEL_PATH {
            return (
                400,
                "text/plain; charset=utf-8",
                "expected a websocket upgrade\n".into(),
            );
        }
        standard(method, path)
    };
    if let Err(e) = surface::serve_after_head(stream, &head, all, route, &ctx.shutdown).await {
        log::debug!("relay {peer}: http surface: {e}");
    }
}

async fn tunnel<S: FrontStream>(
    ctx: Arc<Ctx>,
    stream: S,
    peer: SocketAddr,
    head: RequestHead,
    leftover: Vec<u8>,
) {
    let session_id = match ws::check_upgrade(&head, ctx.cfg.token.as_ref()) {
        Upgrade::Refuse(status, why) => {
            if status == 401 {
                ctx.metrics.refused(Refusal::Auth);
            } else {
                ctx.metrics.refused(Refusal::BadRequest);
            }
            log::warn!("relay {peer}: tunnel refused: {why} ({status})");
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
            let mut w = stream.clone();
            if let Err(e) = w.write_all(&response).await {
                log::debug!("relay {peer}: upgrade write failed: {e}");
                return;
            }
            session_id
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

/// On drain: go-away, then close the session once its streams are done.
async fn drain_session(ctx: &Ctx, session: &Session, session_sd: &crate::shutdown::Shutdown) {
    ctx.shutdown.draining().await;
    session_sd.drain();
    session.go_away("relay shutting down");
    session.streams_done().await;
    session.close("relay shutting down");
    std::future::pending::<()>().await
}

/// Streams the client opens: `-L` dials from the relay's network.
async fn incoming_loop(ctx: &Arc<Ctx>, session: &Session, tasks: &TaskSet) {
    while let Some(inc) = session.accept().await {
        let ctx = ctx.clone();
        let label = session.label().to_string();
        tasks.spawn(async move { serve_open(&ctx, inc, &label).await });
    }
    std::future::pending::<()>().await
}

async fn serve_open(ctx: &Ctx, inc: Incoming, label: &str) {
    match inc.target.clone() {
        OpenTarget::Dial { host, port } => {
            bridge::serve_dial(
                inc,
                host,
                port,
                &ctx.cfg.rules,
                ctx.cfg.connect_timeout,
                label,
                &ctx.metrics,
            )
            .await;
        }
        OpenTarget::Bound { .. } => {
            bridge::refuse(
                inc,
                RefuseCode::BadRequest,
                "a relay has no bindings to open",
                label,
                &ctx.metrics,
            );
        }
    }
}
