//! The relay's small local HTTP surface (`/healthz`, `/readyz`, `/metrics`, 404, 405),
//! served with async-h1 once the front door has read a head that is not a tunnel upgrade.
//!
//! async-h1 (2.3) closes every HTTP/1.0 request without a response; those get the same answer
//! from a few lines of our own, so every client gets a response.

use crate::http::front;
use crate::http::head::{RequestHead, Target, Version};
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use http_types::{Response, StatusCode};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A route's answer: status, content type, body.
pub type Answer = (u16, &'static str, String);

/// How long one request on a surface may take in all, head and answer: a client that
/// drips its head or reads the answer slowly holds a connection no longer than this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Connections a surface-only listener (`--status`, `--admin`) serves at once; more are
/// closed at once. Such a listener is for a monitoring agent or two, not for crowds.
pub const MAX_SURFACE_CONNECTIONS: usize = 64;

/// Replays the head the front door already read, then reads end of file: async-h1 answers
/// that one request and finds no second one, and never reads a body or waits on the socket.
/// Writes go to the stream. Clones share the replay, as async-h1 requires
/// (`Clone + Send + Sync`).
#[derive(Clone)]
pub struct HeadOnly<S> {
    pre: Arc<Mutex<(Vec<u8>, usize)>>,
    inner: S,
}

impl<S> std::fmt::Debug for HeadOnly<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadOnly").finish_non_exhaustive()
    }
}

impl<S> HeadOnly<S> {
    /// `head` is read, then end of file; writes go to `inner`.
    pub fn new(head: Vec<u8>, inner: S) -> Self {
        HeadOnly {
            pre: Arc::new(Mutex::new((head, 0))),
            inner,
        }
    }
}

impl<S: Unpin> AsyncRead for HeadOnly<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut pre = self.pre.lock().unwrap_or_else(|e| e.into_inner());
        let (bytes, pos) = &mut *pre;
        let n = (bytes.len() - *pos).min(buf.len());
        buf[..n].copy_from_slice(&bytes[*pos..*pos + n]);
        *pos += n;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadOnly<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The path of a request's target, without its query (`""` for CONNECT and `*`).
pub fn path_of(head: &RequestHead) -> &str {
    let full = match &head.target {
        Target::Origin(p) | Target::Absolute { path: p, .. } => p.as_str(),
        _ => "",
    };
    full.split('?').next().unwrap_or("")
}

/// The answer a surface gives before routing, if any: HTTP/1.1 without `Host` is a 400
/// (async-h1 would close such a request without a word), and a request with a
/// body is a 413: a surface never reads bodies (a dripped body would hold the connection).
pub fn precheck(head: &RequestHead) -> Option<(u16, &'static str)> {
    if head.version == Version::Http11 && head.headers.get("host").is_none() {
        return Some((400, "missing Host header"));
    }
    let has_body = head.headers.get("transfer-encoding").is_some()
        || head
            .headers
            .get_all("content-length")
            .any(|v| v.trim() != "0");
    if has_body {
        return Some((413, "this endpoint takes no request body"));
    }
    None
}

/// Answers the one request whose head (`head`, raw bytes `raw_head`, nothing past it) was
/// read, with `route`, then closes the connection: no keep-alive, no body read.
pub async fn serve<S, F>(
    stream: S,
    head: &RequestHead,
    raw_head: Vec<u8>,
    route: F,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
    F: Fn(&str, &str) -> Answer,
{
    let mut w = stream.clone();
    if head.version == Version::Http10 {
        let (status, ctype, body) = route(&head.method, path_of(head));
        let reason = crate::http::front::reason_phrase(status);
        let body = if head.method == "HEAD" { "" } else { &body };
        let out = format!(
            "HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        w.write_all(out.as_bytes()).await?;
        return w.close().await;
    }
    let route = &route;
    async_h1::accept(HeadOnly::new(raw_head, stream), |req| async move {
        let (status, ctype, body) = route(req.method().as_ref(), req.url().path());
        let mut res =
            Response::new(StatusCode::try_from(status).unwrap_or(StatusCode::InternalServerError));
        res.insert_header("content-type", ctype);
        res.insert_header("connection", "close");
        res.set_body(body);
        Ok(res)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))?;
    w.close().await
}

/// Readiness as a status surface reports it.
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;

/// The standard routes: `/healthz`, `/metrics`, and `/readyz` when `ready` is given.
pub fn standard_route(
    metrics: Arc<crate::metrics::Metrics>,
    ready: Option<Ready>,
) -> impl Fn(&str, &str) -> Answer + Send + Sync + 'static {
    move |method: &str, path: &str| {
        let text = "text/plain; charset=utf-8";
        let get = matches!(method, "GET" | "HEAD");
        match (get, path, &ready) {
            (true, "/healthz", _) => (200, text, "ok\n".into()),
            (true, "/metrics", _) => (200, "text/plain; version=0.0.4", metrics.render()),
            (true, "/readyz", Some(ready)) if ready() => (200, text, "ready\n".into()),
            (true, "/readyz", Some(_)) => (503, text, "not ready\n".into()),
            (false, "/healthz" | "/metrics", _) | (false, "/readyz", Some(_)) => {
                (405, text, "method not allowed\n".into())
            }
            _ => (404, text, "not found\n".into()),
        }
    }
}

/// `first`'s answer where it has one (the `/status` routes, see [`crate::http::status::route`]),
/// else `then`'s (the standard routes).
pub fn combine<A, B>(first: A, then: B) -> impl Fn(&str, &str) -> Answer + Send + Sync + 'static
where
    A: Fn(&str, &str) -> Option<Answer> + Send + Sync + 'static,
    B: Fn(&str, &str) -> Answer + Send + Sync + 'static,
{
    move |method: &str, path: &str| first(method, path).unwrap_or_else(|| then(method, path))
}

/// Who may read a surface-only listener: everyone, or (on a non-loopback `--admin` with
/// `--admin-token`) only requests with `Authorization: Bearer <token>`, compared in constant
/// time, for every path but `/healthz` and `/readyz` (a load balancer's probe carries no
/// token, and they tell nothing but up or ready).
#[derive(Debug, Clone, Default)]
pub enum Guard {
    /// no token asked
    #[default]
    Open,
    /// this bearer token is required
    Bearer(crate::secret::Secret),
}

impl Guard {
    /// `Err(why)` when `head` may not read its path (answered 401).
    pub fn check(&self, head: &RequestHead) -> Result<(), &'static str> {
        let Guard::Bearer(want) = self else {
            return Ok(());
        };
        if matches!(path_of(head), "/healthz" | "/readyz") {
            return Ok(());
        }
        let got = head
            .headers
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match got {
            Some(g) if crate::secret::constant_time_eq(g.as_bytes(), want.expose().as_bytes()) => {
                Ok(())
            }
            Some(_) => Err("wrong token"),
            None => Err("missing token (Authorization: Bearer …)"),
        }
    }
}

/// How often a surface logs a refused request: a scanner knocking without the token gets
/// one line per interval, with the count of those left out.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Lets one log line through per [`REFUSAL_LOG_INTERVAL`] and counts the rest.
#[derive(Debug, Default)]
struct OnceIn(Mutex<(Option<Instant>, u64)>);

impl OnceIn {
    /// `Some(left_out)` when this one is logged, `None` when only counted.
    fn hit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match w.0 {
            Some(t) if now.saturating_duration_since(t) < REFUSAL_LOG_INTERVAL => {
                w.1 = w.1.saturating_add(1);
                None
            }
            _ => {
                w.0 = Some(now);
                Some(std::mem::take(&mut w.1))
            }
        }
    }
}

/// Serves one request on `stream` after the caller read its head (`raw_head`: the head's
/// bytes only), then closes. Everything, answer included, ends by `deadline` or when
/// `shutdown` drains; a request with a body or (HTTP/1.1) without `Host` is refused.
pub async fn serve_after_head<S, F>(
    stream: S,
    head: &RequestHead,
    raw_head: Vec<u8>,
    route: F,
    deadline: Instant,
    shutdown: &crate::shutdown::ShutdownSignal,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
    F: Fn(&str, &str) -> Answer,
{
    use futures_lite::FutureExt;
    let answer = async {
        if let Some((status, why)) = precheck(head) {
            let left = deadline.saturating_duration_since(Instant::now());
            let refusal = front::refuse(stream.clone(), status, why, &[], left);
            return refusal.await.map_err(io::Error::other);
        }
        serve(stream.clone(), head, raw_head, route).await
    };
    let ended = async {
        shutdown.draining().await;
        Ok(())
    };
    let late = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "request not answered within its deadline",
        )
    };
    let left = deadline.saturating_duration_since(Instant::now());
    crate::time::with_timeout(left, answer.or(ended), late).await
}

/// A listener that serves only the surface, `what` naming it in logs (`status`, `admin`).
/// At most [`MAX_SURFACE_CONNECTIONS`] at once, one request each, each within
/// [`REQUEST_DEADLINE`].
pub async fn serve_listener_as<F>(
    what: &'static str,
    listener: smol::net::TcpListener,
    route: F,
    spawner: crate::exec::Spawner,
    shutdown: crate::shutdown::ShutdownSignal,
) where
    F: Fn(&str, &str) -> Answer + Send + Sync + 'static,
{
    serve_listener_guarded(what, listener, route, Guard::Open, spawner, shutdown).await
}

/// [`serve_listener_as`], with every request checked by `guard` first (401 when refused).
pub async fn serve_listener_guarded<F>(
    what: &'static str,
    listener: smol::net::TcpListener,
    route: F,
    guard: Guard,
    spawner: crate::exec::Spawner,
    shutdown: crate::shutdown::ShutdownSignal,
) where
    F: Fn(&str, &str) -> Answer + Send + Sync + 'static,
{
    let route = Arc::new(route);
    let guard = Arc::new((guard, OnceIn::default()));
    let accept_loop = crate::listen::AcceptLoop {
        what,
        limit: MAX_SURFACE_CONNECTIONS,
        // Each request ends on the drain by itself (or at its deadline).
        drain: crate::listen::Drain::Cancel,
    };
    let admit = |stream, peer| {
        let (route, guard, shutdown) = (route.clone(), guard.clone(), shutdown.clone());
        Ok(async move {
            let (g, log) = &*guard;
            serve_one(what, stream, peer, route, (g, log), &shutdown).await
        })
    };
    let over_limit = |_stream, peer, _open| {
        log::debug!("{what} {peer}: closed, {MAX_SURFACE_CONNECTIONS} connections open");
        crate::listen::TurnAway::Close
    };
    accept_loop
        .run(listener, spawner, &shutdown, admit, over_limit)
        .await;
}

/// One connection of a surface-only listener: one head, one answer, within
/// [`REQUEST_DEADLINE`].
async fn serve_one<F>(
    what: &str,
    stream: smol::net::TcpStream,
    peer: std::net::SocketAddr,
    route: Arc<F>,
    (guard, refusal_log): (&Guard, &OnceIn),
    shutdown: &crate::shutdown::ShutdownSignal,
) where
    F: Fn(&str, &str) -> Answer,
{
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut reader = futures_lite::io::BufReader::with_capacity(2048, stream.clone());
    let raw = match crate::http::front::read_head_bytes(&mut reader, REQUEST_DEADLINE).await {
        Ok(raw) => raw,
        Err(e) => {
            log::debug!("{what} {peer}: {e}");
            return;
        }
    };
    drop(reader);
    let head = match crate::http::head::parse_request(&raw) {
        Ok(h) => h,
        Err(e) => {
            let left = deadline.saturating_duration_since(Instant::now());
            let refusal = front::refuse(stream, e.status(), &e.to_string(), &[], left);
            if let Err(e) = refusal.await {
                log::debug!("{what} {peer}: {e}");
            }
            return;
        }
    };
    if let Err(why) = guard.check(&head) {
        if let Some(n) = refusal_log.hit() {
            let more = if n > 0 {
                format!("; {n} more since")
            } else {
                String::new()
            };
            log::warn!(
                "{what} {peer}: {} refused: {why} (401){more}",
                path_of(&head)
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let challenge: &[(&str, &str)] = &[("WWW-Authenticate", "Bearer")];
        if let Err(e) = front::refuse(stream, 401, why, challenge, left).await {
            log::debug!("{what} {peer}: {e}");
        }
        return;
    }
    let route = |m: &str, p: &str| route(m, p);
    if let Err(e) = serve_after_head(stream, &head, raw, route, deadline, shutdown).await {
        log::debug!("{what} {peer}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard's answer for `GET path` with an optional bearer token.
    fn check(path: &str, token: Option<&str>) -> Result<(), &'static str> {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
        let head = crate::http::head::parse_request(raw.as_bytes()).unwrap();
        Guard::Bearer(crate::secret::Secret::new("s3cret".to_string())).check(&head)
    }

    #[test]
    fn the_bearer_guard_lets_only_the_probes_through_without_the_token() {
        let cases = [
            ("/healthz", None, true),
            ("/readyz", None, true),
            ("/readyz?verbose", None, true),
            ("/metrics", None, false),
            ("/status", None, false),
            ("/status", Some("wrong"), false),
            ("/status", Some("s3cret"), true),
        ];
        for (path, token, ok) in cases {
            assert_eq!(check(path, token).is_ok(), ok, "{path} {token:?}");
        }
    }
}
