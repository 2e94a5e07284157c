//! The WebSocket tunnel end to end: relay and client on loopback with real sockets.

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::refusal::Refusal;
use burrow::relay::RelayConfig;
use burrow::tunnel::SessionConfig;
use common::tunnel::*;
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn client_cfg(relay: &RunningRelay) -> ClientConfig {
    ClientConfig::new(relay.url())
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = within(10, "connect", TcpStream::connect(addr))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    within(10, "response", s.read_to_string(&mut out))
        .await
        .unwrap();
    out
}

#[test]
fn local_forward_with_half_close() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let (_relay, c) = forward_to(&sp, echo).await;
        let mut s = TcpStream::connect(c.locals[0]).await.unwrap();
        let payload = vec![9u8; 2_000_000];
        s.write_all(&payload).await.unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        within(10, "echo", s.read_to_end(&mut back)).await.unwrap();
        assert_eq!(back.len(), payload.len());
    });
}

#[test]
fn remote_forward_exposes_a_local_server() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = client_cfg(&relay);
        cfg.remotes = vec![format!("127.0.0.1:0:{origin}").parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        let public = c.bound().await;
        let body = get(public, "/exposed").await;
        assert!(body.contains("GET /exposed"), "{body}");
    });
}

#[test]
fn remote_proxy_egresses_from_the_client_with_auth_and_rules() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = client_cfg(&relay);
        cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        cfg.proxy_auth = Some("visitor:pw".parse().unwrap());
        cfg.rules.deny = vec![
            "10.0.0.0/8".parse().unwrap(),
            format!("127.0.0.1:{}", closed_port().port())
                .parse()
                .unwrap(),
        ];
        let c = start_client(&sp, cfg).await;
        let proxy = c.bound().await;
        let auth = basic("visitor:pw");
        // CONNECT through the relay port leaves from the client's network.
        let (head, mut r) = connect_via(proxy, origin, &auth).await;
        assert_eq!(head.status, 200);
        r.get_mut()
            .write_all(b"GET /via-relay HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert!(
            String::from_utf8(read_all(&mut r).await)
                .unwrap()
                .contains("GET /via-relay")
        );
        // Absolute-form too.
        let req = format!("GET http://{origin}/abs HTTP/1.1\r\n{auth}Connection: close\r\n\r\n");
        let (head, mut r) = send_raw(proxy, req.as_bytes()).await;
        assert_eq!(head.status, 200);
        assert!(
            String::from_utf8(read_all(&mut r).await)
                .unwrap()
                .contains("GET /abs")
        );
        // No credentials: 407. A target the client denies: 403. Nothing listening: 502.
        assert_eq!(connect_via(proxy, origin, "").await.0.status, 407);
        let (head, _) = send_raw(
            proxy,
            format!("CONNECT 10.1.2.3:80 HTTP/1.1\r\n{auth}\r\n").as_bytes(),
        )
        .await;
        assert_eq!(head.status, 403);
        let (head, _) = connect_via(proxy, closed_port(), &auth).await;
        assert!(head.status == 403 || head.status == 502, "{}", head.status);
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (head, _) = connect_via(proxy, free, &auth).await;
        assert_eq!(head.status, 502);
        assert!(c.metrics.refusals(Refusal::Forbidden) >= 1);
    });
}

#[test]
fn local_proxy_egresses_from_the_relay() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = client_cfg(&relay);
        cfg.locals = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        c.wait("connected", |e| *e == Event::Connected).await;
        let req = format!("GET http://{origin}/through-l HTTP/1.1\r\nConnection: close\r\n\r\n");
        let (head, mut r) = send_raw(c.locals[0], req.as_bytes()).await;
        assert_eq!(head.status, 200);
        assert!(
            String::from_utf8(read_all(&mut r).await)
                .unwrap()
                .contains("GET /through-l")
        );
        let (head, _) = connect_via(c.locals[0], origin, "").await;
        assert_eq!(head.status, 200);
    });
}

#[test]
fn two_hundred_streams_share_one_connection() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let (relay, c) = forward_to(&sp, echo).await;
        let local = c.locals[0];
        let jobs: Vec<_> = (0..200u32)
            .map(|i| {
                smol::spawn(async move {
                    let mut s = TcpStream::connect(local).await.unwrap();
                    let msg = vec![(i % 256) as u8; 10_000 + i as usize];
                    s.write_all(&msg).await.unwrap();
                    let mut back = vec![0u8; msg.len()];
                    s.read_exact(&mut back).await.unwrap();
                    assert_eq!(back, msg);
                    s
                })
            })
            .collect();
        let mut held = Vec::new();
        for j in jobs {
            held.push(within(20, "stream", j).await);
        }
        assert_eq!(
            relay.metrics.streams.load(Ordering::Relaxed),
            200,
            "200 streams open at once"
        );
        assert_eq!(
            established_to(relay.addr.port()),
            1,
            "exactly one TCP connection to the relay"
        );
        assert_eq!(relay.metrics.sessions_total.load(Ordering::Relaxed), 1);
    });
}

#[test]
fn stalled_reader_keeps_memory_bounded_and_other_streams_flow() {
    run(|sp| async move {
        const TOTAL: usize = 256 << 20;
        let (echo, _e) = start_echo().await;
        // A target that accepts and does not read until told to.
        let l = smol::net::TcpListener::bind(lo()).await.unwrap();
        let sink = l.local_addr().unwrap();
        let (go_tx, go_rx) = smol::channel::bounded::<()>(1);
        let reader = smol::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            go_rx.recv().await.ok();
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0usize;
            loop {
                match s.read(&mut buf).await.unwrap() {
                    0 => return n,
                    k => n += k,
                }
            }
        });
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = client_cfg(&relay);
        cfg.locals = vec![
            format!("127.0.0.1:0:{sink}").parse().unwrap(),
            format!("127.0.0.1:0:{echo}").parse().unwrap(),
        ];
        let c = start_client(&sp, cfg).await;
        c.wait("connected", |e| *e == Event::Connected).await;
        let before = rss_kib();
        let mut w = TcpStream::connect(c.locals[0]).await.unwrap();
        let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = written.clone();
        let writer = smol::spawn(async move {
            let chunk = vec![3u8; 1 << 20];
            for _ in 0..TOTAL / chunk.len() {
                w.write_all(&chunk).await.unwrap();
                count.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        // Wait until the writer is stuck: no progress for 300 ms.
        let mut last = usize::MAX;
        within(20, "stall", async {
            loop {
                smol::Timer::after(Duration::from_millis(300)).await;
                let now = written.load(Ordering::Relaxed);
                if now == last {
                    break;
                }
                last = now;
            }
        })
        .await;
        let stuck_at = written.load(Ordering::Relaxed);
        assert!(
            stuck_at < 64 << 20,
            "a stalled reader let {stuck_at} bytes through"
        );
        let grown = rss_kib().saturating_sub(before);
        assert!(grown < 64 * 1024, "RSS grew by {grown} KiB while stalled");
        // A second stream on the same session still moves data.
        let mut s = TcpStream::connect(c.locals[1]).await.unwrap();
        s.write_all(b"still flowing").await.unwrap();
        let mut back = [0u8; 13];
        within(10, "second stream", s.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(&back, b"still flowing");
        // Release the reader: everything arrives.
        go_tx.send(()).await.unwrap();
        within(60, "writer", writer).await;
        assert_eq!(within(60, "reader", reader).await, TOTAL);
        let peak = rss_kib().saturating_sub(before);
        assert!(
            peak < 96 * 1024,
            "RSS grew by {peak} KiB over the whole transfer"
        );
    });
}

#[test]
fn refusals_reach_the_user() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let relay_cfg = RelayConfig {
            rules: burrow::dial::rules::Rules {
                allow: vec![],
                deny: vec![format!("127.0.0.1:{}", echo.port()).parse().unwrap()],
            },
            allow_ports: (40000, 40010),
            ..RelayConfig::default()
        };
        let relay = start_relay(&sp, relay_cfg).await;
        let mut cfg = client_cfg(&relay);
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        cfg.remotes = vec![format!("127.0.0.1:22:{echo}").parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        match c
            .wait("bind answer", |e| {
                matches!(e, Event::Bound { .. } | Event::BindRefused { .. })
            })
            .await
        {
            Event::BindRefused { reason, .. } => {
                assert!(reason.contains("outside --allow-ports"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // -L to a denied target: the local connection is closed without data.
        let mut s = TcpStream::connect(c.locals[0]).await.unwrap();
        s.write_all(b"hello").await.ok();
        let mut buf = Vec::new();
        let _ = within(10, "closed", s.read_to_end(&mut buf)).await;
        assert!(buf.is_empty());
        eventually("forbidden counted", || {
            relay.metrics.refusals(Refusal::Forbidden) >= 2
        })
        .await;
    });
}

#[test]
fn wrong_or_missing_token_stops_the_client() {
    run(|sp| async move {
        let relay = start_relay(
            &sp,
            RelayConfig {
                token: Some(burrow::secret::Secret::new("right")),
                ..RelayConfig::default()
            },
        )
        .await;
        for token in [None, Some("wrong")] {
            let mut cfg = client_cfg(&relay);
            cfg.token = token.map(burrow::secret::Secret::new);
            cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
            let c = start_client(&sp, cfg).await;
            let err = within(10, "client stops", c.task).await.unwrap_err();
            assert!(err.to_string().contains("401"), "{err}");
        }
        assert_eq!(relay.metrics.refusals(Refusal::Auth), 2);
        let mut cfg = client_cfg(&relay);
        cfg.token = Some(burrow::secret::Secret::new("right"));
        cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        c.bound().await;
    });
}

#[test]
fn dead_relay_is_detected_and_the_client_reconnects_to_the_same_port() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let fast = SessionConfig {
            keepalive: Duration::from_millis(150),
            ..SessionConfig::default()
        };
        let relay = start_relay(
            &sp,
            RelayConfig {
                session: fast.clone(),
                ..RelayConfig::default()
            },
        )
        .await;
        let fwd = Forwarder::start(relay.addr).await;
        let mut cfg = ClientConfig::new(format!("ws://{}/burrow", fwd.addr).parse().unwrap());
        cfg.session = fast;
        cfg.remotes = vec![format!("127.0.0.1:0:{origin}").parse().unwrap()];
        // Without resumption: the relay holds the listeners, not the session.
        cfg.resume = false;
        let c = start_client(&sp, cfg).await;
        let public = c.bound().await;
        assert!(get(public, "/one").await.contains("GET /one"));
        // The middlebox silently stops forwarding: keepalive notices.
        fwd.freeze();
        match c.wait("lost", |e| matches!(e, Event::Lost(_))).await {
            Event::Lost(why) => assert!(why.contains("silent"), "{why}"),
            _ => unreachable!(),
        }
        c.wait("reconnected", |e| *e == Event::Connected).await;
        assert_eq!(c.bound().await, public, "the same public port comes back");
        assert!(get(public, "/two").await.contains("GET /two"));
        // Now cut the connection outright: same again.
        fwd.cut();
        c.wait("lost", |e| matches!(e, Event::Lost(_))).await;
        c.wait("reconnected", |e| *e == Event::Connected).await;
        assert_eq!(c.bound().await, public);
        assert!(get(public, "/three").await.contains("GET /three"));
        assert!(relay.metrics.reconnects.load(Ordering::Relaxed) >= 2);
    });
}

#[test]
fn a_held_port_is_not_given_to_another_client() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let fwd = Forwarder::start(relay.addr).await;
        let mut cfg = ClientConfig::new(format!("ws://{}/burrow", fwd.addr).parse().unwrap());
        cfg.remotes = vec![format!("127.0.0.1:0:{origin}").parse().unwrap()];
        // Without resumption: the relay holds the listeners, not the session.
        cfg.resume = false;
        let first = start_client(&sp, cfg).await;
        let public = first.bound().await;
        // The first client goes away (its process ends); its port is held.
        drop(first.task);
        fwd.cut();
        eventually("session gone", || {
            relay.metrics.sessions.load(Ordering::Relaxed) == 0
        })
        .await;
        let mut cfg = client_cfg(&relay);
        cfg.remotes = vec![
            format!("127.0.0.1:{}:{origin}", public.port())
                .parse()
                .unwrap(),
        ];
        let second = start_client(&sp, cfg).await;
        match second
            .wait("bind answer", |e| {
                matches!(e, Event::Bound { .. } | Event::BindRefused { .. })
            })
            .await
        {
            Event::BindRefused { reason, .. } => assert!(
                reason.contains("held for a reconnecting client"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn relay_http_surface_and_version_check() {
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let health = get(relay.addr, "/healthz").await;
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
            "{health}"
        );
        // No token (`--no-auth`): /metrics is not served on the public port (relay_limits.rs
        // covers the token and --admin).
        let metrics = get(relay.addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 404"), "{metrics}");
        assert!(get(relay.addr, "/nope").await.starts_with("HTTP/1.1 404"));
        let (head, _) = send_raw(
            relay.addr,
            b"POST /healthz HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert_eq!(head.status, 405);
        let (head, _) = send_raw(relay.addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(head.status, 400, "HTTP/1.1 without Host");
        let (head, _) = send_raw(relay.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert_eq!(head.status, 200);
        let upgrade = "GET /burrow HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nBurrow-Session: s1\r\nBurrow-Version: 99\r\n\r\n";
        let (head, mut r) = send_raw(relay.addr, upgrade.as_bytes()).await;
        assert_eq!(head.status, 426);
        let why = String::from_utf8(read_all(&mut r).await).unwrap();
        assert!(
            why.contains("version 99") && why.contains("speaks 1"),
            "{why}"
        );
    });
}

#[test]
fn garbage_frame_closes_only_that_session() {
    run(|sp| async move {
        use async_tungstenite::tungstenite::Message;
        let (origin, _o) = start_origin(&sp).await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = client_cfg(&relay);
        cfg.remotes = vec![format!("127.0.0.1:0:{origin}").parse().unwrap()];
        let good = start_client(&sp, cfg).await;
        let public = good.bound().await;
        // A hand-made session that sends a garbage binary frame.
        let tcp = TcpStream::connect(relay.addr).await.unwrap();
        let mut ws = burrow::tunnel::ws::client_handshake(tcp, &relay.url(), None, "bad-one")
            .await
            .unwrap();
        ws.send(Message::Binary(vec![0xff, 0, 0].into()))
            .await
            .unwrap();
        let closed = within(10, "close", async {
            loop {
                match futures_lite::StreamExt::next(&mut ws).await {
                    Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        })
        .await;
        assert_eq!(closed, Some(1002));
        assert!(
            get(public, "/unharmed").await.contains("GET /unharmed"),
            "the other session is untouched"
        );
    });
}

#[test]
fn relay_drain_lets_a_stream_finish() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let (relay, c) = forward_to(&sp, echo).await;
        let mut s = TcpStream::connect(c.locals[0]).await.unwrap();
        s.write_all(b"before").await.unwrap();
        let mut b = [0u8; 6];
        s.read_exact(&mut b).await.unwrap();
        relay.shutdown.drain();
        eventually("listener closed", || {
            std::net::TcpStream::connect(relay.addr).is_err()
        })
        .await;
        s.write_all(b"after").await.unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        within(10, "rest", s.read_to_end(&mut rest)).await.unwrap();
        assert_eq!(rest, b"after");
        within(10, "relay ends", relay.task).await;
        c.wait("lost", |e| matches!(e, Event::Lost(_))).await;
    });
}

#[test]
fn handshakes_that_never_complete_hit_their_deadlines() {
    run(|sp| async move {
        // Relay side: a visitor that starts an upgrade and stalls gets 408.
        let cfg = RelayConfig {
            handshake_timeout: Duration::from_millis(300),
            ..RelayConfig::default()
        };
        let relay = start_relay(&sp, cfg).await;
        let (head, _) = send_raw(
            relay.addr,
            b"GET /burrow HTTP/1.1\r\nUpgrade: websocket\r\n",
        )
        .await;
        assert_eq!(head.status, 408);
        // Client side: a "relay" that accepts and never answers the upgrade is given up on
        // (and retried), not waited for forever.
        let silent = smol::net::TcpListener::bind(lo()).await.unwrap();
        let url = format!("ws://{}/burrow", silent.local_addr().unwrap())
            .parse()
            .unwrap();
        let _hold = smol::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let mut cfg = ClientConfig::new(url);
        cfg.handshake_timeout = Duration::from_millis(300);
        cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        match c.wait("lost", |e| matches!(e, Event::Lost(_))).await {
            Event::Lost(why) => assert!(why.contains("in time"), "{why}"),
            _ => unreachable!(),
        }
        c.wait("retrying", |e| matches!(e, Event::Retrying(_)))
            .await;
    });
}

#[test]
fn client_drain_closes_idle_keep_alive_visitors_at_once() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = client_cfg(&relay);
        cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        cfg.drain_timeout = Duration::from_secs(25);
        let c = start_client(&sp, cfg).await;
        let proxy = c.bound().await;
        // A browser-like visitor: one keep-alive request, then the connection stays open.
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(
            format!("GET http://{origin}/ka HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut r = futures_lite::io::BufReader::new(s);
        let head = burrow::http::front::read_response(&mut r, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(head.status, 200);
        let n: usize = head.headers.get("content-length").unwrap().parse().unwrap();
        let mut body = vec![0u8; n];
        r.read_exact(&mut body).await.unwrap();
        c.shutdown.drain();
        // Well inside the 25 s drain timeout: nothing was in flight.
        within(5, "client exits", c.task).await.unwrap();
        assert!(
            read_all(&mut r).await.is_empty(),
            "the idle visitor was closed"
        );
    });
}

#[test]
fn a_407_from_a_via_hop_stops_the_client_naming_the_hop() {
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let corp = start_proxy(
            &sp,
            burrow::proxy::ProxyConfig {
                auth: Some("corp:pw".parse().unwrap()),
                ..Default::default()
            },
        )
        .await;
        let mut cfg = client_cfg(&relay);
        cfg.via = format!("http://{}", corp.addr)
            .parse::<burrow::dial::chain::Hop>()
            .map(|h| burrow::dial::chain::Upstream {
                hops: vec![h],
                no_proxy: vec![],
            })
            .unwrap();
        cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        let err = within(10, "client stops", c.task)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("upstream hop 1 ({})", corp.addr)) && err.contains("407"),
            "{err}"
        );
    });
}

#[test]
fn bindings_per_session_are_capped() {
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = client_cfg(&relay);
        cfg.remotes = (0..65)
            .map(|_| "127.0.0.1:0:proxy".parse().unwrap())
            .collect();
        let c = start_client(&sp, cfg).await;
        let (mut bound, mut refused) = (0, Vec::new());
        while bound + refused.len() < 65 {
            match c
                .wait("bind answer", |e| {
                    matches!(e, Event::Bound { .. } | Event::BindRefused { .. })
                })
                .await
            {
                Event::Bound { .. } => bound += 1,
                Event::BindRefused { reason, .. } => refused.push(reason),
                _ => unreachable!(),
            }
        }
        assert_eq!(bound, 64);
        assert!(refused[0].contains("too many bindings"), "{refused:?}");
    });
}

#[test]
fn a_returning_client_replaces_its_stale_session_and_keeps_its_port() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        // The relay would take a minute to notice; the client notices in half a second.
        let slow = SessionConfig {
            keepalive: Duration::from_secs(20),
            ..SessionConfig::default()
        };
        let relay = start_relay(
            &sp,
            RelayConfig {
                session: slow,
                ..RelayConfig::default()
            },
        )
        .await;
        let fwd = Forwarder::start(relay.addr).await;
        let mut cfg = ClientConfig::new(format!("ws://{}/burrow", fwd.addr).parse().unwrap());
        cfg.session = SessionConfig {
            keepalive: Duration::from_millis(150),
            ..SessionConfig::default()
        };
        cfg.remotes = vec![format!("127.0.0.1:0:{origin}").parse().unwrap()];
        // Without resumption: the relay holds the listeners, not the session.
        cfg.resume = false;
        let c = start_client(&sp, cfg).await;
        let public = c.bound().await;
        fwd.freeze();
        c.wait("lost", |e| matches!(e, Event::Lost(_))).await;
        c.wait("reconnected", |e| *e == Event::Connected).await;
        assert_eq!(c.bound().await, public, "the port moves to the new session");
        assert!(get(public, "/after").await.contains("GET /after"));
        assert_eq!(
            relay.metrics.sessions.load(Ordering::Relaxed),
            1,
            "the stale session is gone"
        );
    });
}
