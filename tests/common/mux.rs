//! Sessions over an in-memory pipe for the session suites (no sockets): a WebSocket pair, a
//! relay session on an executor of the test's own, and a raw peer that breaks the protocol.
#![allow(dead_code)]

use super::own_executor::{deadline, on_own_executor};
use super::pipe::{End, duplex};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::Role;
use burrow::metrics::Metrics;
use burrow::tunnel::ws::ws_config;
use burrow::tunnel::*;
use futures_lite::StreamExt;
use smol::Executor;
use std::sync::Arc;

/// Two ends of one WebSocket over a 256 KiB pipe: (client, relay).
pub async fn ws_pair() -> (WebSocketStream<End>, WebSocketStream<End>) {
    let (a, b) = duplex(256 * 1024);
    let c = WebSocketStream::from_raw_socket(a, Role::Client, Some(ws_config())).await;
    let r = WebSocketStream::from_raw_socket(b, Role::Server, Some(ws_config())).await;
    (c, r)
}

/// A relay session over `ws`, its driver running on `ex`.
pub fn relay_over<S>(
    ex: &Arc<Executor<'static>>,
    ws: WebSocketStream<S>,
    cfg: SessionConfig,
) -> (Session, smol::Task<CloseReason>)
where
    S: futures_lite::io::AsyncRead + futures_lite::io::AsyncWrite + Unpin + Send + 'static,
{
    let (relay, driver) = Session::new(
        Side::Relay,
        cfg,
        "relay".into(),
        Arc::new(Metrics::default()),
    );
    (relay, ex.spawn(driver.run(ws)))
}

/// A raw WebSocket peer sends `msgs` to a relay session with `cfg`: the relay must close with
/// `want`, and its session must be over.
pub fn violation_closes_with(cfg: SessionConfig, msgs: Vec<Message>, want: u16) {
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
