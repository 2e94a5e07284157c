//! Pieces of `burrow demo` that tests reuse: a tiny origin HTTP server.

use crate::exec::{Spawner, TaskSet};
use crate::http::front;
use crate::http::head::Target;
use futures_lite::io::{AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// A minimal keep-alive HTTP/1.1 origin: `GET /bytes/N` answers N bytes, every other request
/// answers `hello from burrow\n` plus the method and path it saw.
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

/// `burrow demo`: an origin, a proxy with auth, and a second proxy chained through the first,
/// all on loopback. Prints what to try; returns after `shutdown` drains both proxies.
pub async fn run(spawner: Spawner, shutdown: crate::shutdown::Shutdown) -> io::Result<()> {
    use crate::proxy::chain::{Hop, Upstream};
    use crate::proxy::{Proxy, ProxyConfig};
    let lo = SocketAddr::from(([127, 0, 0, 1], 0));
    let origin = Origin::bind(lo).await?;
    let o = origin.local_addr()?;
    let tasks = TaskSet::new(spawner.clone());
    tasks.spawn(origin.run(spawner.clone()));
    let creds: crate::proxy::auth::Credentials = "demo:burrow"
        .parse()
        .map_err(|e| io::Error::other(format!("{e}")))?;
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
    let second = Proxy::bind(lo, chained).await?;
    let p2 = second.local_addr()?;
    println!(
        "burrow demo on loopback (Ctrl-C drains and exits):
  origin           http://{o}/
  proxy            http://{p1}   (Basic auth demo:burrow)
  chained proxy    http://{p2}   (no auth; goes through the proxy above)

try:
  curl -x http://demo:burrow@{p1} http://{o}/
  curl -p -x http://demo:burrow@{p1} http://{o}/bytes/5
  curl -x http://{p1} http://{o}/             # 407: no credentials
  curl -p -x http://{p2} http://{o}/          # CONNECT through a 2-hop chain
  nc -X connect -x {p2} {ip} {port}
",
        ip = o.ip(),
        port = o.port()
    );
    let signal = shutdown.signal();
    futures_lite::future::zip(
        first.run(spawner.clone(), signal.clone()),
        second.run(spawner, signal),
    )
    .await;
    drop(tasks);
    Ok(())
}
