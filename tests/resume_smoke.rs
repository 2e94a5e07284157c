//! Smoke: a stream through -L keeps going across a cut connection (the lead's quick check;
//! tests/resume.rs has the fault-injection suite).

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::relay::RelayConfig;
use common::tunnel::*;
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use std::sync::atomic::Ordering;

/// An echo server, a relay with `cfg`, a forwarder in front of it that can cut the link, and a
/// connected client with `-L 127.0.0.1:0:ECHO` (its address: `locals[0]`).
async fn echo_through_a_forwarder(
    sp: &burrow::exec::Spawner,
    cfg: RelayConfig,
) -> (smol::Task<()>, RunningRelay, Forwarder, RunningClient) {
    let (echo, echo_task) = start_echo().await;
    let relay = start_relay(sp, cfg).await;
    let fwd = Forwarder::start(relay.addr).await;
    let url = format!("ws://{}/burrow", fwd.addr).parse().unwrap();
    let mut client = ClientConfig::new(url);
    client.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
    let c = start_client(sp, client).await;
    c.wait("connected", |e| *e == Event::Connected).await;
    (echo_task, relay, fwd, c)
}

#[test]
fn an_echo_stream_continues_across_a_cut() {
    let _ = env_logger::builder().is_test(true).try_init();
    run(|sp| async move {
        let (_e, relay, fwd, c) = echo_through_a_forwarder(&sp, RelayConfig::default()).await;
        let mut s = TcpStream::connect(c.locals[0]).await.unwrap();
        let mut back = vec![0u8; 100_000];
        for round in 0..6u8 {
            let payload: Vec<u8> = (0..100_000u32).map(|i| (i as u8) ^ round).collect();
            s.write_all(&payload).await.unwrap();
            // Even rounds cut with the bytes in flight, odd ones after the echo came back.
            if round % 2 == 0 {
                fwd.cut();
            }
            within(10, "echo", s.read_exact(&mut back)).await.unwrap();
            assert_eq!(back, payload);
            if round % 2 == 1 {
                fwd.cut();
            }
            let e = c
                .wait("resumed", |e| matches!(e, Event::Resumed { .. }))
                .await;
            assert_eq!(e, Event::Resumed { streams: 1 });
        }
        // A side counts a resume once the other's RESUME arrived: a cut right after the
        // handshake can leave one side's count behind the other's.
        let resumes = |m: &burrow::metrics::Metrics| m.resumes.load(Ordering::Relaxed);
        eventually("both sides count resumes", || {
            resumes(&relay.metrics) >= 1 && resumes(&c.metrics) >= 1
        })
        .await;
    });
}

#[test]
fn a_returning_client_resumes_over_its_stale_connection() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        // The relay would take a minute to notice; the client notices in half a second.
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let fwd = Forwarder::start(relay.addr).await;
        let mut cfg = ClientConfig::new(format!("ws://{}/burrow", fwd.addr).parse().unwrap());
        cfg.session = burrow::tunnel::SessionConfig {
            keepalive: std::time::Duration::from_millis(150),
            ..Default::default()
        };
        cfg.remotes = vec![format!("127.0.0.1:0:{origin}").parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        let public = c.bound().await;
        fwd.freeze();
        c.wait("lost", |e| matches!(e, Event::Suspended { .. }))
            .await;
        c.wait("resumed", |e| matches!(e, Event::Resumed { .. }))
            .await;
        let mut s = within(10, "connect", TcpStream::connect(public))
            .await
            .unwrap();
        s.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        within(10, "response", s.read_to_string(&mut body))
            .await
            .unwrap();
        assert!(body.contains("GET /after"), "{body}");
        assert_eq!(
            relay.metrics.sessions.load(Ordering::Relaxed),
            1,
            "one session, on its new connection"
        );
    });
}

#[test]
fn a_relay_that_does_not_resume_resets_the_streams_as_before() {
    run(|sp| async move {
        let no_resume = RelayConfig {
            resume: false,
            ..RelayConfig::default()
        };
        let (_e, _relay, fwd, c) = echo_through_a_forwarder(&sp, no_resume).await;
        let mut s = TcpStream::connect(c.locals[0]).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        within(10, "echo", s.read_exact(&mut back)).await.unwrap();
        fwd.cut();
        // Not Suspended: the session ends with its connection, and a new one follows.
        c.wait("lost", |e| matches!(e, Event::Lost(_))).await;
        c.wait("connected again", |e| *e == Event::Connected).await;
        let mut rest = Vec::new();
        let read = within(10, "the stream ends", s.read_to_end(&mut rest)).await;
        assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");
        assert_eq!(c.metrics.resumes.load(Ordering::Relaxed), 0);
    });
}
