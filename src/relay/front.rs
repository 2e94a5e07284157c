//! The relay's front door: the connection limits at accept, the TLS handshake, one head
//! within one deadline, then a tunnel upgrade or one answer of the small HTTP surface
//! (`/healthz` and `/readyz` for anyone, `/metrics` for the token holder only).

use super::*;
use crate::exec::BoxFuture;
use crate::http::front::{self, read_head_bytes};
use crate::tunnel::ws::TUNNEL_PATH;
use futures_lite::io::BufReader;

/// What the front door can serve: TCP, or TLS behind a shared handle.
pub trait FrontStream: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static {}
impl<S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static> FrontStream for S {}

/// Turns the peer away with a short `Connection: close` answer (bounded in time).
pub(super) async fn reply<S: FrontStream>(
    stream: &S,
    status: u16,
    why: &str,
    extra: &[(&str, &str)],
) {
    let refusal = front::refuse(stream.clone(), status, why, extra, front::REFUSAL_WRITE);
    if let Err(e) = refusal.await {
        log::debug!("relay: {status} not delivered: {e}");
    }
}

/// A new connection at the public port: admitted under `--max-connections` (and the
/// pre-upgrade share) and served on its own task, or refused with 503 right here.
pub(super) fn admit(
    ctx: &Arc<Ctx>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Result<BoxFuture, listen::TurnAway> {
    let active = ctx.active();
    // One deadline for everything before a tunnel: TLS, head, and a surface answer.
    let deadline = Instant::now() + active.cfg.handshake_timeout;
    let permit = match ctx.limits.admit_conn() {
        Ok(p) => p,
        Err(why) => return Err(refuse_conn(ctx, stream, peer, &why)),
    };
    // The certificate as of now: a reload swaps it for the next connections.
    #[cfg(feature = "tls")]
    if let Some(tls) = active.cfg.tls.clone() {
        let ctx = ctx.clone();
        return Ok(Box::pin(tls_front_door(
            ctx, tls, stream, peer, permit, deadline,
        )));
    }
    Ok(Box::pin(front_door(
        ctx.clone(),
        stream,
        peer,
        permit,
        deadline,
    )))
}

/// A connection beyond the accept loop's own bound (the same `--max-connections`): refused
/// as the limiter refuses it.
pub(super) fn over_limit(
    ctx: &Ctx,
    stream: TcpStream,
    peer: SocketAddr,
    open: usize,
) -> listen::TurnAway {
    let why = limits::ConnRefusal::All(open);
    refuse_conn(ctx, stream, peer, &why)
}

/// Counts, logs (rate-limited) and answers a connection refused at the front door: 503, or
/// with TLS just a close (no TLS handshake for a connection we cannot serve).
fn refuse_conn(
    ctx: &Ctx,
    stream: TcpStream,
    peer: SocketAddr,
    why: &limits::ConnRefusal,
) -> listen::TurnAway {
    ctx.metrics.refused(Refusal::TooManyConnections);
    let detail = why.to_string();
    ctx.view
        .refused(&peer.to_string(), Refusal::TooManyConnections, &detail);
    if let Some(n) = ctx.limits.logs.conns.hit() {
        log::warn!(
            "relay {peer}: connection refused: {why} (503){}",
            left_out(n)
        );
    }
    #[cfg(feature = "tls")]
    if ctx.active().cfg.tls.is_some() {
        return listen::TurnAway::Close;
    }
    listen::TurnAway::answer(front::refuse(
        stream,
        503,
        "relay busy: too many connections",
        &[],
        front::REFUSAL_AT_ACCEPT,
    ))
}

/// The TLS handshake (bounded), then the front door over the encrypted stream.
#[cfg(feature = "tls")]
async fn tls_front_door(
    ctx: Arc<Ctx>,
    tls: Arc<crate::tls::ServerTls>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
    deadline: Instant,
) {
    let left = deadline.saturating_duration_since(Instant::now());
    let handshake = crate::time::with_timeout(left, tls.accept(stream), || {
        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
    });
    match handshake.await {
        Ok(s) => {
            let s = async_dup::Arc::new(async_dup::Mutex::new(s));
            front_door(ctx, s, peer, permit, deadline).await
        }
        Err(e) => log::warn!("relay {peer}: TLS handshake failed: {e}"),
    }
}

/// Reads one head (by `deadline`) and dispatches: tunnel upgrade, the surface, or an error.
async fn front_door<S: FrontStream>(
    ctx: Arc<Ctx>,
    stream: S,
    peer: SocketAddr,
    permit: ConnPermit,
    deadline: Instant,
) {
    let mut reader = BufReader::with_capacity(4096, stream.clone());
    let left = deadline.saturating_duration_since(Instant::now());
    let raw = match read_head_bytes(&mut reader, left).await {
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
    let path = surface::path_of(&head);
    if path == TUNNEL_PATH && head.headers.get("upgrade").is_some() {
        return tunnel(ctx, stream, peer, head, leftover, permit, deadline).await;
    }
    if path == "/metrics" {
        if let Err((status, why)) = metrics_access(&ctx, &head) {
            return refuse_metrics(&ctx, &stream, peer, status, why).await;
        }
    }
    let route = public_route(&ctx);
    // Only the head goes on: the surface answers one request and reads no body.
    let served = surface::serve_after_head(stream, &head, raw, route, deadline, &ctx.shutdown);
    if let Err(e) = served.await {
        log::debug!("relay {peer}: http surface: {e}");
    }
    drop(permit);
}

/// The surface of the public port: the standard routes, and a 400 on the tunnel path
/// without an upgrade.
fn public_route(ctx: &Ctx) -> impl Fn(&str, &str) -> surface::Answer + use<> {
    let standard = surface::standard_route(ctx.metrics.clone(), Some(ctx.ready.clone()));
    move |method: &str, path: &str| -> surface::Answer {
        if path == TUNNEL_PATH {
            return (
                400,
                "text/plain; charset=utf-8",
                "expected a websocket upgrade\n".into(),
            );
        }
        standard(method, path)
    }
}

/// Answers a `/metrics` request that may not read it (a 401 is counted and logged, rate
/// limited, as a token refusal).
async fn refuse_metrics<S: FrontStream>(
    ctx: &Ctx,
    stream: &S,
    peer: SocketAddr,
    status: u16,
    why: &str,
) {
    let mut challenge: &[(&str, &str)] = &[];
    if status == 401 {
        ctx.metrics.refused(Refusal::Auth);
        ctx.view.refused(&peer.to_string(), Refusal::Auth, why);
        if let Some(n) = ctx.limits.logs.auth.hit() {
            log::warn!("relay {peer}: /metrics refused: {why} (401){}", left_out(n));
        }
        challenge = &[("WWW-Authenticate", "Bearer")];
    }
    reply(stream, status, why, challenge).await
}

/// Who may read `/metrics` on the public port: the holder of a token (the relay's `token`
/// or any `[[relay.tokens]]` entry, as for a tunnel: `Authorization: Bearer`, compared by
/// SHA-256 in constant time). With `--no-auth` there is no token, so nobody: 404 (use
/// `--admin`).
fn metrics_access(ctx: &Ctx, head: &RequestHead) -> Result<(), (u16, &'static str)> {
    let auth = &ctx.active().auth;
    if auth.is_open() {
        return Err((404, "not found (use --admin for /metrics)"));
    }
    match (auth.check(ws::bearer(head)), ws::bearer(head)) {
        (Ok(_), _) => Ok(()),
        (Err(_), Some(_)) => Err((401, "wrong token")),
        (Err(_), None) => Err((401, "missing token (Authorization: Bearer …)")),
    }
}
