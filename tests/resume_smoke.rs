//! Smoke: a stream through -L keeps going across a cut connection (the lead's quick check;
//! tests/resume.rs has the fault-injection suite).

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::relay::RelayConfig;
use common::tunnel::*;
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

#[test]
fn an_echo_stream_continues_across_a_cut() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let fwd = Forwarder::start(relay.addr).await;
        let url = format!("ws://{}/burrow", fwd.addr).parse().unwrap();
        let mut cfg = ClientConfig::new(url);
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        c.wait("connected", |e| *e == Event::Connected).await;
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
        let relay_resumes = || relay.metrics.resumes.load(std::sync::atomic::Ordering::Relaxed);
        eventually("the relay counts 6 resumes", || relay_resumes() >= 6).await;
        let client_resumes = c.metrics.resumes.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(client_resumes, 6);
    });
}
