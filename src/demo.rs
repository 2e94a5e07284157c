//! Pieces of `burrow demo` that tests reuse: a tiny origin HTTP server.

use crate::client::{Client, ClientConfig, Event};
use crate::dial::chain::{Hop, HopKind, Upstream};
use crate::exec::{Spawner, TaskSet};
use crate::http::auth::Credentials;
use crate::http::front;
use crate::http::head::Target;
use crate::proxy::{Proxy, ProxyConfig};
use crate::relay::{Relay, RelayConfig};
use crate::secret::Secret;
use futures_lite::io::{AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// A minimal keep-alive HTTP/1.1 origin: `GET /bytes/N` answers N bytes, every other request
/// answers `hello from burrow\n` plus the method and path it saw.
#[derive(Debug)]
pub struct Origin {
    listener: TcpListener,
}

impl Origin {
    /// Binds on `addr` (use port 0 for an ephemeral port).
    pub async fn bind(addr: SocketAddr) -> io::Result<Origin> {
        Ok(Origin {
            listener: TcpListener::bind(addr).await?,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until dropped (connections are tasks of a set owned by this future).
    pub async fn run(self, spawner: Spawner) {
        let tasks = TaskSet::new(spawner);
        while let Ok((s, _)) = self.listener.accept().await {
            tasks.spawn(async move {
                if let Err(e) = serve(s).await {
                    log::debug!("origin connection: {e}");
                }
            });
        }
    }
}

async fn serve(s: TcpStream) -> io::Result<()> {
    let mut r = BufReader::new(s.clone());
    let mut w = s;
    loop {
        let head = match front::read_request(&mut r, Duration::from_secs(30)).await {
            Ok(h) => h,
            Err(_) => return Ok(()),
        };
        // Request bodies are drained so keep-alive stays in step.
        if let Ok(framing) = crate::http::body::request_framing(&head) {
            crate::http::body::copy_body(&mut r, &mut futures_lite::io::sink(), framing)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        let path = match &head.target {
            Target::Origin(p) => p.clone(),
            Target::Absolute { path, .. } => path.clone(),
            _ => "*".into(),
        };
        let body: Vec<u8> = match path
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => vec![b'x'; n.min(1 << 30)],
            None => format!("hello from burrow\n{} {}\n", head.method, path).into_bytes(),
        };
        let close = head.headers.contains_token("connection", "close");
        let head_out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        w.write_all(head_out.as_bytes()).await?;
        if head.method != "HEAD" {
            w.write_all(&body).await?;
        }
        w.flush().await?;
        if close {
            return Ok(());
        }
    }
}

/// `burrow demo`: both tunnel designs on loopback in one process. An origin; a CONNECT proxy
/// with auth and a second proxy chained through it; a relay, and a tunnel client that exposes
/// the origin on the relay (`-R`), offers the relay a proxy into "its" network (`-R …:proxy`)
/// and a local proxy whose egress is the relay (`-L …:proxy`). Prints what to try; returns
/// after `shutdown` drained everything.
pub async fn run(spawner: Spawner, shutdown: crate::shutdown::Shutdown) -> io::Result<()> {
    let lo = SocketAddr::from(([127, 0, 0, 1], 0));
    let origin = Origin::bind(lo).await?;
    let o = origin.local_addr()?;
    let tasks = TaskSet::new(spawner.clone());
    tasks.spawn(origin.run(spawner.clone()));
    let (first, second) = proxies(lo).await?;
    let (relay, client, token) = tunnel(lo, o).await?;
    let addrs = Addrs {
        origin: o,
        proxy: first.local_addr()?,
        chained: second.local_addr()?,
        relay: relay.local_addr()?,
        local_proxy: client.local_addrs()[0],
    };
    let events = client.events();
    let signal = shutdown.signal();
    let announce = async {
        let (exposed, egress) = bound_ports(&events).await?;
        print_guide(&addrs, exposed, egress, &token);
        // Later state changes are few (reconnects); the run below decides when we are done.
        std::future::pending::<io::Result<()>>().await
    };
    let everything = async {
        let ((_, _), (_, client_result)) = futures_lite::future::zip(
            futures_lite::future::zip(
                first.run(spawner.clone(), signal.clone()),
                second.run(spawner.clone(), signal.clone()),
            ),
            futures_lite::future::zip(
                relay.run(spawner.clone(), signal.clone()),
                client.run(spawner.clone(), signal.clone()),
            ),
        )
        .await;
        client_result.map_err(|e| other(&e))
    };
    use futures_lite::FutureExt;
    async { announce.await.and(Ok(None)) }
        .or(async { everything.await.map(Some) })
        .await?;
    drop(tasks);
    Ok(())
}

/// Where the demo's parts listen.
struct Addrs {
    origin: SocketAddr,
    proxy: SocketAddr,
    chained: SocketAddr,
    relay: SocketAddr,
    local_proxy: SocketAddr,
}

fn other(e: &dyn std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Design 1: a proxy with Basic auth, and a second one chained through it.
async fn proxies(lo: SocketAddr) -> io::Result<(Proxy, Proxy)> {
    let creds: Credentials = "demo:burrow".parse().map_err(|e| other(&e))?;
    let first = Proxy::bind(
        lo,
        ProxyConfig {
            auth: Some(creds.clone()),
            ..ProxyConfig::default()
        },
    )
    .await?;
    let p1 = first.local_addr()?;
    let hop = Hop {
        kind: HopKind::Http,
        host: p1.ip().to_string(),
        port: p1.port(),
        auth: Some(creds),
    };
    let chained = ProxyConfig {
        upstream: Upstream {
            hops: vec![hop],
            no_proxy: Vec::new(),
        },
        ..ProxyConfig::default()
    };
    Ok((first, Proxy::bind(lo, chained).await?))
}

/// Design 2: a relay, and a client that exposes the origin (`-R`), offers a proxy into its
/// network (`-R …:proxy`) and a local proxy whose egress is the relay (`-L …:proxy`). The
/// token comes back so that /metrics can be tried: it is the demo's own loopback relay.
async fn tunnel(lo: SocketAddr, origin: SocketAddr) -> io::Result<(Relay, Client, Secret)> {
    let token = Secret::new(crate::tunnel::ws::random_id());
    let relay = Relay::bind(
        lo,
        RelayConfig {
            token: Some(token.clone()),
            ..RelayConfig::default()
        },
    )
    .await?;
    let r = relay.local_addr()?;
    fn parse<T: std::str::FromStr<Err = String>>(s: &str) -> io::Result<T> {
        s.parse().map_err(|e: String| other(&e))
    }
    let mut cfg = ClientConfig::new(parse(&format!("ws://{r}/burrow"))?);
    cfg.token = Some(token.clone());
    cfg.remotes = vec![
        parse(&format!("127.0.0.1:0:{origin}"))?,
        parse("127.0.0.1:0:proxy")?,
    ];
    cfg.locals = vec![parse("127.0.0.1:0:proxy")?];
    let client = Client::bind(cfg).await.map_err(|e| other(&e))?;
    Ok((relay, client, token))
}

/// Waits for the client's two `-R` ports: the exposed origin, then the proxy.
async fn bound_ports(events: &smol::channel::Receiver<Event>) -> io::Result<(String, String)> {
    let mut bound = Vec::new();
    while bound.len() < 2 {
        match events.recv().await {
            Ok(Event::Bound { addr, .. }) => bound.push(addr),
            Ok(Event::BindRefused { reason, .. }) => return Err(other(&reason)),
            Ok(_) => {}
            Err(e) => return Err(other(&e)),
        }
    }
    let egress = bound.pop().unwrap_or_default();
    let exposed = bound.pop().unwrap_or_default();
    Ok((exposed, egress))
}

fn print_guide(a: &Addrs, exposed: String, egress: String, token: &Secret) {
    let Addrs {
        origin: o,
        proxy: p1,
        chained: p2,
        relay: r,
        local_proxy,
    } = a;
    println!(
        "burrow demo on loopback (Ctrl-C drains and exits):

  origin            http://{o}/   (a small web app)

design 1, HTTP CONNECT:
  proxy             http://{p1}   (Basic auth demo:burrow)
  chained proxy     http://{p2}   (no auth; goes through the proxy above)
  curl -x http://demo:burrow@{p1} http://{o}/
  curl -p -x http://{p2} http://{o}/bytes/5
  curl -x http://{p1} http://{o}/            # 407: no credentials

design 2, WebSocket tunnel (relay ws://{r}/burrow, one client session):
  -R exposes the origin on the relay:      curl http://{exposed}/hello
  -R …:proxy, egress in the client's net:  curl -x http://{egress} http://{o}/from-the-client
  -L …:proxy, egress at the relay:         curl -p -x http://{local_proxy} http://{o}/from-the-relay
  relay health (public):                   curl http://{r}/healthz
  relay metrics (behind the relay token):  curl -H 'Authorization: Bearer {t}' http://{r}/metrics
",
        t = token.expose()
    );
}
