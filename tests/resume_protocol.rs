//! Resumable sessions at the session layer, over in-memory pipes on an executor each test owns:
//! a session continues on a second connection with its streams; and the peer's ACK and RESUME
//! frames are checked (counts it cannot have, frames in the wrong place, a peer that never
//! acknowledges).

#[path = "common/own_executor.rs"]
mod own_executor;
#[path = "common/pipe.rs"]
mod pipe;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::tungstenite::{Bytes, Message};
use burrow::metrics::Metrics;
use burrow::tunnel::ws::ws_config;
use burrow::tunnel::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use futures_lite::{FutureExt, StreamExt};
use own_executor::{deadline, on_own_executor};
use pipe::{End, duplex};
use smol::Executor;
use std::sync::Arc;
use std::sync::atomic::Ordering;

async fn ws_pair() -> (WebSocketStream<End>, WebSocketStream<End>) {
    let (a, b) = duplex(256 * 1024);
    let c = WebSocketStream::from_raw_socket(a, Role::Client, Some(ws_config())).await;
    let r = WebSocketStream::from_raw_socket(b, Role::Server, Some(ws_config())).await;
    (c, r)
}

fn resumable() -> SessionConfig {
    SessionConfig {
        resumable: true,
        ..SessionConfig::default()
    }
}

/// A relay session over `ws` with `cfg`, its driver running on `ex`.
fn relay_over(
    ex: &Arc<Executor<'static>>,
    ws: WebSocketStream<End>,
    cfg: SessionConfig,
) -> (Session, smol::Task<CloseReason>) {
    let (relay, driver) = Session::new(
        Side::Relay,
        cfg,
        "relay".into(),
        Arc::new(Metrics::default()),
    );
    (relay, ex.spawn(driver.run(ws)))
}

/// Sends `msgs` from a raw peer to a relay session with `cfg`; the close code it gets back.
fn violation_closes_with(cfg: SessionConfig, msgs: Vec<Message>, want: u16) {
    on_own_executor(|ex| async move {
        let (mut raw, r) = ws_pair().await;
        let (relay, end) = relay_over(&ex, r, cfg);
        for m in msgs {
            raw.send(m).await.unwrap();
        }
        let code = deadline("close frame", async {
            loop {
                match raw.next().await {
                    Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                    Some(Ok(_)) => continue,
                    other => panic!("expected a close frame, got {other:?}"),
                }
            }
        })
        .await;
        assert_eq!(code, want);
        match deadline("session end", end).await {
            CloseReason::Protocol(c, _) => assert_eq!(c, want),
            other => panic!("{other:?}"),
        }
        assert!(relay.is_closed());
    });
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
        // The peer reads everything and acknowledges nothing: 4 MiB of frames other than DATA
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
        // About 4 MiB of 210-byte frames, never much more.
        assert!((19_000..=21_000).contains(&frames), "{frames} frames");
    });
}

#[test]
fn streams_continue_on_a_second_connection_with_nothing_lost() {
    on_own_executor(|ex| async move {
        let m = Arc::new(Metrics::default());
        let (c1, r1) = ws_pair().await;
        let (client, cd) = Session::new(Side::Client, resumable(), "client".into(), m.clone());
        let (relay, rd) = Session::new(Side::Relay, resumable(), "relay".into(), m.clone());
        let (client_end, relay_end) = (ex.spawn(cd.run(c1)), ex.spawn(rd.run(r1)));
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
