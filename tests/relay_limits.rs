//! The relay's front door and relay-wide limits: BIND credentials that do not parse,
//! `/metrics` behind the token or on `--admin`, the connection cap and its pre-upgrade share,
//! one bounded answer per surface request, and the session, stream and dial limits.

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::refusal::Refusal;
use burrow::relay::limits::RelayLimits;
use burrow::relay::{Relay, RelayConfig};
use burrow::secret::Secret;
use burrow::shutdown::Shutdown;
use burrow::tunnel::frame::ProxyAuth;
use burrow::tunnel::ws::{HandshakeError, client_handshake};
use burrow::tunnel::{BindMode, Frame, Session};
use common::run_binary;
use common::tunnel::{eventually, raw_session, start_client, start_relay};
use common::{lo, run, send_raw, start_echo, within};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn limits(f: impl FnOnce(&mut RelayLimits)) -> RelayConfig {
    let mut cfg = RelayConfig::default();
    f(&mut cfg.limits);
    cfg
}

/// `GET path` with extra header lines; the whole answer up to the relay's close.
async fn get(addr: SocketAddr, path: &str, extra: &str) -> String {
    let mut s = within(10, "connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // No `Connection: close` asked for: the relay closes after one answer by itself.
    within(10, "answer and close", s.read_to_end(&mut out))
        .await
        .unwrap();
    String::from_utf8(out).unwrap()
}

async fn bind_answer(session: &Session, mode: BindMode) -> Frame {
    session.send_session_frame(Frame::Bind {
        bind_id: 7,
        addr: "127.0.0.1".into(),
        port: 0,
        mode,
        pool: None,
    });
    within(10, "bind answer", session.session_frame())
        .await
        .expect("session open")
}

#[test]
fn a_bind_whose_proxy_credentials_do_not_parse_is_refused() {
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (session, _driver) = raw_session(relay.addr, "bad-auth").await;
        let auth = "no-colon-here".to_string();
        let mode = BindMode::Proxy {
            auth: ProxyAuth::from_text(auth.clone()).unwrap(),
        };
        match bind_answer(&session, mode).await {
            Frame::BindRefused { bind_id, reason } => {
                assert_eq!(bind_id, 7);
                assert!(reason.contains("bad proxy credentials"), "{reason}");
                assert!(!reason.contains(&auth), "the reason leaks the credentials");
            }
            other => panic!("an open proxy was bound: {other:?}"),
        }
        assert_eq!(relay.metrics.refusals(Refusal::BadRequest), 1);
        // Good credentials still bind.
        let good = BindMode::Proxy {
            auth: ProxyAuth::from_text("user:pass".into()).unwrap(),
        };
        assert!(matches!(
            bind_answer(&session, good).await,
            Frame::Bound { .. }
        ));
    });
}

#[test]
fn metrics_need_the_token_on_the_public_port_and_not_on_admin() {
    run(|sp| async move {
        let cfg = RelayConfig {
            token: Some(Secret::new("s3cret-token")),
            admin: Some(lo()),
            ..RelayConfig::default()
        };
        let relay = Relay::bind(lo(), cfg).await.unwrap();
        let (public, admin) = (relay.local_addr().unwrap(), relay.admin_addr().unwrap());
        let metrics = relay.metrics();
        let sd = Shutdown::new();
        let _task = smol::spawn(relay.run(sp.clone(), sd.signal()));

        let none = get(public, "/metrics", "").await;
        assert!(none.starts_with("HTTP/1.1 401"), "{none}");
        assert!(none.contains("WWW-Authenticate: Bearer"), "{none}");
        assert!(!none.contains("burrow_sessions"), "{none}");
        let wrong = get(public, "/metrics", "Authorization: Bearer s3cret-tokeX\r\n").await;
        assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
        let right = get(public, "/metrics", "Authorization: Bearer s3cret-token\r\n").await;
        assert!(right.starts_with("HTTP/1.1 200"), "{right}");
        assert!(
            right.contains("burrow_refusals_total{reason=\"auth\"} 2"),
            "{right}"
        );
        assert_eq!(metrics.refusals(Refusal::Auth), 2);
        // /healthz stays public and minimal.
        let health = get(public, "/healthz", "").await;
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
            "{health}"
        );
        // The admin listener needs no token.
        let m = get(admin, "/metrics", "").await;
        assert!(
            m.starts_with("HTTP/1.1 200") && m.contains("burrow_sessions 0"),
            "{m}"
        );
        assert!(get(admin, "/healthz", "").await.starts_with("HTTP/1.1 200"));
    });
}

#[test]
fn without_a_token_metrics_are_not_served_on_the_public_port() {
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let m = get(relay.addr, "/metrics", "").await;
        assert!(m.starts_with("HTTP/1.1 404"), "{m}");
        assert!(!m.contains("burrow_"), "{m}");
    });
}

#[test]
fn unfinished_heads_beyond_the_pre_upgrade_share_get_503() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        // 8 connections, 2 of them not yet upgraded.
        let relay = start_relay(&sp, limits(|l| l.max_connections = 8)).await;
        // A tunnel first: once upgraded it no longer counts against the share.
        let mut cfg = ClientConfig::new(relay.url());
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let client = start_client(&sp, cfg).await;
        client.wait("connected", |e| *e == Event::Connected).await;
        // Two slowloris heads take the share (accepted in order, before the third).
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(relay.addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ")
                .await
                .unwrap();
            held.push(s);
        }
        let (head, _) = send_raw(relay.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(head.status, 503);
        assert!(relay.metrics.refusals(Refusal::TooManyConnections) >= 1);
        // The tunnel still carries traffic.
        let mut s = TcpStream::connect(client.locals[0]).await.unwrap();
        s.write_all(b"still here").await.unwrap();
        let mut buf = [0u8; 10];
        within(10, "echo", s.read_exact(&mut buf)).await.unwrap();
        assert_eq!(&buf, b"still here");
        // Once the heads are gone, the share is free again.
        drop(held);
        within(10, "share freed", async {
            loop {
                let (head, _) =
                    send_raw(relay.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
                if head.status == 200 {
                    break;
                }
                smol::Timer::after(Duration::from_millis(20)).await;
            }
        })
        .await;
    });
}

#[test]
fn a_dripping_healthz_body_is_refused_and_closed_at_once() {
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut s = TcpStream::connect(relay.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nx")
            .await
            .unwrap();
        let mut w = s.clone();
        let _drip = smol::spawn(async move {
            while w.write_all(b"x").await.is_ok() {
                smol::Timer::after(Duration::from_millis(200)).await;
            }
        });
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        // Read to the close (a reset after the answer counts as closed too).
        within(5, "closed", async {
            while let Ok(n @ 1..) = s.read(&mut buf).await {
                out.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    });
}

#[test]
fn a_surface_answer_closes_the_connection() {
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        // HTTP/1.1 without `Connection: close`: answered once, then closed, not kept alive.
        let answer = get(relay.addr, "/healthz", "").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    });
}

#[test]
fn sessions_over_the_limits_get_503_and_the_client_may_retry() {
    run(|sp| async move {
        let relay = start_relay(&sp, limits(|l| l.max_sessions = 1)).await;
        let (_first, _d) = raw_session(relay.addr, "first").await;
        let tcp = TcpStream::connect(relay.addr).await.unwrap();
        let second = within(
            10,
            "refusal",
            client_handshake(tcp, &relay.url(), None, "second"),
        )
        .await
        .map(|_| ())
        .unwrap_err();
        match &second {
            HandshakeError::Rejected(503, why) => assert!(why.contains("--max-sessions"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!second.is_fatal(), "a full relay is worth retrying");
        assert_eq!(relay.metrics.refusals(Refusal::TooManySessions), 1);

        // Per token: one token, at most one session with it.
        let token = Secret::new("tok");
        let cfg = RelayConfig {
            token: Some(token.clone()),
            ..limits(|l| l.max_sessions_per_token = 1)
        };
        let relay = start_relay(&sp, cfg).await;
        let tcp = TcpStream::connect(relay.addr).await.unwrap();
        let _one = client_handshake(tcp, &relay.url(), Some(&token), "one")
            .await
            .unwrap();
        let tcp = TcpStream::connect(relay.addr).await.unwrap();
        match client_handshake(tcp, &relay.url(), Some(&token), "two").await {
            Err(HandshakeError::Rejected(503, why)) => assert!(why.contains("token"), "{why}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    });
}

#[test]
fn streams_over_the_relay_wide_limit_are_refused() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let relay = start_relay(&sp, limits(|l| l.max_streams_total = 1)).await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let client = start_client(&sp, cfg).await;
        client.wait("connected", |e| *e == Event::Connected).await;
        let mut a = TcpStream::connect(client.locals[0]).await.unwrap();
        a.write_all(b"a").await.unwrap();
        let mut one = [0u8; 1];
        within(10, "echo a", a.read_exact(&mut one)).await.unwrap();
        let mut b = TcpStream::connect(client.locals[0]).await.unwrap();
        // Refused: the client closes it without a byte.
        let n = within(10, "b closed", b.read(&mut one)).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(relay.metrics.refusals(Refusal::TooManyStreams), 1);
        a.write_all(b"a").await.unwrap();
        within(10, "echo a again", a.read_exact(&mut one))
            .await
            .unwrap();
    });
}

/// The backlog std (and so smol) gives a listener.
const LISTEN_BACKLOG: usize = 128;

/// A listener that never accepts, its queue filled so that connecting to it hangs.
async fn hanging_target() -> (SocketAddr, Vec<TcpStream>, TcpListener) {
    let l = TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut filled = Vec::new();
    for _ in 0..2000 {
        let probe = async { Some(TcpStream::connect(addr).await.unwrap()) };
        let late = async {
            smol::Timer::after(Duration::from_millis(500)).await;
            None
        };
        match futures_lite::FutureExt::or(probe, late).await {
            Some(s) => filled.push(s),
            // The listen backlog (128) is full: connects now hang.
            None if filled.len() >= LISTEN_BACKLOG => return (addr, filled, l),
            // A slow connect on a busy machine, not a full queue: keep filling.
            None => {}
        }
    }
    panic!("the accept queue never filled");
}

#[test]
fn opens_beyond_the_dials_in_progress_are_refused_at_once() {
    run(|sp| async move {
        let (target, _filled, _l) = hanging_target().await;
        let cfg = RelayConfig {
            connect_timeout: Duration::from_secs(20),
            ..limits(|l| l.max_dials = 1)
        };
        let relay = start_relay(&sp, cfg).await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.locals = vec![format!("127.0.0.1:0:{target}").parse().unwrap()];
        let client = start_client(&sp, cfg).await;
        client.wait("connected", |e| *e == Event::Connected).await;
        let mut a = TcpStream::connect(client.locals[0]).await.unwrap();
        a.write_all(b"early").await.unwrap();
        eventually("first dial under way", || {
            relay.metrics.streams.load(Ordering::Relaxed) == 1
        })
        .await;
        let mut b = TcpStream::connect(client.locals[0]).await.unwrap();
        b.write_all(b"early").await.unwrap();
        let mut one = [0u8; 1];
        let n = within(5, "b refused", b.read(&mut one)).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(relay.metrics.refusals(Refusal::TooManyDials), 1);
        assert_eq!(
            relay.metrics.streams.load(Ordering::Relaxed),
            1,
            "the refused stream is gone"
        );
        drop(a);
    });
}

#[test]
fn the_cli_refuses_an_open_admin_and_zero_limits() {
    let cases: [&[&str]; 3] = [
        &["--admin", "0.0.0.0:0"],
        &["--max-sessions", "0"],
        &["--max-dials", "0"],
    ];
    for extra in cases {
        let args: Vec<&str> = ["server", "--listen", "127.0.0.1:0", "--no-auth"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let (code, err) = run_binary(&args);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
    }
}
