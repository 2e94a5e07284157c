//! Session frames the role has not taken yet are bounded: a peer that sends more than 256 of
//! them, faster than they are handled, is breaking the protocol and the session ends (1002);
//! up to the bound, none is lost. (The queue is an unbounded channel capped by the
//! dispatcher, so an idle session does not hold 256 frame slots.)

#[path = "common/mux.rs"]
mod mux;
#[path = "common/own_executor.rs"]
mod own_executor;
#[path = "common/pipe.rs"]
mod pipe;

use async_tungstenite::tungstenite::{Bytes, Message};
use burrow::tunnel::*;
use mux::{relay_over, violation_closes_with, ws_pair};
use own_executor::{deadline, on_own_executor};

fn unbind(bind_id: u32) -> Message {
    Message::Binary(Bytes::from(Frame::Unbind { bind_id }.to_bytes()))
}

#[test]
fn more_than_256_unhandled_session_frames_end_the_session() {
    let flood = (0..257).map(unbind).collect();
    violation_closes_with(SessionConfig::default(), flood, 1002);
}

#[test]
fn up_to_256_unhandled_session_frames_all_arrive_in_order() {
    on_own_executor(|ex| async move {
        let (mut raw, r) = ws_pair().await;
        let (relay, _end) = relay_over(&ex, r, SessionConfig::default());
        for id in 0..256 {
            raw.send(unbind(id)).await.unwrap();
        }
        for want in 0..256 {
            let got = deadline("session frame", relay.session_frame()).await;
            assert_eq!(got, Some(Frame::Unbind { bind_id: want }));
        }
        assert!(!relay.is_closed());
    });
}

#[test]
fn an_open_that_crossed_our_go_away_is_served() {
    on_own_executor(|ex| async move {
        let (mut raw, r) = ws_pair().await;
        let (relay, _end) = relay_over(&ex, r, SessionConfig::default());
        relay.go_away("shutting down");
        // The peer opens a stream before it has read the GO_AWAY (it is still on the wire).
        let open = Frame::Open {
            id: 1,
            window: 256 * 1024,
            target: OpenTarget::Dial {
                host: "app".into(),
                port: 80,
            },
        };
        raw.send(Message::Binary(Bytes::from(open.to_bytes())))
            .await
            .unwrap();
        // It reaches the role to be served (within the drain), not refused.
        let incoming = deadline("the crossed OPEN", relay.accept()).await;
        assert!(incoming.is_some(), "the OPEN was refused");
    });
}
