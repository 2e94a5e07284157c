//! The relay's lame duck (issue 12): once shutdown begins, `/readyz` answers 503 at once (on
//! the public port and on `--admin`) while the relay still accepts and serves everything for
//! `lame_duck`; then it drains as before. An abort skips the rest of the lame duck.

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::relay::{Relay, RelayConfig};
use common::tunnel::{RunningClient, run_relay, start_client};
use common::{lo, run, send_raw, start_echo, within};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use std::net::SocketAddr;
use std::time::Duration;

/// The status of `GET path` on `addr`.
async fn status(addr: SocketAddr, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    send_raw(addr, req.as_bytes()).await.0.status
}

/// Polls `GET path` on `addr` (bounded) until it answers `want`.
async fn eventually_status(addr: SocketAddr, path: &str, want: u16) {
    within(10, &format!("{path} answering {want}"), async {
        while status(addr, path).await != want {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A round trip through `addr` to the echo server behind it: a new connection, bytes out and
/// the same bytes back.
async fn echo_through(addr: SocketAddr, what: &str) {
    let mut s = within(10, what, TcpStream::connect(addr)).await.unwrap();
    echo_on(&mut s, what).await;
}

/// Bytes out on `s` and the same bytes back (the stream stays open).
async fn echo_on(s: &mut TcpStream, what: &str) {
    let msg = format!("through the relay: {what}");
    s.write_all(msg.as_bytes()).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    within(10, what, s.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, msg.as_bytes(), "{what}");
}

/// A client with `-R 127.0.0.1:0:echo` and `-L 127.0.0.1:0:echo`, connected and bound;
/// returns it and the public address of its `-R`.
async fn client_with_r_and_l(
    sp: &burrow::exec::Spawner,
    relay: SocketAddr,
    echo: SocketAddr,
) -> (RunningClient, SocketAddr) {
    let mut cfg = ClientConfig::new(format!("ws://{relay}/burrow").parse().unwrap());
    cfg.remotes = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
    cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
    let client = start_client(sp, cfg).await;
    client.wait("connected", |e| *e == Event::Connected).await;
    let public = client.bound().await;
    (client, public)
}

#[test]
fn during_the_lame_duck_readyz_is_503_and_everything_is_still_served() {
    run(|sp| async move {
        let (echo, _echo) = start_echo().await;
        let cfg = RelayConfig {
            lame_duck: Duration::from_secs(60),
            admin: Some(lo()),
            ..RelayConfig::default()
        };
        let relay = Relay::bind(lo(), cfg).await.unwrap();
        let admin = relay.admin_addr().unwrap();
        let relay = run_relay(&sp, relay);
        let (client, public) = client_with_r_and_l(&sp, relay.addr, echo).await;
        let local = client.locals[0];
        assert_eq!(status(relay.addr, "/readyz").await, 200);
        assert_eq!(status(admin, "/readyz").await, 200);

        relay.shutdown.drain();
        eventually_status(relay.addr, "/readyz", 503).await;
        eventually_status(admin, "/readyz", 503).await;
        assert_eq!(status(relay.addr, "/healthz").await, 200);
        assert_eq!(status(admin, "/healthz").await, 200);

        // Still fully up: a new visitor on the -R port, a new -L stream, a new session.
        echo_through(public, "a new visitor on -R during the lame duck").await;
        echo_through(local, "a new -L stream during the lame duck").await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let late = start_client(&sp, cfg).await;
        late.wait("a new session connects", |e| *e == Event::Connected)
            .await;
        echo_through(late.locals[0], "-L of a session opened in the lame duck").await;
        assert!(
            !relay.task.is_finished(),
            "the relay runs through its lame duck"
        );

        // An abort skips the rest of the lame duck.
        relay.shutdown.abort();
        within(10, "run() returns after the abort", relay.task).await;
        drop((client, late));
    });
}

#[test]
fn after_a_short_lame_duck_the_relay_drains() {
    run(|sp| async move {
        let (echo, _echo) = start_echo().await;
        let cfg = RelayConfig {
            lame_duck: Duration::from_millis(300),
            ..RelayConfig::default()
        };
        let relay = run_relay(&sp, Relay::bind(lo(), cfg).await.unwrap());
        let (client, public) = client_with_r_and_l(&sp, relay.addr, echo).await;
        // A visitor whose stream is open when the drain begins.
        let mut visitor = within(10, "visitor", TcpStream::connect(public))
            .await
            .unwrap();
        echo_on(&mut visitor, "before the shutdown").await;

        relay.shutdown.drain();
        eventually_status(relay.addr, "/readyz", 503).await;
        // After the lame duck the relay stops accepting...
        within(10, "the relay stops accepting after its lame duck", async {
            while TcpStream::connect(relay.addr).await.is_ok() {
                smol::Timer::after(Duration::from_millis(20)).await;
            }
        })
        .await;
        // ...while the open stream finishes, and run() waits for it.
        echo_on(&mut visitor, "an open stream during the drain").await;
        assert!(
            !relay.task.is_finished(),
            "the drain waits for open streams"
        );
        drop(visitor);
        // GO_AWAY, with the reason, reached the client; the session ends with its streams.
        let going =
            |e: &Event| matches!(e, Event::Lost(why) if why.contains("relay shutting down"));
        client.wait("lost: relay shutting down", going).await;
        within(10, "run() returns once the streams end", relay.task).await;
    });
}
