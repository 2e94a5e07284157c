//! `burrow proxy`: the listener, the connection front door and the CONNECT path.

use super::config::ProxyConfig;
use super::conn::{Conn, Next, Setup};
use super::forward;
use super::reload::{Live, ProxyHandle};
use crate::dial::Dialer;
use crate::dial::host_port;
use crate::exec::Spawner;
use crate::http::front::{self, REFUSAL_AT_ACCEPT, ReadError};
use crate::http::head::{RequestHead, Target, Version};
use crate::listen::{AcceptLoop, Drain, TurnAway};
use crate::shutdown::ShutdownSignal;
use crate::socks;
use crate::splice::{self, Outcome};
use futures_lite::FutureExt;
use futures_lite::io::{AsyncBufReadExt, BufReader};
use smol::net::{TcpListener, TcpStream};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Read buffer for request heads and forwarded request bodies; dropped once a CONNECT tunnel
/// starts. Small: CONNECT heads are a few hundred bytes, and a thousand connections arriving at
/// once should not leave a thousand 8 KiB holes in the heap.
const READ_BUF: usize = 2 * 1024;

/// A bound proxy, ready to [`run`](Proxy::run).
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    /// the configuration in force, swapped by [`ProxyHandle::reload`]
    live: Arc<Live>,
}

/// Counts a connection being served for as long as it lives.
struct Open(Arc<AtomicUsize>);

pin_project_lite::pin_project! {
    /// A connection's future with its [`Open`] count, dropped together.
    struct Counted<F> {
        #[pin]
        fut: F,
        _open: Open,
    }
}

impl<F: std::future::Future> std::future::Future for Counted<F> {
    type Output = F::Output;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.project().fut.poll(cx)
    }
}

impl Open {
    fn new(count: &Arc<AtomicUsize>) -> Open {
        count.fetch_add(1, Ordering::SeqCst);
        Open(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Proxy {
    /// Binds the listener.
    pub async fn bind(addr: SocketAddr, config: ProxyConfig) -> io::Result<Proxy> {
        Ok(Proxy {
            listener: TcpListener::bind(addr).await?,
            live: Live::new(config),
        })
    }

    /// A handle that applies a new configuration to this proxy while it runs.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            live: self.live.clone(),
        }
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` drains: then stops accepting, lets open connections finish
    /// within the drain timeout (or until abort), and cancels the rest. Each connection is
    /// served with the configuration in force when it arrived.
    pub async fn run(self, spawner: Spawner, shutdown: ShutdownSignal) {
        let Proxy { listener, live } = self;
        let ids = AtomicU64::new(1);
        let open = Arc::new(AtomicUsize::new(0));
        let accept_loop = AcceptLoop {
            what: "proxy",
            // The limit is `max_connections` in force, checked in `admit` (a reload changes
            // it); the loop's own would be fixed at start.
            limit: usize::MAX,
            // The drain timeout in force when the drain begins is applied below.
            drain: Drain::Owner,
        };
        let refuse = |stream, peer, id, n| {
            log::warn!("conn {id} {peer}: refused, {n} connections open (503)");
            let refusal =
                front::refuse(stream, 503, "too many connections", &[], REFUSAL_AT_ACCEPT);
            TurnAway::answer(refusal)
        };
        let admit = |stream, peer| {
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let now = live.current();
            let n = open.load(Ordering::SeqCst);
            if n >= now.config.max_connections {
                return Err(refuse(stream, peer, id, n));
            }
            let counted = Open::new(&open);
            let (config, dialer, sd) = (now.config.clone(), now.dialer.clone(), shutdown.clone());
            // The count rides beside the connection's future, not inside an async block that
            // would keep a second copy of its arguments for the connection's whole life.
            Ok(Counted {
                fut: serve_connection(stream, peer, id, config, dialer, sd),
                _open: counted,
            })
        };
        let over_limit =
            |stream, peer, n| refuse(stream, peer, ids.fetch_add(1, Ordering::Relaxed), n);
        let serve = accept_loop.run(listener, spawner, &shutdown, admit, over_limit);
        // Cancel-safety: when the deadline wins, the loop is dropped with its connections.
        serve.or(drain_deadline(&live, &open, &shutdown)).await;
    }
}

/// Once the drain begins: waits the drain timeout in force (or until abort), then logs what
/// is cut. Ends only then (the accept loop ends first when every connection finished).
async fn drain_deadline(live: &Live, open: &AtomicUsize, shutdown: &ShutdownSignal) {
    shutdown.draining().await;
    let timeout = live.current().config.drain_timeout;
    let n = open.load(Ordering::SeqCst);
    if n > 0 {
        log::info!("proxy draining {n} connections");
    }
    let late = async {
        smol::Timer::after(timeout).await;
    };
    late.or(shutdown.aborted()).await;
    let left = open.load(Ordering::SeqCst);
    if left > 0 {
        log::warn!("proxy drain ended: cancelled {left} connections");
    }
}

/// Serves one proxy client connection (CONNECT or absolute-form requests) until it ends,
/// reaching targets through `dialer`. Logs one line when it ends.
pub async fn serve_connection<D: Dialer>(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    config: Arc<ProxyConfig>,
    dialer: Arc<D>,
    shutdown: ShutdownSignal,
) {
    let conn = Conn {
        id,
        peer,
        config,
        dialer,
        shutdown,
        up: 0,
        down: 0,
        socks: false,
    };
    conn.serve(stream).await
}

/// The first byte the client sends, left in `reader`. No HTTP method starts with 0x05, the
/// SOCKS5 version byte.
async fn first_byte(reader: &mut BufReader<TcpStream>, timeout: Duration) -> Result<u8, ReadError> {
    let peek = async {
        match reader.fill_buf().await {
            Ok([first, ..]) => Ok(*first),
            Ok([]) => Err(ReadError::Closed),
            Err(e) => Err(ReadError::Io(e)),
        }
    };
    crate::time::with_timeout(timeout, peek, || ReadError::Timeout { partial: false }).await
}

impl<D: Dialer> Conn<D> {
    async fn serve(mut self, stream: TcpStream) {
        let start = Instant::now();
        let mut target = String::from("-");
        // Boxed: everything the head, the dial and the forwarder need is freed once a tunnel
        // runs, so an idle tunnel's task holds only the relay's small state.
        let setup = Box::pin(self.setup(&stream, &mut target)).await;
        let outcome = match setup {
            Setup::Done(outcome) => outcome,
            Setup::Tunnel(upstream) => self.tunnel(&stream, upstream).await,
        };
        log::info!(
            "conn {} {} -> {} up={} down={} {:.3}s {}{}",
            self.id,
            self.peer,
            target,
            self.up,
            self.down,
            start.elapsed().as_secs_f64(),
            if self.socks { "socks5 " } else { "" },
            outcome
        );
    }

    /// Tells SOCKS5 from HTTP by the first byte (peeked: no byte is lost), then reads the
    /// first head (or the SOCKS5 handshake) and serves requests until the connection is done
    /// or has become a tunnel. One `head_timeout` covers the first byte and the head.
    async fn setup(&mut self, stream: &TcpStream, target: &mut String) -> Setup<D::Stream> {
        let start = Instant::now();
        let mut reader = BufReader::with_capacity(READ_BUF, stream.clone());
        let first = match first_byte(&mut reader, self.config.head_timeout).await {
            Ok(b) => b,
            Err(e) => return Setup::Done(self.head_error(stream, e).await),
        };
        let left = self.config.head_timeout.saturating_sub(start.elapsed());
        if first == socks::wire::VERSION {
            self.socks = true;
            return self.socks(stream, reader, target, left).await;
        }
        match front::read_request(&mut reader, left).await {
            Ok(head) => self.dispatch(head, stream, reader, target).await,
            Err(e) => Setup::Done(self.head_error(stream, e).await),
        }
    }

    async fn dispatch(
        &mut self,
        mut head: RequestHead,
        stream: &TcpStream,
        mut reader: BufReader<TcpStream>,
        target: &mut String,
    ) -> Setup<D::Stream> {
        let mut origin: Option<forward::Origin<D::Stream>> = None;
        let outcome = loop {
            let next = match head.target.clone() {
                Target::Authority { host, port } if head.method == "CONNECT" => {
                    *target = host_port(&host, port);
                    if let Some(o) = origin.take() {
                        o.close().await;
                    }
                    return self.connect(&head, &host, port, stream, reader).await;
                }
                Target::Absolute { host, port, .. } => {
                    *target = host_port(&host, port);
                    let forwarded = forward::forward(self, head, stream, &mut reader, &mut origin);
                    Box::pin(forwarded).await
                }
                _ => {
                    let why = "not a proxy request (expected CONNECT or an absolute URL)";
                    break self.reply(stream, 400, why, &[]).await;
                }
            };
            match next {
                Next::Close(outcome) => break outcome,
                Next::Request(h) => head = h,
            }
        };
        if let Some(o) = origin {
            o.close().await;
        }
        Setup::Done(outcome)
    }

    /// Dials the CONNECT target and writes the handshake: the `200`, then the bytes that came
    /// early from either side (a TLS ClientHello behind the head, an SSH banner behind an
    /// upstream's `200`), which are never dropped.
    async fn connect(
        &mut self,
        head: &RequestHead,
        host: &str,
        port: u16,
        stream: &TcpStream,
        reader: BufReader<TcpStream>,
    ) -> Setup<D::Stream> {
        if let Err(outcome) = self.authorize(stream, head).await {
            return Setup::Done(outcome);
        }
        let (upstream, early) = match self.dialer.dial(host, port).await {
            Ok(pair) => pair,
            Err(e) => {
                let status = e.refusal().http_status();
                log::warn!(
                    "conn {} {}: CONNECT {}: {e} ({status})",
                    self.id,
                    self.peer,
                    host_port(host, port)
                );
                return Setup::Done(self.reply(stream, status, &e.to_string(), &[]).await);
            }
        };
        let ok: &[u8] = match head.version {
            Version::Http10 => b"HTTP/1.0 200 Connection established\r\n\r\n",
            Version::Http11 => b"HTTP/1.1 200 Connection established\r\n\r\n",
        };
        self.established(stream, reader, upstream, ok, early).await
    }

    /// Relays an established tunnel until both directions end, idle, or an error.
    /// Two plain TCP sockets (a direct dial or a chain) move bytes in the kernel with
    /// splice(2); any other stream (a tunnel's mux stream) is copied.
    async fn tunnel(&mut self, stream: &TcpStream, upstream: D::Stream) -> String {
        let idle = Some(self.config.idle_timeout);
        let report = match D::tcp(&upstream) {
            Some(up) => splice::splice_tcp(stream, up, idle).await,
            // Boxed: four socket handles (each with its readiness futures) would otherwise
            // make every connection's task larger, the zero-copy ones included.
            None => {
                Box::pin(async move {
                    let (mut cr, mut cw) = (stream.clone(), stream.clone());
                    let (mut ur, mut uw) = (upstream.clone(), upstream);
                    splice::splice(&mut cr, &mut cw, &mut ur, &mut uw, idle).await
                })
                .await
            }
        };
        log::debug!(
            "conn {} {}: tunnel zero-copy={}",
            self.id,
            self.peer,
            report.zero_copy
        );
        self.up += report.a_to_b;
        self.down += report.b_to_a;
        match report.outcome {
            Outcome::Error(e) if !splice::is_hangup(&e) => format!("error: {e}"),
            Outcome::Error(e) => format!("closed ({e})"),
            o => o.as_str().to_string(),
        }
    }
}
