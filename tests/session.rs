//! Two sessions over an in-memory pipe, on an executor each test owns (never smol's global
//! one): streams both ways, credit flow control, refusals, limits, bad input, dead peers.

#[path = "common/mux.rs"]
mod mux;
#[path = "common/own_executor.rs"]
mod own_executor;
#[path = "common/pipe.rs"]
mod pipe;

use mux::{relay_over, ws_pair};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::tungstenite::{Bytes, Message};
use burrow::metrics::Metrics;
use burrow::tunnel::ws::ws_config;
use burrow::tunnel::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use futures_lite::{FutureExt, StreamExt};
use own_executor::{deadline, on_own_executor};
use pipe::duplex;
use smol::Executor;
use std::sync::Arc;
use std::time::Duration;

struct Pair {
    client: Session,
    relay: Session,
    client_end: smol::Task<CloseReason>,
    relay_end: smol::Task<CloseReason>,
}

async fn sessions(ex: &Arc<Executor<'static>>, relay_cfg: SessionConfig) -> Pair {
    let (c, r) = ws_pair().await;
    let m = Arc::new(Metrics::default());
    let (client, cd) = Session::new(
        Side::Client,
        SessionConfig::default(),
        "client".into(),
        m.clone(),
    );
    let (relay, rd) = Session::new(Side::Relay, relay_cfg, "relay".into(), m);
    Pair {
        client,
        relay,
        client_end: ex.spawn(cd.run(c)),
        relay_end: ex.spawn(rd.run(r)),
    }
}

/// Accepts every stream on `s` and echoes it (EOF passed on as FIN).
fn echo_all(ex: &Arc<Executor<'static>>, s: Session) -> smol::Task<()> {
    let ex2 = ex.clone();
    ex.spawn(async move {
        let mut tasks = Vec::new();
        while let Some(inc) = s.accept().await {
            let stream = inc.accept();
            tasks.push(ex2.spawn(async move {
                let (r, mut w) = (stream.clone(), stream);
                futures_lite::io::copy(r, &mut w).await.ok();
                w.close().await.ok();
            }));
        }
    })
}

fn dial(host: &str) -> OpenTarget {
    OpenTarget::Dial {
        host: host.into(),
        port: 1,
    }
}

#[test]
fn streams_both_ways_with_half_close() {
    on_own_executor(|ex| async move {
        let p = sessions(&ex, SessionConfig::default()).await;
        let _e1 = echo_all(&ex, p.relay.clone());
        let _e2 = echo_all(&ex, p.client.clone());
        let mut jobs = Vec::new();
        for (i, opener) in [p.client.clone(), p.client.clone(), p.relay.clone()]
            .into_iter()
            .enumerate()
        {
            jobs.push(ex.spawn(async move {
                let s = opener.open(dial("x")).await.expect("open");
                let data: Vec<u8> = (0..1_000_000u32)
                    .map(|n| (n % 251) as u8 ^ i as u8)
                    .collect();
                let mut w = s.clone();
                let writer = async {
                    w.write_all(&data).await.unwrap();
                    w.close().await.unwrap();
                };
                let mut back = Vec::new();
                let mut r = s.clone();
                let reader = async {
                    r.read_to_end(&mut back).await.unwrap();
                };
                futures_lite::future::zip(writer, reader).await;
                assert_eq!(back, data, "echo of stream {}", s.id());
                s.id()
            }));
        }
        let mut ids = Vec::new();
        for j in jobs {
            ids.push(deadline("stream", j).await);
        }
        assert!(
            ids[0] % 2 == 1 && ids[1] % 2 == 1,
            "client ids are odd: {ids:?}"
        );
        assert!(ids[2] % 2 == 0, "relay ids are even: {ids:?}");
        drop(p.client_end);
    });
}

#[test]
fn a_stalled_reader_stops_its_sender_after_one_window_and_others_flow() {
    on_own_executor(|ex| async move {
        let p = sessions(&ex, SessionConfig::default()).await;
        let relay = p.relay.clone();
        // The relay accepts streams but reads only the second one.
        let held = ex.spawn(async move {
            let first = relay.accept().await.unwrap().accept();
            let second = relay.accept().await.unwrap().accept();
            let mut got = Vec::new();
            let mut r = second.clone();
            r.read_to_end(&mut got).await.unwrap();
            (first, got.len())
        });
        let stalled = p.client.open(dial("a")).await.unwrap();
        let mut w = stalled.clone();
        let chunk = vec![1u8; 64 * 1024];
        let mut written = 0usize;
        let fill = async {
            loop {
                w.write_all(&chunk).await.unwrap();
                written += chunk.len();
            }
        };
        fill.or(async { smol::Timer::after(Duration::from_millis(500)).await })
            .await;
        let window = SessionConfig::default().initial_window as usize;
        assert!(
            written <= window,
            "sender got {written} bytes past a stalled reader (window {window})"
        );
        assert!(
            written >= window - chunk.len(),
            "the window was usable: {written}"
        );
        // Another stream on the same session still moves data.
        let other = p.client.open(dial("b")).await.unwrap();
        let mut ow = other.clone();
        deadline("second stream", async {
            ow.write_all(&vec![2u8; 3_000_000]).await.unwrap();
            ow.close().await.unwrap();
        })
        .await;
        let (_first, n) = deadline("reader of second stream", held).await;
        assert_eq!(n, 3_000_000);
    });
}

#[test]
fn refusals_and_stream_limits() {
    on_own_executor(|ex| async move {
        let cfg = SessionConfig {
            max_streams: 2,
            ..SessionConfig::default()
        };
        let p = sessions(&ex, cfg).await;
        let relay = p.relay.clone();
        let refuser = ex.spawn(async move {
            let inc = relay.accept().await.unwrap();
            inc.refuse(RefuseCode::Forbidden, "target not allowed here");
            // Hold the next two so the limit is reached.
            let a = relay.accept().await.unwrap().accept();
            let b = relay.accept().await.unwrap().accept();
            (a, b)
        });
        match p.client.open(dial("forbidden")).await {
            Err(OpenError::Refused { code, reason }) => {
                assert_eq!(code, RefuseCode::Forbidden);
                assert_eq!(burrow::refusal::Refusal::from(code).http_status(), 403);
                assert_eq!(reason, "target not allowed here");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let _a = p.client.open(dial("a")).await.unwrap();
        let _b = p.client.open(dial("b")).await.unwrap();
        let held = deadline("accepts", refuser).await;
        match p.client.open(dial("c")).await {
            Err(OpenError::Refused {
                code: RefuseCode::TooManyStreams,
                ..
            }) => {}
            other => panic!("expected too many streams, got {other:?}"),
        }
        assert_eq!(p.relay.refused_count(), 2);
        // A closed stream frees its slot.
        drop(held);
        drop(_a);
        let mut reopened = None;
        for _ in 0..100 {
            if p.relay.stream_count() < 2 {
                reopened = Some(p.client.open(dial("d")));
                break;
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        let relay = p.relay.clone();
        let acc = ex.spawn(async move { relay.accept().await.map(|i| i.accept()) });
        assert!(reopened.expect("slot freed").await.is_ok());
        drop(acc);
    });
}

/// A raw WebSocket peer that sends `msg` to a relay session and returns the close code.
fn violation_closes_with(msg: Message, want: u16) {
    mux::violation_closes_with(SessionConfig::default(), vec![msg], want);
}

#[test]
fn garbage_frame_is_a_protocol_error() {
    violation_closes_with(Message::Binary(Bytes::from_static(&[0xee, 1, 2])), 1002);
}

#[test]
fn data_for_an_unknown_stream_is_a_protocol_error() {
    let data = Frame::Data {
        id: 41,
        payload: vec![1].into(),
    }
    .to_bytes();
    violation_closes_with(Message::Binary(Bytes::from(data)), 1002);
}

#[test]
fn data_past_the_window_is_a_protocol_error() {
    on_own_executor(|ex| async move {
        let (mut raw, r) = ws_pair().await;
        let (relay, end) = relay_over(
            &ex,
            r,
            SessionConfig {
                initial_window: 1024,
                ..SessionConfig::default()
            },
        );
        let acc = ex.spawn(async move { relay.accept().await.unwrap().accept() });
        raw.send(Message::Binary(
            Frame::Open {
                id: 1,
                window: 65536,
                target: dial("x"),
            }
            .to_bytes()
            .into(),
        ))
        .await
        .unwrap();
        // Wait for OPEN_OK, then send more than the granted 1024 bytes.
        loop {
            if let Some(Ok(Message::Binary(b))) = raw.next().await {
                assert!(matches!(
                    Frame::decode(&b),
                    Ok(Frame::OpenOk {
                        id: 1,
                        window: 1024
                    })
                ));
                break;
            }
        }
        let _s = acc.await;
        raw.send(Message::Binary(
            Frame::Data {
                id: 1,
                payload: vec![0; 1025].into(),
            }
            .to_bytes()
            .into(),
        ))
        .await
        .unwrap();
        match deadline("session end", end).await {
            CloseReason::Protocol(1002, why) => assert!(why.contains("window"), "{why}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn text_message_is_unsupported_data() {
    violation_closes_with(Message::Text("hello".into()), 1003);
}

#[test]
fn oversized_message_is_too_big() {
    violation_closes_with(
        Message::Binary(Bytes::from(vec![4u8; frame::MAX_FRAME + 100])),
        1009,
    );
}

#[test]
fn a_silent_peer_is_declared_dead_and_streams_fail() {
    on_own_executor(|ex| async move {
        // The raw side never reads, so it never answers pings.
        let (_raw, r) = ws_pair().await;
        let cfg = SessionConfig {
            keepalive: Duration::from_millis(100),
            ..SessionConfig::default()
        };
        let (relay, end) = relay_over(&ex, r, cfg);
        let reason = deadline("dead peer", end).await;
        assert_eq!(reason, CloseReason::PeerDead);
        assert!(matches!(
            relay.open(dial("x")).await,
            Err(OpenError::Closed(_))
        ));
    });
}

#[test]
fn session_end_fails_open_streams() {
    on_own_executor(|ex| async move {
        let p = sessions(&ex, SessionConfig::default()).await;
        let relay = p.relay.clone();
        let acc = ex.spawn(async move { relay.accept().await.unwrap().accept() });
        let s = p.client.open(dial("x")).await.unwrap();
        let _held = acc.await;
        p.relay.close("test over");
        let mut r = s.clone();
        let mut buf = [0u8; 8];
        let res = deadline("read after session end", r.read(&mut buf)).await;
        assert!(res.is_err(), "{res:?}");
        assert_eq!(
            deadline("client end", p.client_end).await,
            CloseReason::PeerClosed
        );
        drop(p.relay_end);
    });
}

#[test]
fn early_data_rides_with_the_open_and_a_refusal_fails_the_stream() {
    on_own_executor(|ex| async move {
        let p = sessions(&ex, SessionConfig::default()).await;
        // Accepted: bytes written before OPEN_OK arrive, and more than EARLY_DATA waits for it.
        let s = p.client.open_early(dial("early")).unwrap();
        let mut w = s.clone();
        let data = vec![5u8; frame::EARLY_DATA as usize + 5000];
        let writer = ex.spawn(async move {
            w.write_all(&data).await.unwrap();
            w.close().await.unwrap();
        });
        let inc = deadline("incoming", p.relay.accept()).await.unwrap();
        let mut stream = inc.accept();
        let mut got = Vec::new();
        deadline("early data", stream.read_to_end(&mut got))
            .await
            .unwrap();
        assert_eq!(got.len(), frame::EARLY_DATA as usize + 5000);
        deadline("writer", writer).await;
        // Refused: the early bytes are dropped and the opener's reads fail.
        let s = p.client.open_early(dial("nope")).unwrap();
        let mut w = s.clone();
        w.write_all(b"hello?").await.unwrap();
        let inc = deadline("incoming", p.relay.accept()).await.unwrap();
        inc.refuse(RefuseCode::Forbidden, "not here");
        let mut r = s.clone();
        let mut buf = [0u8; 4];
        let res = deadline("refused read", r.read(&mut buf)).await;
        assert_eq!(
            res.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
    });
}

#[test]
fn a_flood_of_session_frames_is_a_protocol_error() {
    on_own_executor(|ex| async move {
        let (mut raw, r) = ws_pair().await;
        // Nobody handles this relay's session frames, so they pile up until the cap.
        let (_relay, end) = relay_over(&ex, r, SessionConfig::default());
        for i in 0..400u32 {
            let bind = Frame::Bind {
                bind_id: i + 1,
                addr: String::new(),
                port: 0,
                mode: BindMode::Forward,
                pool: None,
            };
            if raw
                .send(Message::Binary(bind.to_bytes().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        match deadline("session end", end).await {
            CloseReason::Protocol(1002, why) => assert!(why.contains("session frames"), "{why}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn close_ends_the_session_even_when_the_path_is_stuck() {
    on_own_executor(|ex| async move {
        // A pipe that holds 64 bytes and a peer that never reads: the writer gets stuck.
        let (a, b) = duplex(64);
        let _raw = WebSocketStream::from_raw_socket(a, Role::Client, Some(ws_config())).await;
        let r = WebSocketStream::from_raw_socket(b, Role::Server, Some(ws_config())).await;
        let (relay, end) = relay_over(&ex, r, SessionConfig::default());
        relay.send_session_frame(Frame::GoAway {
            reason: "x".repeat(200),
        });
        relay.close("shutting down");
        match deadline("stuck session ends", end).await {
            CloseReason::Transport(why) => assert!(why.contains("could not be sent"), "{why}"),
            other => panic!("{other:?}"),
        }
    });
}

/// Counts wake-ups (to see who wakes a future, and when).
#[derive(Default)]
struct WakeCount(std::sync::atomic::AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn streams_done_is_woken_by_the_last_stream_leaving_not_by_a_timer() {
    on_own_executor(|ex| async move {
        let p = sessions(&ex, SessionConfig::default()).await;
        let _echo = echo_all(&ex, p.relay.clone());
        let a = deadline("open", p.client.open(dial("a")))
            .await
            .expect("open");
        let b = deadline("open", p.client.open(dial("b")))
            .await
            .expect("open");
        let count = Arc::new(WakeCount::default());
        let waker = std::task::Waker::from(count.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut done = Box::pin(p.client.streams_done());
        assert!(done.as_mut().poll(&mut cx).is_pending());
        drop(a);
        assert_eq!(p.client.stream_count(), 1);
        assert!(
            done.as_mut().poll(&mut cx).is_pending(),
            "one stream is left"
        );
        let before = count.0.load(std::sync::atomic::Ordering::SeqCst);
        // The last stream leaves: the waiter is woken right then, by the table change.
        drop(b);
        assert_eq!(p.client.stream_count(), 0);
        let after = count.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            after > before,
            "streams_done not woken when the last stream left"
        );
        assert!(done.as_mut().poll(&mut cx).is_ready());
        drop(p.client_end);
    });
}
