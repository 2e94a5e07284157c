//! Absolute-form requests (`GET http://host/path`): forwarded to the origin over keep-alive
//! connections, with bodies passed through under their own framing.
//!
//! async-h1 cannot serve this path: its server closes HTTP/1.0 requests without an answer, and
//! its client rejects HTTP/1.0 responses and reads close-delimited bodies as empty (async-h1 2.3),
//! both of which real clients and origins send. So heads go through our own parser and bodies
//! through [`crate::http::body`].
//!
//! Every read and write of a body (and of the heads we write) runs under the idle timeout: a
//! peer that announces a body and stalls, or stops reading, ends the exchange and the origin
//! connection with it. The tunnel's `-R …:proxy` ports serve visitors through the same
//! [`forward`], so a visitor cannot pin a slot that way either.

use super::conn::{Conn, Next};
use crate::dial::Dialer;
use crate::dial::{DialError, host_port};
use crate::http::body::{self, BodyError, Framing, Idle};
use crate::http::front::{self, ReadError};
use crate::http::head::{Headers, RequestHead, ResponseHead, Target, Version};
use futures_lite::FutureExt;
use futures_lite::io::{AsyncWrite, AsyncWriteExt, BufReader};
use smol::net::TcpStream;

/// Read buffer for an origin connection.
const ORIGIN_BUF: usize = 8 * 1024;

/// A kept-alive connection to an origin.
pub(super) struct Origin<S> {
    host: String,
    port: u16,
    w: S,
    r: BufReader<S>,
}

/// Headers that describe one connection, not the message: never forwarded.
/// `Transfer-Encoding` stays: bodies pass through with their chunking intact.
///
/// `Connection` may name further fields, but never a framing one: [`body::request_framing`] and
/// [`body::response_framing`] refuse such a message before anything here is removed.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut Headers) {
    let listed: Vec<String> = h
        .get_all("connection")
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .chain(listed.iter().map(String::as_str))
    {
        h.remove(name);
    }
}

/// True when the client asked for the connection to stay open after this exchange.
fn client_keeps_alive(head: &RequestHead) -> bool {
    match head.version {
        Version::Http11 => !head.headers.contains_token("connection", "close"),
        // HTTP/1.0 keep-alive is rare and fragile: answer and close.
        Version::Http10 => false,
    }
}

fn origin_keeps_alive(res: &ResponseHead, framing: Framing) -> bool {
    res.version == Version::Http11
        && framing != Framing::UntilClose
        && !res.headers.contains_token("connection", "close")
}

impl<S: AsyncWrite + Unpin> Origin<S> {
    /// Ends our side politely (a FIN, which a mux stream passes on) before letting go.
    pub(super) async fn close(mut self) {
        // The origin may be gone already; there is nothing left to tell it then.
        let _ = self.w.close().await;
    }
}

/// A request rewritten for the origin, ready to send.
struct Outgoing {
    host: String,
    port: u16,
    method: String,
    path: String,
    /// the head as the origin gets it
    head: Vec<u8>,
    /// how the request body is framed
    framing: Framing,
    /// the client asked to keep its connection open
    keep_client: bool,
}

/// One absolute-form request on a client connection.
struct Exchange<'a, D: Dialer> {
    conn: &'a mut Conn<D>,
    stream: &'a TcpStream,
    reader: &'a mut BufReader<TcpStream>,
}

/// Serves one absolute-form request and, while the connection stays alive, reads the next.
pub(super) async fn forward<D: Dialer>(
    conn: &mut Conn<D>,
    head: RequestHead,
    stream: &TcpStream,
    reader: &mut BufReader<TcpStream>,
    origin: &mut Option<Origin<D::Stream>>,
) -> Next {
    let mut ex = Exchange {
        conn,
        stream,
        reader,
    };
    let req = match ex.prepare(head).await {
        Ok(req) => req,
        Err(outcome) => return Next::Close(outcome),
    };
    // A kept connection to the same origin is reused; one to another origin is closed.
    let kept = match origin.take() {
        Some(o) if o.host == req.host && o.port == req.port => Some(o),
        Some(o) => {
            o.close().await;
            None
        }
        None => None,
    };
    let (res, o) = match ex.send(kept, &req).await {
        Ok(pair) => pair,
        Err(outcome) => return Next::Close(outcome),
    };
    ex.respond(req, res, o, origin).await
}

impl<D: Dialer> Exchange<'_, D> {
    /// Sends an error response and returns the log outcome.
    async fn reply(&mut self, status: u16, why: &str) -> String {
        self.conn.reply(self.stream, status, why, &[]).await
    }

    /// Checks the request and rewrites it for the origin: auth, scheme, body framing,
    /// `Expect`, hop-by-hop headers, `Host`, origin-form target. `Err` carries the outcome
    /// after the client was answered.
    async fn prepare(&mut self, mut head: RequestHead) -> Result<Outgoing, String> {
        self.conn.authorize(self.stream, &head).await?;
        let target = std::mem::replace(&mut head.target, Target::Asterisk);
        let Target::Absolute {
            scheme,
            host,
            port,
            path,
        } = target
        else {
            return Err(self.reply(400, "not an absolute URL").await);
        };
        if scheme != "http" {
            let why = "only http:// URLs are forwarded; use CONNECT for https";
            return Err(self.reply(501, why).await);
        }
        let framing = match body::request_framing(&head) {
            Ok(f) => f,
            Err(e) => {
                let status = if matches!(e, BodyError::UnsupportedCoding) {
                    501
                } else {
                    400
                };
                return Err(self.reply(status, &e.to_string()).await);
            }
        };
        let keep_client = client_keeps_alive(&head);
        if head.headers.contains_token("expect", "100-continue") {
            // We answer the expectation ourselves; the origin gets the body straight away.
            head.headers.remove("expect");
            let mut w = Idle::new(self.stream.clone(), self.conn.config.idle_timeout);
            if let Err(e) = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await {
                return Err(format!("writing 100 continue: {e}"));
            }
        }
        strip_hop_by_hop(&mut head.headers);
        head.headers.set("Host", authority(&host, port));
        head.target = Target::Origin(path.clone());
        let mut bytes = Vec::with_capacity(512);
        head.write_to(&mut bytes);
        Ok(Outgoing {
            host,
            port,
            method: head.method,
            path,
            head: bytes,
            framing,
            keep_client,
        })
    }

    /// Sends the request (head and body) and reads the origin's final response head. A reused
    /// connection that the origin had already closed is retried once on a fresh one, but only
    /// when no body was consumed. `Err` carries the outcome after the client was answered.
    async fn send(
        &mut self,
        mut kept: Option<Origin<D::Stream>>,
        req: &Outgoing,
    ) -> Result<(ResponseHead, Origin<D::Stream>), String> {
        loop {
            let reused = kept.is_some();
            let mut o = match kept.take() {
                Some(o) => o,
                None => self.open(req).await?,
            };
            let idle = self.conn.config.idle_timeout;
            let mut origin_w = Idle::new(&mut o.w, idle);
            let reader = &mut *self.reader;
            let sent = async {
                origin_w
                    .write_all(&req.head)
                    .await
                    .map_err(BodyError::Write)?;
                body::copy_body(&mut Idle::new(reader, idle), &mut origin_w, req.framing).await
            };
            match sent.await {
                Ok(n) => self.conn.up += n,
                Err(e) => {
                    // Whatever the origin got is not a whole request: it must not see more.
                    o.close().await;
                    let (status, why) = request_failure(&e);
                    if e.is_malformed() {
                        log::warn!("conn {} {}: {why} ({status})", self.conn.id, self.conn.peer);
                    }
                    return Err(self.reply(status, &why).await);
                }
            }
            match read_final_response(self.conn, self.stream, &mut o).await {
                Ok(res) => return Ok((res, o)),
                Err(ReadError::Closed) if reused && req.framing == Framing::Empty => continue,
                Err(e) => {
                    let (status, why) = match e {
                        ReadError::Timeout { .. } => {
                            (504, "origin did not answer in time".to_string())
                        }
                        e => (502, format!("bad response from origin: {e}")),
                    };
                    o.close().await;
                    return Err(self.reply(status, &why).await);
                }
            }
        }
    }

    /// Dials the origin. `Err` carries the outcome after the client was answered.
    async fn open(&mut self, req: &Outgoing) -> Result<Origin<D::Stream>, String> {
        match open(self.conn, &req.host, req.port).await {
            Ok(o) => Ok(o),
            Err(e) => {
                let status = e.refusal().http_status();
                log::warn!(
                    "conn {} {}: {}: {e} ({status})",
                    self.conn.id,
                    self.conn.peer,
                    host_port(&req.host, req.port)
                );
                Err(self.reply(status, &e.to_string()).await)
            }
        }
    }

    /// Passes the origin's response to the client, keeps the origin connection when both sides
    /// allow it, and waits for the client's next request.
    async fn respond(
        mut self,
        req: Outgoing,
        mut res: ResponseHead,
        mut o: Origin<D::Stream>,
        origin: &mut Option<Origin<D::Stream>>,
    ) -> Next {
        let target = host_port(&req.host, req.port);
        let framing = match body::response_framing(&req.method, &res) {
            Ok(f) => f,
            Err(e) => {
                let (id, peer) = (self.conn.id, self.conn.peer);
                log::warn!("conn {id} {peer}: origin {target} sent bad framing: {e} (502)");
                o.close().await;
                return Next::Close(self.reply(502, &format!("origin response: {e}")).await);
            }
        };
        let keep_origin = origin_keeps_alive(&res, framing);
        let keep =
            req.keep_client && framing != Framing::UntilClose && !self.conn.shutdown.is_draining();
        let status = res.status;
        strip_hop_by_hop(&mut res.headers);
        if !keep {
            res.headers.set("Connection", "close");
        }
        if let Err(e) = self.copy_response(&res, &mut o, framing).await {
            // The client's response has started: all that is left is to close both sides.
            if e.is_malformed() {
                let (id, peer) = (self.conn.id, self.conn.peer);
                log::warn!("conn {id} {peer}: origin {target} sent a bad body: {e}");
            }
            o.close().await;
            return Next::Close(format!("response {status}: {}", response_failure(&e)));
        }
        log::debug!(
            "conn {} {} http://{}{} -> {status}",
            self.conn.id,
            req.method,
            authority(&req.host, req.port),
            req.path
        );
        if keep_origin {
            *origin = Some(o);
        } else {
            o.close().await;
        }
        if !keep {
            self.stream.shutdown(std::net::Shutdown::Write).ok();
            return Next::Close(format!("{status}"));
        }
        next_request(self.conn, self.stream, self.reader, status).await
    }

    /// Writes the response head and copies its body to the client.
    async fn copy_response(
        &mut self,
        res: &ResponseHead,
        o: &mut Origin<D::Stream>,
        framing: Framing,
    ) -> Result<(), BodyError> {
        let mut out = Vec::with_capacity(512);
        res.write_to(&mut out);
        let idle = self.conn.config.idle_timeout;
        let mut client_w = Idle::new(self.stream.clone(), idle);
        client_w.write_all(&out).await.map_err(BodyError::Write)?;
        let n = body::copy_body(&mut Idle::new(&mut o.r, idle), &mut client_w, framing).await?;
        self.conn.down += n + out.len() as u64;
        Ok(())
    }
}

/// The answer to a request whose head or body could not be passed on: the client's fault (400,
/// 408) or the origin's (502, 504).
fn request_failure(e: &BodyError) -> (u16, String) {
    let status = match e {
        _ if e.is_read_stall() => 408,
        _ if e.is_write_stall() => 504,
        BodyError::UnsupportedCoding => 501,
        BodyError::Malformed(_) | BodyError::Truncated | BodyError::Read(_) => 400,
        BodyError::Write(_) => 502,
    };
    let why = match e {
        _ if e.is_read_stall() => format!("request body stalled: {e}"),
        _ if e.is_write_stall() => format!("origin stopped reading the request: {e}"),
        BodyError::Write(_) => format!("sending request: {e}"),
        _ => format!("request body: {e}"),
    };
    (status, why)
}

/// Why a response could not be passed on, for the log line.
fn response_failure(e: &BodyError) -> String {
    if e.is_read_stall() {
        format!("origin stalled: {e}")
    } else if e.is_write_stall() {
        format!("client stopped reading: {e}")
    } else {
        e.to_string()
    }
}

/// Waits for the next request on a kept-alive connection (until idle or drain).
async fn next_request<D: Dialer>(
    conn: &mut Conn<D>,
    stream: &TcpStream,
    reader: &mut BufReader<TcpStream>,
    last: u16,
) -> Next {
    let idle = conn.config.idle_timeout;
    let shutdown = conn.shutdown.clone();
    let next = async { Some(front::read_request(reader, idle).await) }
        .or(async {
            shutdown.draining().await;
            None
        })
        .await;
    match next {
        None => Next::Close(format!("{last} (drained)")),
        Some(Ok(head)) => Next::Request(head),
        Some(Err(ReadError::Closed)) | Some(Err(ReadError::Timeout { partial: false })) => {
            Next::Close(format!("{last}"))
        }
        Some(Err(e)) => Next::Close(conn.head_error(stream, e).await),
    }
}

/// `host[:port]` for a Host header: the port only when it is not 80.
fn authority(host: &str, port: u16) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 80 { h } else { format!("{h}:{port}") }
}

async fn open<D: Dialer>(
    conn: &Conn<D>,
    host: &str,
    port: u16,
) -> Result<Origin<D::Stream>, DialError> {
    let (s, early) = conn.dialer.dial(host, port).await?;
    if !early.is_empty() {
        return Err(DialError::Connect {
            target: host_port(host, port),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "origin spoke before the request",
            ),
        });
    }
    Ok(Origin {
        host: host.to_string(),
        port,
        w: s.clone(),
        r: BufReader::with_capacity(ORIGIN_BUF, s),
    })
}

/// Reads the origin's answer, passing interim 1xx responses through to the client.
async fn read_final_response<D: Dialer>(
    conn: &mut Conn<D>,
    stream: &TcpStream,
    o: &mut Origin<D::Stream>,
) -> Result<ResponseHead, ReadError> {
    loop {
        let res = front::read_response(&mut o.r, conn.config.idle_timeout).await?;
        if res.status == 101 {
            // We never forward Upgrade, so a switch is a protocol error.
            return Err(ReadError::Head(crate::http::head::HeadError::Malformed(
                "unexpected 101",
            )));
        }
        if !(100..200).contains(&res.status) {
            return Ok(res);
        }
        let mut out = Vec::new();
        res.write_to(&mut out);
        let mut w = Idle::new(stream.clone(), conn.config.idle_timeout);
        w.write_all(&out).await.map_err(ReadError::Io)?;
    }
}
