//! A hostile peer speaking raw frames to a real relay session over an in-memory pipe: floods
//! that never read, too many unaccepted streams, early data, credit before OPEN_OK.

#[path = "common/own_executor.rs"]
mod own_executor;
#[path = "common/pipe.rs"]
mod pipe;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::Role;
use burrow::metrics::Metrics;
use burrow::tunnel::frame::EARLY_DATA;
use burrow::tunnel::session::{MAX_PENDING_STREAMS, MAX_QUEUED_NON_DATA};
use burrow::tunnel::ws::ws_config;
use burrow::tunnel::*;
use futures_lite::StreamExt;
use futures_lite::io::AsyncReadExt;
use own_executor::{deadline, on_own_executor};
use pipe::{End, duplex};
use smol::Executor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Polls `cond` every few ms until it holds (failing after a deadline).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    deadline(what, async {
        while !cond() {
            smol::Timer::after(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A raw client end and a relay session over an in-memory pipe of 256 KiB each way.
async fn relay_and_raw(
    ex: &Arc<Executor<'static>>,
    cfg: SessionConfig,
) -> (WebSocketStream<End>, Session, smol::Task<CloseReason>) {
    let (a, b) = duplex(256 * 1024);
    let raw = WebSocketStream::from_raw_socket(a, Role::Client, Some(ws_config())).await;
    let ws = WebSocketStream::from_raw_socket(b, Role::Server, Some(ws_config())).await;
    let (relay, driver) = Session::new(
        Side::Relay,
        cfg,
        "relay".into(),
        Arc::new(Metrics::default()),
    );
    (raw, relay, ex.spawn(driver.run(ws)))
}

async fn send(raw: &mut WebSocketStream<End>, frame: Frame) {
    raw.send(Message::Binary(frame.to_bytes().into()))
        .await
        .expect("send a frame");
}

/// The next frame from the session (pings skipped).
async fn next_frame(raw: &mut WebSocketStream<End>) -> Frame {
    loop {
        match raw.next().await {
            Some(Ok(Message::Binary(b))) => return Frame::decode(&b).expect("a valid frame"),
            Some(Ok(Message::Close(f))) => panic!("session closed: {f:?}"),
            Some(Ok(_)) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// The close code the session sends.
async fn close_code(raw: &mut WebSocketStream<End>) -> u16 {
    loop {
        match raw.next().await {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn open(id: u32) -> Frame {
    Frame::Open {
        id,
        window: 256 * 1024,
        target: OpenTarget::Dial {
            host: "x".into(),
            port: 1,
        },
    }
}

/// The nth stream id a client opens (1, 3, 5, ...).
fn client_id(n: usize) -> u32 {
    u32::try_from(2 * n + 1).unwrap()
}

#[test]
fn an_open_flood_that_never_reads_keeps_the_queue_bounded_and_the_peer_is_cut_off() {
    on_own_executor(|ex| async move {
        let cfg = SessionConfig {
            keepalive: Duration::from_millis(500),
            ..SessionConfig::default()
        };
        let (mut raw, relay, end) = relay_and_raw(&ex, cfg).await;
        // Nobody accepts: the first streams wait, the rest are refused, and the raw peer never
        // reads a single answer.
        const FLOOD: usize = 50_000;
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let _flood = ex.spawn(async move {
            for n in 0..FLOOD {
                let msg = Message::Binary(open(client_id(n)).to_bytes().into());
                if raw.send(msg).await.is_err() {
                    break;
                }
                counter.fetch_add(1, Relaxed);
            }
            std::future::pending::<()>().await
        });
        // Watch the queue until the session ends (it must: reading stopped, so the peer went
        // silent, and keepalive declares it dead).
        let mut peak = 0;
        until("session end", || {
            peak = peak.max(relay.queued_non_data_bytes());
            relay.close_reason().is_some()
        })
        .await;
        // One answer past the cap at most (the read that crossed it), and the flood did fill it.
        let slack = 256;
        assert!(
            peak <= MAX_QUEUED_NON_DATA + slack,
            "{peak} bytes of non-DATA frames queued (cap {MAX_QUEUED_NON_DATA})"
        );
        assert!(
            peak >= MAX_QUEUED_NON_DATA - slack,
            "the flood never reached the cap: peak {peak}"
        );
        assert!(
            sent.load(Relaxed) < FLOOD,
            "the peer could send all {FLOOD} OPENs: reading never stopped"
        );
        assert_eq!(deadline("driver", end).await, CloseReason::PeerDead);
        assert!(relay.refused_count() > 1000, "{}", relay.refused_count());
        eprintln!(
            "peak non-DATA queue {peak} bytes, {} OPENs sent of {FLOOD}",
            sent.load(Relaxed)
        );
    });
}

#[test]
fn opens_beyond_the_pending_cap_are_refused_with_too_many_streams() {
    on_own_executor(|ex| async move {
        let (mut raw, relay, _end) = relay_and_raw(&ex, SessionConfig::default()).await;
        for n in 0..=MAX_PENDING_STREAMS {
            send(&mut raw, open(client_id(n))).await;
        }
        let over = client_id(MAX_PENDING_STREAMS);
        match deadline("refusal", next_frame(&mut raw)).await {
            Frame::OpenRefused { id, code, reason } => {
                assert_eq!(id, over);
                assert_eq!(code, RefuseCode::TooManyStreams);
                assert!(reason.contains("waiting to be accepted"), "{reason}");
            }
            other => panic!("expected OPEN_REFUSED for stream {over}, got {other:?}"),
        }
        assert_eq!(relay.pending_streams(), MAX_PENDING_STREAMS);
        assert_eq!(relay.refused_count(), 1);
        // Accepting one makes room for one more.
        let first = deadline("accept", relay.accept()).await.unwrap().accept();
        assert_eq!(first.id(), 1);
        match deadline("open ok", next_frame(&mut raw)).await {
            Frame::OpenOk { id: 1, .. } => {}
            other => panic!("expected OPEN_OK for stream 1, got {other:?}"),
        }
        send(&mut raw, open(client_id(MAX_PENDING_STREAMS + 1))).await;
        until("a pending slot taken again", || {
            relay.pending_streams() == MAX_PENDING_STREAMS
        })
        .await;
        assert_eq!(relay.refused_count(), 1);
    });
}

#[test]
fn early_data_of_unaccepted_streams_reserves_early_data_of_the_budget() {
    on_own_executor(|ex| async move {
        let cfg = SessionConfig::default();
        let budget = i64::try_from(cfg.window_budget).unwrap();
        let early = i64::from(EARLY_DATA);
        let (mut raw, relay, _end) = relay_and_raw(&ex, cfg.clone()).await;
        // Every stream the peer may have pending arrives with all the early data it may send,
        // and a few more try beyond the cap.
        let extra = 5;
        for n in 0..MAX_PENDING_STREAMS + extra {
            let id = client_id(n);
            send(&mut raw, open(id)).await;
            let payload = vec![(n % 251) as u8; EARLY_DATA as usize];
            send(
                &mut raw,
                Frame::Data {
                    id,
                    payload: payload.into(),
                },
            )
            .await;
        }
        for n in MAX_PENDING_STREAMS..MAX_PENDING_STREAMS + extra {
            match deadline("refusal", next_frame(&mut raw)).await {
                Frame::OpenRefused {
                    id,
                    code: RefuseCode::TooManyStreams,
                    ..
                } => assert_eq!(id, client_id(n)),
                other => panic!(
                    "expected a refusal of stream {}, got {other:?}",
                    client_id(n)
                ),
            }
        }
        // Held for unaccepted streams: EARLY_DATA each, from the session budget, no more.
        assert_eq!(relay.pending_streams(), MAX_PENDING_STREAMS);
        let pending = i64::try_from(MAX_PENDING_STREAMS).unwrap();
        assert_eq!(relay.window_budget_left(), budget - pending * early);
        // Accepted: the early bytes are there, and the stream trades its reservation for a
        // full window whose OPEN_OK counts them.
        let mut s = deadline("accept", relay.accept()).await.unwrap().accept();
        let mut got = vec![0u8; EARLY_DATA as usize];
        deadline("early data", s.read_exact(&mut got))
            .await
            .unwrap();
        assert!(got.iter().all(|b| *b == 0));
        match deadline("open ok", next_frame(&mut raw)).await {
            Frame::OpenOk { id: 1, window } => assert_eq!(window, cfg.initial_window),
            other => panic!("expected OPEN_OK for stream 1, got {other:?}"),
        }
        let window = i64::from(cfg.initial_window);
        assert_eq!(
            relay.window_budget_left(),
            budget - (pending - 1) * early - window
        );
        // Refused (dropped unaccepted): every reservation comes back.
        for _ in 1..MAX_PENDING_STREAMS {
            drop(deadline("accept", relay.accept()).await.unwrap());
        }
        assert_eq!(relay.pending_streams(), 0);
        assert_eq!(relay.window_budget_left(), budget - window);
        drop(s);
        assert_eq!(relay.window_budget_left(), budget);
    });
}

#[test]
fn data_past_early_data_on_an_unaccepted_stream_is_a_protocol_error() {
    on_own_executor(|ex| async move {
        let (mut raw, _relay, end) = relay_and_raw(&ex, SessionConfig::default()).await;
        send(&mut raw, open(1)).await;
        for _ in 0..2 {
            let payload = vec![7u8; EARLY_DATA as usize / 2 + 1];
            if raw
                .send(Message::Binary(
                    Frame::Data {
                        id: 1,
                        payload: payload.into(),
                    }
                    .to_bytes()
                    .into(),
                ))
                .await
                .is_err()
            {
                break;
            }
        }
        assert_eq!(deadline("close frame", close_code(&mut raw)).await, 1002);
        match deadline("session end", end).await {
            CloseReason::Protocol(1002, why) => assert!(why.contains("window"), "{why}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn window_before_open_ok_is_a_protocol_error() {
    on_own_executor(|ex| async move {
        let (mut raw, relay, end) = relay_and_raw(&ex, SessionConfig::default()).await;
        let stream = relay
            .open_early(OpenTarget::Bound { bind_id: 1 })
            .expect("open");
        let id = match deadline("open", next_frame(&mut raw)).await {
            Frame::Open { id, .. } => id,
            other => panic!("expected OPEN, got {other:?}"),
        };
        assert_eq!(id, stream.id());
        // Credit before the answer: with it the opener could send past EARLY_DATA, and the
        // window in OPEN_OK would then be smaller than what it sent.
        send(
            &mut raw,
            Frame::Window {
                id,
                increment: u32::MAX - EARLY_DATA,
            },
        )
        .await;
        assert_eq!(deadline("close frame", close_code(&mut raw)).await, 1002);
        match deadline("session end", end).await {
            CloseReason::Protocol(1002, why) => assert!(why.contains("still opening"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut r = stream.clone();
        let mut buf = [0u8; 1];
        assert!(deadline("read", r.read(&mut buf)).await.is_err());
    });
}

#[test]
fn an_open_with_a_window_below_early_data_is_a_protocol_error() {
    on_own_executor(|ex| async move {
        let (mut raw, _relay, end) = relay_and_raw(&ex, SessionConfig::default()).await;
        send(
            &mut raw,
            Frame::Open {
                id: 1,
                window: EARLY_DATA - 1,
                target: OpenTarget::Bound { bind_id: 1 },
            },
        )
        .await;
        assert_eq!(deadline("close frame", close_code(&mut raw)).await, 1002);
        match deadline("session end", end).await {
            CloseReason::Protocol(1002, why) => assert!(why.contains("EARLY_DATA"), "{why}"),
            other => panic!("{other:?}"),
        }
    });
}
