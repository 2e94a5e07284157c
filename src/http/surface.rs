//! The relay's small local HTTP surface (`/healthz`, `/metrics`, 404, 405), served with
//! async-h1 once the front door has read a head that is not a tunnel upgrade.
//!
//! async-h1 cannot read HTTP/1.0 requests (STACK.md); those get the same answer from a few lines
//! of our own, so every client gets a response.

use crate::http::head::{RequestHead, Target, Version};
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use http_types::{Response, StatusCode};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// A route's answer: status, content type, body.
pub type Answer = (u16, &'static str, String);

/// Replays bytes the front door already read, then reads the stream. Clones share both, as
/// async-h1 requires (`Clone + Send + Sync`).
#[derive(Clone)]
pub struct Rewind<S> {
    pre: Arc<Mutex<(Vec<u8>, usize)>>,
    inner: S,
}

impl<S> Rewind<S> {
    /// `pre` is read first, then `inner`.
    pub fn new(pre: Vec<u8>, inner: S) -> Self {
        Rewind {
            pre: Arc::new(Mutex::new((pre, 0))),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        {
            let mut pre = self.pre.lock().unwrap_or_else(|e| e.into_inner());
            let (bytes, pos) = &mut *pre;
            if *pos < bytes.len() {
                let n = (bytes.len() - *pos).min(buf.len());
                buf[..n].copy_from_slice(&bytes[*pos..*pos + n]);
                *pos += n;
                if *pos == bytes.len() {
                    *bytes = Vec::new();
                    *pos = 0;
                }
                return Poll::Ready(Ok(n));
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
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

/// Serves the surface on `stream`, whose first head (`head`, raw bytes `raw` including
/// anything read past it) the front door already read. `route` answers each request.
pub async fn serve<S, F>(stream: S, head: &RequestHead, raw: Vec<u8>, route: F) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
    F: Fn(&str, &str) -> Answer,
{
    if head.version == Version::Http10 {
        let path = match &head.target {
            Target::Origin(p) => p.as_str(),
            _ => "",
        };
        let (status, ctype, body) = route(&head.method, path);
        let reason = crate::http::front::reason_phrase(status);
        let out = format!(
            "HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut w = stream;
        return w.write_all(out.as_bytes()).await;
    }
    let route = &route;
    async_h1::accept(Rewind::new(raw, stream), |req| async move {
        let (status, ctype, body) = route(req.method().as_ref(), req.url().path());
        let mut res =
            Response::new(StatusCode::try_from(status).unwrap_or(StatusCode::InternalServerError));
        res.insert_header("content-type", ctype);
        res.set_body(body);
        Ok(res)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))
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

/// Serves the surface on `stream` after the caller read its first head (`raw`: the head and
/// any bytes read past it). HTTP/1.1 without `Host` gets a 400 here: async-h1 would close such
/// a request without a word (STACK.md). Ends early when `shutdown` drains.
pub async fn serve_after_head<S, F>(
    stream: S,
    head: &RequestHead,
    raw: Vec<u8>,
    route: F,
    shutdown: &crate::shutdown::ShutdownSignal,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
    F: Fn(&str, &str) -> Answer,
{
    use futures_lite::FutureExt;
    if head.version == Version::Http11 && head.headers.get("host").is_none() {
        let mut w = stream;
        w.write_all(&crate::http::front::error_response(
            400,
            "missing Host header",
            &[],
        ))
        .await?;
        return w.close().await;
    }
    let ended = async {
        shutdown.draining().await;
        Ok(())
    };
    serve(stream, head, raw, route).or(ended).await
}

/// A listener that serves only the surface (the client's `--status`).
pub async fn serve_listener<F>(
    listener: smol::net::TcpListener,
    route: F,
    spawner: crate::exec::Spawner,
    shutdown: crate::shutdown::ShutdownSignal,
) where
    F: Fn(&str, &str) -> Answer + Send + Sync + 'static,
{
    let route = Arc::new(route);
    let conns = crate::exec::TaskSet::new(spawner);
    while let Some((stream, peer)) = crate::net::accept(&listener, &shutdown, "status").await {
        let (route, shutdown) = (route.clone(), shutdown.clone());
        conns.spawn(async move {
            let mut reader = futures_lite::io::BufReader::with_capacity(2048, stream.clone());
            let head_timeout = std::time::Duration::from_secs(10);
            let raw = match crate::http::front::read_head_bytes(&mut reader, head_timeout).await {
                Ok(raw) => raw,
                Err(e) => {
                    log::debug!("status {peer}: {e}");
                    return;
                }
            };
            let head = match crate::http::head::parse_request(&raw) {
                Ok(h) => h,
                Err(e) => {
                    let mut w = stream;
                    let _ = w
                        .write_all(&crate::http::front::error_response(
                            e.status(),
                            &e.to_string(),
                            &[],
                        ))
                        .await;
                    return;
                }
            };
            let mut all = raw;
            all.extend_from_slice(reader.buffer());
            drop(reader);
            if let Err(e) = serve_after_head(
                stream,
                &head,
                all,
                |m: &str, p: &str| route(m, p),
                &shutdown,
            )
            .await
            {
                log::debug!("status {peer}: {e}");
            }
        });
    }
}
