//! UDP with peers of before UDP, both directions: a relay that does not announce `udp` with a
//! new client, and a new relay with a client that does not announce it.

mod common;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use burrow::bridge;
use burrow::client::{ClientConfig, Event};
use burrow::dial::rules::Rules;
use burrow::http::front;
use burrow::metrics::{Metrics, UdpDrop};
use burrow::relay::RelayConfig;
use burrow::tunnel::ws::{self, Upgrade};
use burrow::tunnel::{BindMode, Frame, OpenTarget, Session, SessionConfig, Side};
use common::tunnel::*;
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream, UdpSocket};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What an old relay was asked for: every OPEN's target and every session frame.
#[derive(Default)]
struct Seen {
    opens: Mutex<Vec<OpenTarget>>,
    frames: Mutex<Vec<Frame>>,
}

/// A relay of before UDP: it answers the upgrade without `udp` in `Burrow-Caps`, dials TCP
/// targets (`-L`), refuses BINDs, and records what it was asked.
async fn start_old_relay() -> (SocketAddr, Arc<Seen>, smol::Task<()>) {
    let l = TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    let task = smol::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let mut r = BufReader::new(tcp.clone());
        let head = front::read_request(&mut r, Duration::from_secs(10))
            .await
            .unwrap();
        let Upgrade::Accept { accept, .. } = ws::check_upgrade(&head, None) else {
            panic!("the client's upgrade was refused");
        };
        let answer = String::from_utf8(ws::switching_protocols(&accept, None)).unwrap();
        let old = answer.replace(", udp", "");
        assert!(!old.contains("udp"), "{old}");
        let leftover = r.buffer().to_vec();
        let mut w = tcp.clone();
        w.write_all(old.as_bytes()).await.unwrap();
        let ws = ws::server_stream(tcp, leftover).await;
        let (session, driver) = Session::new(
            Side::Relay,
            SessionConfig::default(),
            "old-relay".into(),
            Arc::new(Metrics::default()),
        );
        let _driver = smol::spawn(async move {
            driver.run(ws).await;
        });
        let frames = {
            let (session, seen) = (session.clone(), seen2.clone());
            smol::spawn(async move {
                while let Some(f) = session.session_frame().await {
                    if let Frame::Bind { bind_id, .. } = &f {
                        session.send_session_frame(Frame::BindRefused {
                            bind_id: *bind_id,
                            reason: "old relay binds nothing".into(),
                        });
                    }
                    seen.frames.lock().unwrap().push(f);
                }
            })
        };
        let metrics = Metrics::default();
        let mut streams = Vec::new();
        while let Some(inc) = session.accept().await {
            seen2.opens.lock().unwrap().push(inc.target.clone());
            if let OpenTarget::Dial { host, port } = inc.target.clone() {
                let (rules, t) = (Rules::default(), Duration::from_secs(5));
                let m = Arc::new(Metrics::default());
                streams.push(smol::spawn(async move {
                    bridge::serve_dial(inc, host, port, &rules, t, "old-relay", &m).await
                }));
            } else {
                let why = "unknown target";
                bridge::refuse(
                    inc,
                    burrow::refusal::Refusal::BadRequest,
                    why,
                    "old",
                    &metrics,
                );
            }
        }
        drop(frames);
    });
    (addr, seen, task)
}

#[test]
fn a_new_client_with_an_old_relay_refuses_udp_flows_and_tcp_goes_on() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let (relay, seen, _r) = start_old_relay().await;
        let mut cfg = ClientConfig::new(format!("ws://{relay}/burrow").parse().unwrap());
        cfg.locals = vec![
            format!("udp:127.0.0.1:0:{echo}").parse().unwrap(),
            format!("127.0.0.1:0:{echo}").parse().unwrap(),
        ];
        cfg.remotes = vec![
            format!("udp:127.0.0.1:0:{echo}").parse().unwrap(),
            format!("127.0.0.1:0:{echo}").parse().unwrap(),
        ];
        let c = start_client(&sp, cfg).await;
        c.wait("connected", |e| *e == Event::Connected).await;
        // The TCP -R is asked for; the UDP one, before it in the list, is not.
        c.wait("the tcp bind answered", |e| {
            matches!(e, Event::BindRefused { .. })
        })
        .await;
        let binds: Vec<BindMode> = (seen.frames.lock().unwrap().iter())
            .filter_map(|f| match f {
                Frame::Bind { mode, .. } => Some(mode.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            binds,
            vec![BindMode::Forward],
            "no BIND udp to an old relay"
        );
        // A datagram at -L udp: refused here (logged), dropped and counted.
        let s = UdpSocket::bind(lo()).await.unwrap();
        s.send_to(b"hello?", c.locals[0]).await.unwrap();
        let m = c.metrics.clone();
        eventually("the datagram dropped", || {
            m.udp_dropped_count(UdpDrop::Invalid) == 1
        })
        .await;
        // TCP through the same session is unaffected.
        let mut t = within(10, "connect", TcpStream::connect(c.locals[1]))
            .await
            .unwrap();
        t.write_all(b"tcp still works").await.unwrap();
        let mut back = [0u8; 15];
        within(10, "echo", t.read_exact(&mut back)).await.unwrap();
        assert_eq!(&back, b"tcp still works");
        let opens = seen.opens.lock().unwrap().clone();
        assert!(!opens.is_empty(), "the TCP stream reached the old relay");
        assert!(opens.iter().all(|t| !t.is_udp()), "{opens:?}");
        assert_eq!(c.metrics.udp_flows_total.load(Relaxed), 0);
    });
}

/// A client of before UDP: its upgrade announces no `udp` (no `Burrow-Caps` at all).
async fn old_client_session(relay: SocketAddr) -> (Session, smol::Task<()>) {
    let tcp = within(10, "connect", TcpStream::connect(relay))
        .await
        .unwrap();
    let mut req = format!("ws://{relay}/burrow")
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert(
        ws::VERSION_HEADER,
        burrow::tunnel::frame::VERSION.to_string().parse().unwrap(),
    );
    h.insert(ws::SESSION_HEADER, "0ld-c1ient-0000".parse().unwrap());
    let (ws, resp) = within(10, "upgrade", async_tungstenite::client_async(req, tcp))
        .await
        .unwrap();
    let caps = resp
        .headers()
        .get(ws::CAPS_HEADER)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(caps.contains("udp"), "the new relay announces udp: {caps}");
    let (session, driver) = Session::new(
        Side::Client,
        SessionConfig::default(),
        "old-client".into(),
        Arc::new(Metrics::default()),
    );
    let task = smol::spawn(async move {
        driver.run(ws).await;
    });
    (session, task)
}

#[test]
fn a_new_relay_never_binds_udp_for_a_client_that_did_not_announce_it() {
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (session, _d) = old_client_session(relay.addr).await;
        assert!(!session.peer_udp());
        // Mode 2 from a client that never said it knows it: refused, nothing bound.
        session.send_session_frame(Frame::Bind {
            bind_id: 1,
            addr: "127.0.0.1".into(),
            port: 0,
            mode: BindMode::Udp,
            pool: None,
        });
        let answer = within(10, "bind answer", session.session_frame()).await;
        match answer {
            Some(Frame::BindRefused { bind_id: 1, reason }) => {
                assert!(reason.contains("udp"), "{reason}")
            }
            other => panic!("BIND udp of an old client answered {other:?}"),
        }
        // The session goes on: a TCP -L stream of this client is served.
        let (echo, _e) = start_echo().await;
        let target = OpenTarget::Dial {
            host: "127.0.0.1".into(),
            port: echo.port(),
        };
        let mut s = within(10, "open", session.open(target)).await.unwrap();
        s.write_all(b"ok").await.unwrap();
        let mut back = [0u8; 2];
        within(10, "echo", s.read_exact(&mut back)).await.unwrap();
        assert_eq!(relay.metrics.udp_flows_total.load(Relaxed), 0);
    });
}

#[test]
fn udp_associate_on_the_proxy_port_of_an_old_client_is_command_not_supported() {
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (session, _d) = old_client_session(relay.addr).await;
        session.send_session_frame(Frame::Bind {
            bind_id: 1,
            addr: "127.0.0.1".into(),
            port: 0,
            mode: BindMode::Proxy {
                auth: burrow::tunnel::frame::ProxyAuth::open(),
            },
            pool: None,
        });
        let port: SocketAddr = match within(10, "bind answer", session.session_frame()).await {
            Some(Frame::Bound { addr, .. }) => addr.parse().unwrap(),
            other => panic!("{other:?}"),
        };
        let mut s = TcpStream::connect(port).await.unwrap();
        // Greeting (no auth), then UDP ASSOCIATE 0.0.0.0:0.
        s.write_all(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        within(10, "socks answer", s.read_exact(&mut answer))
            .await
            .unwrap();
        assert_eq!(&answer[..2], &[5, 0], "no auth");
        assert_eq!(answer[3], 7, "command not supported: {answer:?}");
        // No flow was ever opened to the old client.
        assert_eq!(relay.metrics.udp_flows_total.load(Relaxed), 0);
    });
}
