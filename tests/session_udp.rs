//! UDP flows of a session (`src/tunnel/session/udp.rs`) between two real sessions over an
//! in-memory WebSocket: datagrams whole both ways, the capability both directions, the
//! bounded queues that drop and count instead of stalling the session's streams, and ends.

#[path = "common/mux.rs"]
mod mux;
#[path = "common/own_executor.rs"]
mod own_executor;
#[path = "common/pipe.rs"]
mod pipe;

use async_tungstenite::tungstenite::{Bytes, Message};
use burrow::metrics::{Metrics, UdpDrop};
use burrow::tunnel::session::{FLOW_QUEUE, FLOW_QUEUE_BYTES};
use burrow::tunnel::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use mux::{relay_over, violation_closes_with, ws_pair};
use own_executor::{deadline, on_own_executor};
use smol::Executor;
use std::sync::Arc;

fn udp_cfg(udp: bool) -> SessionConfig {
    SessionConfig {
        udp,
        ..SessionConfig::default()
    }
}

/// A client and a relay session; each knows whether the other announced `udp`.
async fn pair(
    ex: &Arc<Executor<'static>>,
    client_sees_udp: bool,
    relay_sees_udp: bool,
) -> (Session, Session, Arc<Metrics>, Arc<Metrics>) {
    let (c, r) = ws_pair().await;
    let cm = Arc::new(Metrics::default());
    let (client, driver) = Session::new(
        Side::Client,
        udp_cfg(client_sees_udp),
        "c".into(),
        cm.clone(),
    );
    ex.spawn(driver.run(c)).detach();
    let rm = Arc::new(Metrics::default());
    let (relay, rd) = Session::new(Side::Relay, udp_cfg(relay_sees_udp), "r".into(), rm.clone());
    ex.spawn(rd.run(r)).detach();
    (client, relay, cm, rm)
}

fn dial() -> OpenTarget {
    OpenTarget::UdpDial {
        host: "dns".into(),
        port: 53,
    }
}

/// The relay accepts the next flow the client opens.
async fn accepted(relay: &Session) -> (UdpFlow, OpenTarget) {
    let inc = deadline("incoming flow", relay.accept())
        .await
        .expect("incoming");
    let target = inc.target.clone();
    assert!(target.is_udp());
    (inc.accept_udp(), target)
}

#[test]
fn datagrams_cross_whole_both_ways_from_empty_to_65507_bytes() {
    on_own_executor(|ex| async move {
        let (client, relay, cm, rm) = pair(&ex, true, true).await;
        let opener = {
            let client = client.clone();
            ex.spawn(async move { client.open_udp(dial()).await })
        };
        let (far, target) = accepted(&relay).await;
        assert_eq!(target, dial());
        let near = deadline("open_udp", opener).await.expect("flow opened");
        let big: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
        let sizes = [0usize, 1, 512, 60 * 1024, 65_507];
        for n in sizes {
            assert!(near.send(&big[..n]), "send {n}");
        }
        for n in sizes {
            let got = deadline("datagram at the relay", far.recv()).await.unwrap();
            assert_eq!(&got[..], &big[..n], "datagram of {n} bytes arrives whole");
        }
        assert!(far.send(b"answer"));
        assert_eq!(
            &deadline("answer", near.recv()).await.unwrap()[..],
            b"answer"
        );
        // Larger than a UDP datagram can be: dropped and counted, never split.
        let too_big = vec![0u8; 65_508];
        assert!(!near.send(&too_big));
        assert_eq!(cm.udp_dropped_count(UdpDrop::TooLarge), 1);
        assert_eq!(near.dropped(), 1);
        assert_eq!(
            rm.udp_datagrams_in
                .load(std::sync::atomic::Ordering::Relaxed),
            5
        );
        assert_eq!(client.udp_flow_count(), 1);
        assert_eq!(relay.udp_flow_count(), 1);
        // A flow is not a stream: the session's stream count (and its drain) ignores it.
        assert_eq!(client.stream_count(), 0);
    });
}

#[test]
fn a_dropped_flow_ends_on_the_peer_and_leaves_both_tables() {
    on_own_executor(|ex| async move {
        let (client, relay, cm, _rm) = pair(&ex, true, true).await;
        let opener = {
            let client = client.clone();
            ex.spawn(async move { client.open_udp(dial()).await })
        };
        let (far, _) = accepted(&relay).await;
        let near = deadline("open_udp", opener).await.unwrap();
        drop(near);
        assert_eq!(deadline("end at the relay", far.recv()).await, None);
        assert!(
            far.over().unwrap().contains("flow closed"),
            "{:?}",
            far.over()
        );
        assert_eq!(relay.udp_flow_count(), 0);
        assert_eq!(client.udp_flow_count(), 0);
        assert_eq!(cm.udp_flows.load(std::sync::atomic::Ordering::Relaxed), 0);
        // Sending on an ended flow drops.
        assert!(!far.send(b"late"));
    });
}

#[test]
fn a_refused_flow_reports_the_peers_code() {
    on_own_executor(|ex| async move {
        let (client, relay, _cm, _rm) = pair(&ex, true, true).await;
        let opener = {
            let client = client.clone();
            ex.spawn(async move { client.open_udp(dial()).await })
        };
        let inc = deadline("incoming", relay.accept()).await.unwrap();
        inc.refuse(RefuseCode::Forbidden, "not allowed");
        match deadline("answer", opener).await {
            Err(OpenError::Refused { code, reason }) => {
                assert_eq!(
                    (code, reason.as_str()),
                    (RefuseCode::Forbidden, "not allowed")
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(client.udp_flow_count(), 0);
        assert_eq!(relay.udp_flow_count(), 0);
    });
}

#[test]
fn early_datagrams_wait_for_the_answer_within_the_flow_queue() {
    on_own_executor(|ex| async move {
        let (client, relay, _cm, _rm) = pair(&ex, true, true).await;
        let near = client.open_udp_early(dial()).unwrap();
        assert!(near.send(b"first"));
        let (far, _) = accepted(&relay).await;
        assert_eq!(
            &deadline("early datagram", far.recv()).await.unwrap()[..],
            b"first"
        );
    });
}

#[test]
fn a_peer_without_the_capability_is_never_sent_a_flow_either_way() {
    on_own_executor(|ex| async move {
        // The client's relay is old (no `udp` in its answer): the client never opens a flow.
        let (client, _relay, _cm, _rm) = pair(&ex, false, true).await;
        match client.open_udp(dial()).await {
            Err(OpenError::Unsupported(_)) => {}
            other => panic!("{other:?}"),
        }
        // The relay's client is old (no `udp` in its request): the relay never opens one.
        let (_client, relay, _cm, _rm) = pair(&ex, true, false).await;
        let bound = OpenTarget::UdpBound { bind_id: 1 };
        match relay.open_udp(bound).await {
            Err(OpenError::Unsupported(_)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(relay.udp_flow_count(), 0);
    });
}

/// The code an older peer gets for "connection refused", which came with `udp`.
#[test]
fn an_older_peer_gets_unreachable_for_a_refused_connection() {
    on_own_executor(|ex| async move {
        for (udp, want) in [
            (true, RefuseCode::Refused),
            (false, RefuseCode::Unreachable),
        ] {
            let (client, relay, _cm, _rm) = pair(&ex, true, udp).await;
            let target = OpenTarget::Dial {
                host: "x".into(),
                port: 1,
            };
            let opener = {
                let client = client.clone();
                ex.spawn(async move { client.open(target).await })
            };
            let inc = deadline("incoming", relay.accept()).await.unwrap();
            inc.refuse(RefuseCode::Refused, "connection refused");
            match deadline("answer", opener).await {
                Err(OpenError::Refused { code, .. }) => assert_eq!(code, want, "udp={udp}"),
                other => panic!("{other:?}"),
            }
        }
    });
}

#[test]
fn a_flood_into_a_flow_nobody_reads_drops_and_counts_and_streams_keep_flowing() {
    on_own_executor(|ex| async move {
        let (client, relay, _cm, rm) = pair(&ex, true, true).await;
        let opener = {
            let client = client.clone();
            ex.spawn(async move { client.open_udp(dial()).await })
        };
        let (far, _) = accepted(&relay).await;
        let near = deadline("open_udp", opener).await.unwrap();
        // Nobody reads `far`. 2,000 datagrams of 1 KiB: the writer never waits for them.
        let payload = [7u8; 1024];
        let mut queued = 0u32;
        for _ in 0..2000 {
            if near.send(&payload) {
                queued += 1;
            }
            if queued % 64 == 0 {
                futures_lite::future::yield_now().await;
            }
        }
        // Meanwhile a stream of the same session moves 1 MiB both ways.
        let streams = {
            let client = client.clone();
            ex.spawn(async move {
                let target = OpenTarget::Dial {
                    host: "echo".into(),
                    port: 7,
                };
                let mut s = client.open(target).await.unwrap();
                let data = vec![9u8; 1024 * 1024];
                s.write_all(&data).await.unwrap();
                s.close().await.unwrap();
                let mut back = Vec::new();
                s.read_to_end(&mut back).await.unwrap();
                back.len()
            })
        };
        let inc = deadline("stream", relay.accept()).await.unwrap();
        let mut s = inc.accept();
        let mut buf = Vec::new();
        deadline("stream data", s.read_to_end(&mut buf))
            .await
            .unwrap();
        s.write_all(&buf).await.unwrap();
        s.close().await.unwrap();
        assert_eq!(deadline("echo", streams).await, 1024 * 1024);
        // Everything the client queued arrived at the relay, and the flow's queue stopped
        // at its cap: the rest were dropped there and counted.
        let arrived = || {
            rm.udp_datagrams_in
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        deadline("datagrams arrive", async {
            while arrived() < u64::from(queued) {
                smol::Timer::after(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        let held = relay.udp_buffered();
        assert!(held <= FLOW_QUEUE_BYTES, "{held}");
        assert!(held <= FLOW_QUEUE * 1024, "{held}");
        let dropped = rm.udp_dropped_count(UdpDrop::QueueFull);
        assert_eq!(dropped + (held / 1024) as u64, u64::from(queued));
        assert_eq!(far.dropped(), dropped);
        // What was held is read, whole, and the flow goes on.
        for _ in 0..held / 1024 {
            assert_eq!(deadline("held", far.recv()).await.unwrap().len(), 1024);
        }
        assert_eq!(relay.udp_buffered(), 0);
        assert!(near.send(b"after"));
        assert_eq!(&deadline("after", far.recv()).await.unwrap()[..], b"after");
    });
}

#[test]
fn a_closed_session_ends_its_flows() {
    on_own_executor(|ex| async move {
        let (client, relay, _cm, _rm) = pair(&ex, true, true).await;
        let opener = {
            let client = client.clone();
            ex.spawn(async move { client.open_udp(dial()).await })
        };
        let (far, _) = accepted(&relay).await;
        let near = deadline("open_udp", opener).await.unwrap();
        client.close("done");
        assert_eq!(deadline("client flow ends", near.recv()).await, None);
        assert_eq!(deadline("relay flow ends", far.recv()).await, None);
    });
}

fn msg(f: Frame) -> Message {
    Message::Binary(Bytes::from(f.to_bytes()))
}

#[test]
fn a_datagram_larger_than_udp_allows_on_a_flow_is_a_protocol_error() {
    let open = Frame::Open {
        id: 1,
        window: 65_536,
        target: dial(),
    };
    let big = Frame::Dgram {
        id: 1,
        payload: Bytes::from(vec![0u8; 65_508]),
    };
    violation_closes_with(udp_cfg(true), vec![msg(open), msg(big)], 1002);
}

#[test]
fn a_datagram_on_a_byte_stream_or_data_on_a_flow_is_a_protocol_error() {
    let stream = Frame::Open {
        id: 1,
        window: 65_536,
        target: OpenTarget::Dial {
            host: "x".into(),
            port: 1,
        },
    };
    let dgram = Frame::Dgram {
        id: 1,
        payload: Bytes::from_static(b"x"),
    };
    violation_closes_with(udp_cfg(true), vec![msg(stream), msg(dgram)], 1002);
    let flow = Frame::Open {
        id: 1,
        window: 65_536,
        target: dial(),
    };
    let data = Frame::Data {
        id: 1,
        payload: Bytes::from_static(b"x"),
    };
    violation_closes_with(udp_cfg(true), vec![msg(flow), msg(data)], 1002);
}

#[test]
fn a_relay_session_hands_a_udp_open_to_its_role_as_a_flow() {
    on_own_executor(|ex| async move {
        let (mut raw, r) = ws_pair().await;
        let (relay, _end) = relay_over(&ex, r, udp_cfg(true));
        raw.send(msg(Frame::Open {
            id: 1,
            window: 65_536,
            target: OpenTarget::UdpAny,
        }))
        .await
        .unwrap();
        let (flow, target) = accepted(&relay).await;
        assert_eq!(target, OpenTarget::UdpAny);
        raw.send(msg(Frame::Dgram {
            id: 1,
            payload: Bytes::from_static(b"\x00\x35\x03dnsq"),
        }))
        .await
        .unwrap();
        let got = deadline("datagram", flow.recv()).await.unwrap();
        let (host, port, data) = frame::decode_addressed(&got).unwrap();
        assert_eq!((host.as_str(), port, &data[..]), ("dns", 53, &b"q"[..]));
    });
}

#[test]
fn in_a_resumable_session_datagrams_are_not_numbered_and_flows_survive_a_resume() {
    on_own_executor(|ex| async move {
        let cfg = SessionConfig {
            resumable: true,
            udp: true,
            ..SessionConfig::default()
        };
        let m = Arc::new(Metrics::default());
        let (c1, r1) = ws_pair().await;
        let (client, cd) = Session::new(Side::Client, cfg.clone(), "c".into(), m.clone());
        let (relay, rd) = Session::new(Side::Relay, cfg, "r".into(), m.clone());
        let client_end = ex.spawn(cd.run(c1));
        let relay_end = ex.spawn(rd.run(r1));
        let opener = {
            let client = client.clone();
            ex.spawn(async move { client.open_udp(dial()).await })
        };
        let (far, _) = accepted(&relay).await;
        let near = deadline("open_udp", opener).await.unwrap();
        // Many more datagrams than the 64 frames after which a side acknowledges: if they
        // were numbered on one side only, an ACK would count frames never sent (1002).
        for i in 0..300u32 {
            assert!(near.send(&i.to_be_bytes()));
            let got = deadline("datagram", far.recv()).await.unwrap();
            assert_eq!(&got[..], &i.to_be_bytes());
            assert!(far.send(b"ok"));
            deadline("answer", near.recv()).await.unwrap();
        }
        // Acknowledgements of the frames that are numbered still add up.
        let echo = {
            let relay = relay.clone();
            ex.spawn(async move {
                let s = relay.accept().await.unwrap().accept();
                let (r, mut w) = (s.clone(), s);
                futures_lite::io::copy(r, &mut w).await.ok();
                w.close().await.ok();
            })
        };
        let mut s = client.open(OpenTarget::Bound { bind_id: 1 }).await.unwrap();
        s.write_all(&vec![1u8; 200_000]).await.unwrap();
        s.close().await.unwrap();
        let mut back = Vec::new();
        deadline("echo", s.read_to_end(&mut back)).await.unwrap();
        assert_eq!(back.len(), 200_000);
        deadline("echo task", echo).await;
        // The connection dies; the flow goes on on the next one.
        client_end.cancel().await;
        let why = deadline("relay notices", relay_end).await;
        assert!(why.is_link_failure(), "{why:?}");
        let (c2, r2) = ws_pair().await;
        let _c = ex.spawn(client.resume_driver().run(c2));
        let _r = ex.spawn(relay.resume_driver().run(r2));
        assert!(near.send(b"after the resume"));
        let got = deadline("datagram after resume", far.recv()).await.unwrap();
        assert_eq!(&got[..], b"after the resume");
        assert!(!client.is_closed() && !relay.is_closed());
    });
}
