//! Resumable sessions at the session layer, over in-memory pipes on an executor each test owns:
//! a session continues on a second connection with its streams; and the peer's ACK and RESUME
//! frames are checked (counts it cannot have, frames in the wrong place, a peer that never
//! acknowledges).

#[path = "common/mux.rs"]
mod mux;
#[path = "common/own_executor.rs"]
mod own_executor;
#[path = "common/pipe.rs"]
mod pipe;

use mux::{relay_over, violation_closes_with, ws_pair};

use async_tungstenite::tungstenite::{Bytes, Message};
use burrow::metrics::Metrics;
use burrow::tunnel::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use futures_lite::{FutureExt, StreamExt};
use own_executor::{deadline, on_own_executor};
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn resumable() -> SessionConfig {
    SessionConfig {
        resumable: true,
        ..SessionConfig::default()
    }
}

/// A resumable client and relay session on one connection, their drivers running on `ex`,
/// sharing one `Metrics`.
struct Pair {
    m: Arc<Metrics>,
    client: Session,
    relay: Session,
    client_end: smol::Task<CloseReason>,
    relay_end: smol::Task<CloseReason>,
}

async fn resumable_pair(ex: &Arc<smol::Executor<'static>>) -> Pair {
    let m = Arc::new(Metrics::default());
    let (c1, r1) = ws_pair().await;
    let (client, cd) = Session::new(Side::Client, resumable(), "client".into(), m.clone());
    let (relay, rd) = Session::new(Side::Relay, resumable(), "relay".into(), m.clone());
    Pair {
        m,
        client,
        relay,
        client_end: ex.spawn(cd.run(c1)),
        relay_end: ex.spawn(rd.run(r1)),
    }
}

fn frame(f: Frame) -> Message {
    Message::Binary(Bytes::from(f.to_bytes()))
}

#[test]
fn ack_on_a_session_that_is_not_resumable_is_a_protocol_error() {
    let ack = frame(Frame::Ack { received: 0 });
    violation_closes_with(SessionConfig::default(), vec![ack], 1002);
}

#[test]
fn an_ack_of_frames_never_sent_is_a_protocol_error() {
    let ack = frame(Frame::Ack { received: 1 });
    violation_closes_with(resumable(), vec![ack], 1002);
}

#[test]
fn resume_in_the_middle_of_a_connection_is_a_protocol_error() {
    let resume = frame(Frame::Resume { received: 0 });
    violation_closes_with(resumable(), vec![resume], 1002);
}

#[test]
fn a_resumed_connection_must_start_with_resume() {
    on_own_executor(|ex| async move {
        let (raw, r) = ws_pair().await;
        let (relay, end) = relay_over(&ex, r, resumable());
        // The first connection is lost: the session waits for the next.
        drop(raw);
        let reason = deadline("first connection ends", end).await;
        assert!(reason.is_link_failure(), "{reason:?}");
        assert!(!relay.is_closed());
        let (mut raw, r) = ws_pair().await;
        let end = ex.spawn(relay.resume_driver().run(r));
        // Our RESUME arrives first...
        match deadline("relay's RESUME", raw.next()).await {
            Some(Ok(Message::Binary(b))) => {
                assert_eq!(Frame::decode(&b), Ok(Frame::Resume { received: 0 }))
            }
            other => panic!("{other:?}"),
        }
        // ...but the peer starts with something else.
        raw.send(frame(Frame::GoAway { reason: "x".into() }))
            .await
            .unwrap();
        match deadline("session end", end).await {
            CloseReason::Protocol(1002, why) => assert!(why.contains("RESUME first"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(relay.is_closed());
    });
}

#[test]
fn a_peer_that_never_acknowledges_is_cut_off_at_the_cap() {
    on_own_executor(|ex| async move {
        let (mut raw, r) = ws_pair().await;
        let (relay, end) = relay_over(&ex, r, resumable());
        // The peer reads everything and acknowledges nothing: 1 MiB of frames other than DATA
        // is what the relay keeps for it, then it ends the session.
        let reader = ex.spawn(async move {
            let mut frames = 0u64;
            while let Some(Ok(m)) = raw.next().await {
                if matches!(m, Message::Binary(_)) {
                    frames += 1;
                }
            }
            frames
        });
        let reason = "r".repeat(200);
        let mut sent = 0u32;
        let ended = deadline("the relay ends the session", async {
            loop {
                relay.send_session_frame(Frame::BindRefused {
                    bind_id: sent,
                    reason: reason.clone(),
                });
                sent += 1;
                if sent % 64 == 0 {
                    futures_lite::future::yield_now().await;
                    if relay.is_closed() {
                        return;
                    }
                }
            }
        });
        ended
            .or(async { drop(deadline("driver", end).await) })
            .await;
        let why = deadline("close reason", async {
            loop {
                if let Some(r) = relay.close_reason() {
                    return r;
                }
                futures_lite::future::yield_now().await;
            }
        })
        .await;
        assert!(
            why.contains("(1008)") && why.contains("acknowledge"),
            "{why}"
        );
        let frames = deadline("reader", reader).await;
        // About 1 MiB of 210-byte frames (4,993), never much more.
        assert!((4_900..=5_100).contains(&frames), "{frames} frames");
    });
}

#[test]
fn streams_continue_on_a_second_connection_with_nothing_lost() {
    on_own_executor(|ex| async move {
        let Pair {
            m,
            client,
            relay,
            client_end,
            relay_end,
        } = resumable_pair(&ex).await;
        // An echo on the relay's side.
        let acceptor = relay.clone();
        let _echo = ex.spawn(async move {
            let s = acceptor.accept().await.unwrap().accept();
            let (r, mut w) = (s.clone(), s);
            futures_lite::io::copy(r, &mut w).await.ok();
            w.close().await.ok();
        });
        let s = client.open(OpenTarget::Bound { bind_id: 1 }).await.unwrap();
        let (mut r, mut w) = (s.clone(), s);
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = ex.spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.close().await.unwrap();
        });
        let mut back = vec![0u8; 1_000_000];
        deadline("first third", r.read_exact(&mut back))
            .await
            .unwrap();
        // The connection dies under the transfer; both sessions wait for the next one.
        client_end.cancel().await;
        let relay_reason = deadline("relay notices", relay_end).await;
        assert!(relay_reason.is_link_failure(), "{relay_reason:?}");
        assert!(!client.is_closed() && !relay.is_closed());
        let (c2, r2) = ws_pair().await;
        let _c = ex.spawn(client.resume_driver().run(c2));
        let _r = ex.spawn(relay.resume_driver().run(r2));
        let mut rest = Vec::new();
        deadline("the rest", r.read_to_end(&mut rest))
            .await
            .unwrap();
        back.extend_from_slice(&rest);
        assert_eq!(back.len(), payload.len());
        assert!(back == payload, "the echo differs from what was sent");
        deadline("writer", writer).await;
        assert_eq!(m.resumes.load(Ordering::Relaxed), 2, "both sides resumed");
    });
}

#[test]
fn open_fin_and_reset_made_while_the_connection_is_down_arrive_once_it_is_back() {
    on_own_executor(|ex| async move {
        let Pair {
            m: _,
            client,
            relay,
            client_end,
            relay_end,
        } = resumable_pair(&ex).await;
        // Two streams up: one will be reset, one half-closed.
        let doomed = client.open_early(OpenTarget::Bound { bind_id: 1 }).unwrap();
        let doomed_far = deadline("accept 1", relay.accept()).await.unwrap().accept();
        let closing = client.open_early(OpenTarget::Bound { bind_id: 2 }).unwrap();
        let mut closing_far = deadline("accept 2", relay.accept()).await.unwrap().accept();
        // The connection goes down.
        client_end.cancel().await;
        assert!(deadline("relay notices", relay_end).await.is_link_failure());
        // Meanwhile the client resets one stream, finishes the other, and opens a third.
        doomed.reset(RefuseCode::Other, "changed my mind");
        let mut w = closing.clone();
        w.write_all(b"last words").await.unwrap();
        w.close().await.unwrap();
        let mut third = client.open_early(OpenTarget::Bound { bind_id: 3 }).unwrap();
        third.write_all(b"hello early").await.unwrap();
        // Back on a new connection: each arrives, once.
        let (c2, r2) = ws_pair().await;
        let _c = ex.spawn(client.resume_driver().run(c2));
        let _r = ex.spawn(relay.resume_driver().run(r2));
        let mut buf = [0u8; 1];
        let mut far = doomed_far.clone();
        let e = deadline("the reset", far.read(&mut buf)).await.unwrap_err();
        assert!(e.to_string().contains("changed my mind"), "{e}");
        let mut got = Vec::new();
        deadline("the FIN", closing_far.read_to_end(&mut got))
            .await
            .unwrap();
        assert_eq!(got, b"last words");
        let inc = deadline("the third OPEN", relay.accept()).await.unwrap();
        assert_eq!(inc.target, OpenTarget::Bound { bind_id: 3 });
        let mut third_far = inc.accept();
        let mut hello = [0u8; 11];
        deadline("early data", third_far.read_exact(&mut hello))
            .await
            .unwrap();
        assert_eq!(&hello, b"hello early");
        // Nothing twice: no second stream 3 waits, and the session goes on.
        assert!(
            futures_lite::future::poll_once(relay.accept())
                .await
                .is_none()
        );
        assert_eq!(
            relay.stream_count(),
            2,
            "the half-closed stream and the third"
        );
    });
}

/// The peer's first frame on a raw connection: its RESUME count.
async fn read_resume(raw: &mut async_tungstenite::WebSocketStream<pipe::End>) -> u64 {
    match deadline("RESUME", raw.next()).await {
        Some(Ok(Message::Binary(b))) => match Frame::decode(&b) {
            Ok(Frame::Resume { received }) => received,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_cut_in_the_middle_of_the_resume_handshake_is_resumed_again() {
    on_own_executor(|ex| async move {
        let Pair {
            m: _,
            client,
            relay,
            client_end,
            relay_end,
        } = resumable_pair(&ex).await;
        let s = client.open_early(OpenTarget::Bound { bind_id: 1 }).unwrap();
        let mut far = deadline("accept", relay.accept()).await.unwrap().accept();
        let (mut r, mut w) = (s.clone(), s);
        w.write_all(b"before").await.unwrap();
        let mut got = [0u8; 6];
        deadline("before", far.read_exact(&mut got)).await.unwrap();
        client_end.cancel().await;
        assert!(deadline("relay notices", relay_end).await.is_link_failure());
        // Written while the link is down, both ways.
        w.write_all(b"during").await.unwrap();
        far.write_all(b"answer").await.unwrap();
        // Connection 2: the relay sends its RESUME, the client's never comes (the link dies).
        let (mut raw, r2) = ws_pair().await;
        let relay_end = ex.spawn(relay.resume_driver().run(r2));
        read_resume(&mut raw).await;
        drop(raw);
        assert!(
            deadline("relay detaches again", relay_end)
                .await
                .is_link_failure()
        );
        // Connection 3: the client sends its RESUME, the relay's never comes.
        let (c3, mut raw) = ws_pair().await;
        let client_end = ex.spawn(client.resume_driver().run(c3));
        read_resume(&mut raw).await;
        drop(raw);
        assert!(
            deadline("client detaches again", client_end)
                .await
                .is_link_failure()
        );
        assert!(!client.is_closed() && !relay.is_closed());
        // Connection 4: both sides; everything arrives once.
        let (c4, r4) = ws_pair().await;
        let _c = ex.spawn(client.resume_driver().run(c4));
        let _r = ex.spawn(relay.resume_driver().run(r4));
        deadline("during", far.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"during");
        deadline("answer", r.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"answer");
        w.write_all(b"after!").await.unwrap();
        deadline("after", far.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"after!");
    });
}
