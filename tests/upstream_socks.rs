//! SOCKS5 upstream hops: `burrow proxy --upstream socks5://…`, chains mixing HTTP and SOCKS5
//! hops, `burrow connect --via socks5://…` and a tunnel client whose `--via` is a SOCKS5 proxy.
//! The SOCKS5 server here is a small complete one (RFC 1928 CONNECT, RFC 1929 auth) that
//! records what it was asked; OpenSSH's is used by tests/interop/socks_upstream.sh.

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::dial::chain::Upstream;
use burrow::proxy::ProxyConfig;
use burrow::relay::RelayConfig;
use burrow::socks::Addr;
use common::tunnel::{start_client, start_relay};
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::channel::{Receiver, Sender};
use smol::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::time::Duration;

/// A SOCKS5 server on loopback. Every CONNECT it was asked for is sent on `asked`.
struct Socks {
    addr: SocketAddr,
    asked: Receiver<Addr>,
    _task: smol::Task<()>,
}

/// How the fixture behaves.
#[derive(Clone, Copy)]
enum Mode {
    /// CONNECT for real; with credentials when `Some`.
    Serve(Option<(&'static str, &'static str)>),
    /// Answer the greeting, then never answer the request.
    Silent,
}

async fn start_socks(mode: Mode) -> Socks {
    let l = TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, asked) = smol::channel::unbounded();
    let task = smol::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            conns.push(smol::spawn(serve(s, mode, tx.clone())));
        }
    });
    Socks {
        addr,
        asked,
        _task: task,
    }
}

/// One client of the fixture; errors end the connection (the test sees the client's side).
async fn serve(mut s: TcpStream, mode: Mode, asked: Sender<Addr>) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    let mut methods = vec![0u8; head[1] as usize];
    s.read_exact(&mut methods).await?;
    let creds = match mode {
        Mode::Serve(c) => c,
        Mode::Silent => None,
    };
    let want = if creds.is_some() { 2 } else { 0 };
    if head[0] != 5 || !methods.contains(&want) {
        return s.write_all(&[5, 0xFF]).await;
    }
    s.write_all(&[5, want]).await?;
    if let Some((user, pass)) = creds {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await?;
        let mut u = vec![0u8; b[1] as usize];
        s.read_exact(&mut u).await?;
        s.read_exact(&mut b[..1]).await?;
        let mut p = vec![0u8; b[0] as usize];
        s.read_exact(&mut p).await?;
        let ok = u == user.as_bytes() && p == pass.as_bytes();
        s.write_all(&[1, if ok { 0 } else { 1 }]).await?;
        if !ok {
            return Ok(());
        }
    }
    let mut req = [0u8; 4];
    s.read_exact(&mut req).await?;
    let mut raw = vec![req[3]];
    let len = match req[3] {
        1 => 6,
        4 => 18,
        _ => {
            let mut n = [0u8; 1];
            s.read_exact(&mut n).await?;
            raw.push(n[0]);
            n[0] as usize + 2
        }
    };
    let at = raw.len();
    raw.resize(at + len, 0);
    s.read_exact(&mut raw[at..]).await?;
    let (target, _) = Addr::decode(&raw).expect("the client sends a valid address");
    asked.send(target.clone()).await.ok();
    if matches!(mode, Mode::Silent) {
        // Never answer; the client's timeout must end this.
        let mut sink = Vec::new();
        return s.read_to_end(&mut sink).await.map(drop);
    }
    let (host, port) = target.host_port();
    let up = match TcpStream::connect((host.as_str(), port)).await {
        Ok(up) => up,
        Err(_) => return s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await,
    };
    s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await?;
    let (a, b) = (s.clone(), up.clone());
    let one = smol::spawn(async move {
        let mut up = up;
        futures_lite::io::copy(a, &mut up).await.ok();
        up.shutdown(std::net::Shutdown::Write).ok();
    });
    futures_lite::io::copy(b, &mut s).await.ok();
    s.shutdown(std::net::Shutdown::Write).ok();
    one.await;
    Ok(())
}

fn upstream(urls: &[String]) -> Upstream {
    Upstream::from_args(urls).unwrap()
}

async fn proxy_through(sp: &burrow::exec::Spawner, urls: &[String]) -> RunningProxy {
    let cfg = ProxyConfig {
        upstream: upstream(urls),
        ..ProxyConfig::default()
    };
    start_proxy(sp, cfg).await
}

/// CONNECTs to `target` (a `host:port` text) through `proxy`, checks the echo both ways.
async fn echo_through(proxy: SocketAddr, target: &str) {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let (head, mut r) = send_raw(proxy, req.as_bytes()).await;
    assert_eq!(head.status, 200, "{}", head.reason);
    r.get_mut().write_all(b"through socks").await.unwrap();
    r.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut r).await, b"through socks");
}

async fn status_through(proxy: SocketAddr, target: &str) -> u16 {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    send_raw(proxy, req.as_bytes()).await.0.status
}

async fn next_ask(s: &Socks) -> Addr {
    within(10, "the SOCKS server was asked", s.asked.recv())
        .await
        .unwrap()
}

#[test]
fn proxy_upstream_socks5_passes_names_unresolved() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let socks = start_socks(Mode::Serve(None)).await;
        let proxy = proxy_through(&sp, &[format!("socks5://{}", socks.addr)]).await;
        echo_through(proxy.addr, &format!("localhost:{}", echo.port())).await;
        assert_eq!(
            next_ask(&socks).await,
            Addr::Domain("localhost".into(), echo.port()),
            "the name goes to the hop (ATYP 3), not resolved here"
        );
        echo_through(proxy.addr, &echo.to_string()).await;
        assert_eq!(next_ask(&socks).await, Addr::Ip(echo));
    });
}

#[test]
fn socks5_credentials_are_sent_and_failures_answered() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let socks = start_socks(Mode::Serve(Some(("alice", "s3cret")))).await;
        let good = proxy_through(&sp, &[format!("socks5h://alice:s3cret@{}", socks.addr)]).await;
        echo_through(good.addr, &echo.to_string()).await;
        let wrong = proxy_through(&sp, &[format!("socks5://alice:nope@{}", socks.addr)]).await;
        assert_eq!(status_through(wrong.addr, &echo.to_string()).await, 502);
        let none = proxy_through(&sp, &[format!("socks5://{}", socks.addr)]).await;
        assert_eq!(status_through(none.addr, &echo.to_string()).await, 502);
    });
}

#[test]
fn socks5_refusal_and_silence_map_to_statuses() {
    run(|sp| async move {
        let socks = start_socks(Mode::Serve(None)).await;
        let proxy = proxy_through(&sp, &[format!("socks5://{}", socks.addr)]).await;
        // The hop answers 0x05 (connection refused): 502, as a refused direct dial.
        assert_eq!(
            status_through(proxy.addr, &closed_port().to_string()).await,
            502
        );

        let silent = start_socks(Mode::Silent).await;
        let cfg = ProxyConfig {
            upstream: upstream(&[format!("socks5://{}", silent.addr)]),
            connect_timeout: Duration::from_millis(500),
            ..ProxyConfig::default()
        };
        let proxy = start_proxy(&sp, cfg).await;
        assert_eq!(status_through(proxy.addr, "example.invalid:443").await, 504);
    });
}

#[test]
fn mixed_chains_http_then_socks5_and_socks5_then_http() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let socks = start_socks(Mode::Serve(None)).await;
        let http = start_proxy(&sp, ProxyConfig::default()).await;

        let chain = [
            format!("http://{}", http.addr),
            format!("socks5://{}", socks.addr),
        ];
        let proxy = proxy_through(&sp, &chain).await;
        echo_through(proxy.addr, &format!("localhost:{}", echo.port())).await;
        assert_eq!(
            next_ask(&socks).await,
            Addr::Domain("localhost".into(), echo.port())
        );

        // SOCKS5 first: it is asked for the HTTP hop, which is asked for the target.
        let chain = [
            format!("socks5://{}", socks.addr),
            format!("http://{}", http.addr),
        ];
        let proxy = proxy_through(&sp, &chain).await;
        echo_through(proxy.addr, &echo.to_string()).await;
        assert_eq!(next_ask(&socks).await, Addr::Ip(http.addr));
    });
}

#[test]
fn tunnel_client_reaches_the_relay_via_socks5() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let socks = start_socks(Mode::Serve(Some(("u", "p")))).await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.via = upstream(&[format!("socks5://u:p@{}", socks.addr)]);
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let client = start_client(&sp, cfg).await;
        client.wait("connected", |e| *e == Event::Connected).await;
        assert_eq!(next_ask(&socks).await, Addr::Ip(relay.addr));

        let mut s = TcpStream::connect(client.locals[0]).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        within(10, "echo through the tunnel", s.read_exact(&mut got))
            .await
            .unwrap();
        assert_eq!(&got, b"ping");
    });
}

#[test]
fn burrow_connect_via_socks5_binary() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let echo = proc::echo_server();
    let (socks_addr, asked) = {
        // The fixture runs on a thread of its own: the binary is driven synchronously here.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            smol::block_on(async {
                let socks = start_socks(Mode::Serve(None)).await;
                tx.send((socks.addr, socks.asked.clone())).unwrap();
                // Serve until the test process ends.
                std::future::pending::<()>().await;
                drop(socks);
            })
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    };
    let mut child = Command::new(proc::BIN)
        .args(["connect", "--via", &format!("socks5://{socks_addr}")])
        .arg(format!("localhost:{}", echo.port()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"via socks5").unwrap();
    drop(stdin);
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).ok();
        tx.send(out).ok();
    });
    let out = rx.recv_timeout(Duration::from_secs(20));
    if out.is_err() {
        // Hung: end it so that wait() returns and the assertion below reports it.
        child.kill().ok();
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).ok();
    assert_eq!(out.as_deref(), Ok(&b"via socks5"[..]), "stderr: {err}");
    assert!(status.success(), "{status}: {err}");
    assert_eq!(
        asked.try_recv().unwrap(),
        Addr::Domain("localhost".into(), echo.port())
    );
}
