//! The headline scenario on loopback: a "cloud browser" (our own HTTP client) uses a proxy on
//! the relay whose egress is the client's private network. The client reaches the relay over
//! TLS through a corporate CONNECT proxy. Covers what `just e2e-browser` checks with Chromium in
//! network namespaces, so that every `cargo test` exercises it.
#![cfg(feature = "tls")]

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::dial::chain::{Hop, HopKind, Upstream};
use burrow::proxy::ProxyConfig;
use burrow::relay::RelayConfig;
use burrow::tls::{ClientTls, ClientTlsOptions, ServerTls};
use common::certs::{Ca, TempDir};
use common::tunnel::*;
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::TcpListener;
use std::net::SocketAddr;
use std::sync::Arc;

/// An HTTPS app: answers every request with a fixed page.
async fn start_https_app(tls: Arc<ServerTls>) -> (SocketAddr, smol::Task<()>) {
    let l = TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = smol::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            let tls = tls.clone();
            conns.push(smol::spawn(async move {
                let Ok(s) = tls.accept(s).await else { return };
                let s = async_dup::Arc::new(async_dup::Mutex::new(s));
                let mut r = BufReader::new(s.clone());
                if burrow::http::front::read_request(&mut r, std::time::Duration::from_secs(5))
                    .await
                    .is_err()
                {
                    return;
                }
                let body = "secure private app\n";
                let mut w = s;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = w.write_all(resp.as_bytes()).await;
                let _ = w.close().await;
            }));
        }
    });
    (addr, task)
}

struct World {
    relay: RunningRelay,
    _corp: RunningProxy,
    cut: Forwarder,
    client: RunningClient,
    proxy_port: SocketAddr,
    http_app: SocketAddr,
    https_app: SocketAddr,
    ca: std::path::PathBuf,
    _dir: TempDir,
    _tasks: Vec<smol::Task<()>>,
}

const VISITOR: &str = "browser:s3cret";

async fn world(sp: &burrow::exec::Spawner) -> World {
    let dir = TempDir::new("scenario");
    let ca = Ca::new("scenario CA");
    let ca_file = ca.write(&dir, "ca");
    let (relay_cert, relay_key) = ca.write_leaf(&dir, "relay", &["localhost"], false);
    let (app_cert, app_key) = ca.write_leaf(&dir, "app", &["localhost"], false);
    let (http_app, t1) = start_origin(sp).await;
    let (https_app, t2) =
        start_https_app(Arc::new(ServerTls::load(&app_cert, &app_key).unwrap())).await;
    // The public relay, with TLS, behind a line we can cut.
    let tls = Arc::new(ServerTls::load(&relay_cert, &relay_key).unwrap());
    let relay = start_relay(
        sp,
        RelayConfig {
            tls: Some(tls),
            ..RelayConfig::default()
        },
    )
    .await;
    let cut = Forwarder::start(relay.addr).await;
    // The corporate proxy: the private network's only way out, with credentials.
    let corp = start_proxy(
        sp,
        ProxyConfig {
            auth: Some("corp:pw".parse().unwrap()),
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut cfg = ClientConfig::new(
        format!("wss://localhost:{}/burrow", cut.addr.port())
            .parse()
            .unwrap(),
    );
    cfg.via = Upstream {
        hops: vec![Hop {
            kind: HopKind::Http,
            host: "127.0.0.1".into(),
            port: corp.addr.port(),
            auth: Some("corp:pw".parse().unwrap()),
        }],
        no_proxy: vec![],
    };
    cfg.tls = ClientTlsOptions {
        ca: Some(ca_file.clone()),
        insecure: false,
    };
    cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
    cfg.proxy_auth = Some(VISITOR.parse().unwrap());
    // A drain deadline no download here can reach: the test's own deadline governs, so how
    // fast this machine moves bytes through TLS, a proxy and the mux cannot cut a transfer.
    cfg.drain_timeout = std::time::Duration::from_secs(600);
    cfg.rules.deny = vec![
        "forbidden.example".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    let client = start_client(sp, cfg).await;
    let proxy_port = client.bound().await;
    World {
        relay,
        _corp: corp,
        cut,
        client,
        proxy_port,
        http_app,
        https_app,
        ca: ca_file,
        _dir: dir,
        _tasks: vec![t1, t2],
    }
}

/// The "browser": GET http://… through the relay's proxy port.
async fn browse_http(w: &World, path: &str, creds: &str) -> (u16, String) {
    let req = format!(
        "GET http://localhost:{}{path} HTTP/1.1\r\nHost: localhost\r\n{}Connection: close\r\n\r\n",
        w.http_app.port(),
        basic(creds)
    );
    let (head, mut r) = send_raw(w.proxy_port, req.as_bytes()).await;
    (
        head.status,
        String::from_utf8_lossy(&read_all(&mut r).await).into_owned(),
    )
}

/// The "browser": CONNECT, then TLS (verifying the app's certificate), then GET.
async fn browse_https(w: &World) -> String {
    let target = format!("localhost:{}", w.https_app.port());
    let req = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{}\r\n",
        basic(VISITOR)
    );
    let (head, r) = send_raw(w.proxy_port, req.as_bytes()).await;
    assert_eq!(head.status, 200);
    let tls = ClientTls::new(&ClientTlsOptions {
        ca: Some(w.ca.clone()),
        insecure: false,
    })
    .unwrap();
    let Ok(mut s) = tls.connect("localhost", r.into_inner()).await else {
        panic!("TLS to the private app failed")
    };
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    within(10, "https page", s.read_to_string(&mut out))
        .await
        .unwrap();
    out
}

#[test]
fn cloud_browser_reaches_private_apps_through_the_relay() {
    run(|sp| async move {
        let w = world(&sp).await;
        // 2. Both private pages load through the relay's proxy port.
        let (status, page) = browse_http(&w, "/private", VISITOR).await;
        assert_eq!(status, 200);
        assert!(page.contains("GET /private"), "{page}");
        assert!(browse_https(&w).await.contains("secure private app"));
        // 3. A host the client's rules deny is 403; wrong visitor credentials are 407.
        let (head, _) = send_raw(
            w.proxy_port,
            format!(
                "CONNECT forbidden.example:443 HTTP/1.1\r\n{}\r\n",
                basic(VISITOR)
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(head.status, 403);
        let (status, _) = browse_http(&w, "/x", "browser:wrong").await;
        assert_eq!(status, 407);
        // 4. The relay's side of the WebSocket dies: the client comes back through the
        //    corporate proxy and resumes the session (its relay port never went away), and
        //    the page loads again.
        w.cut.cut();
        w.client
            .wait("lost", |e| matches!(e, Event::Suspended { .. }))
            .await;
        w.client
            .wait("resumed", |e| matches!(e, Event::Resumed { .. }))
            .await;
        assert!(
            browse_http(&w, "/again", VISITOR)
                .await
                .1
                .contains("GET /again")
        );
        assert!(browse_https(&w).await.contains("secure private app"));
        assert!(
            w.relay
                .metrics
                .reconnects
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
    });
}

#[test]
fn client_shutdown_lets_a_large_download_finish() {
    run(|sp| async move {
        // Well past every window and buffer on the way (4 MiB windows), so the drain has real
        // work in flight; small enough for a debug build on a busy 2-core machine.
        const SIZE: usize = 16 << 20;
        let w = world(&sp).await;
        let req = format!(
            "GET http://localhost:{}/bytes/{SIZE} HTTP/1.1\r\nHost: localhost\r\n{}Connection: close\r\n\r\n",
            w.http_app.port(),
            basic(VISITOR)
        );
        let (head, mut r) = send_raw(w.proxy_port, req.as_bytes()).await;
        assert_eq!(head.status, 200);
        let mut first = vec![0u8; 64 * 1024];
        r.read_exact(&mut first).await.unwrap();
        // 5. SIGTERM (the same path, through the handle) while the download is in flight.
        w.client.shutdown.drain();
        let mut rest = Vec::new();
        within(30, "rest of the download", r.read_to_end(&mut rest))
            .await
            .unwrap();
        assert_eq!(first.len() + rest.len(), SIZE, "the download completed");
        assert!(first.iter().chain(&rest).all(|&b| b == b'x'), "and intact");
        drop(r);
        within(15, "client exits", w.client.task)
            .await
            .expect("exit 0");
    });
}
