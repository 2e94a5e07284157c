//! Sessions that outlive their connection (issue 10): a fault-injecting link between client
//! and relay cuts (FIN, RST) or blackholes the connection in the middle of transfers over many
//! streams (here), or of an OPEN, a FIN, a RESET, a half-closed stream (`in_flight`); every
//! stream must continue intact. Past the relay's grace, after a relay restart, and with
//! `resume: false`, streams are reset as before.

mod common;
#[path = "resume/in_flight.rs"]
mod in_flight;
#[path = "resume/link.rs"]
mod link;
#[path = "resume/payload.rs"]
mod payload;

use burrow::client::{ClientConfig, Event};
use burrow::relay::RelayConfig;
use common::tunnel::{RunningClient, RunningRelay, eventually, start_client, start_relay};
use common::{run, start_echo, within};
use futures_lite::io::AsyncReadExt;
use link::{Cut, Link};
use payload::{Check, open_stream, plan, send, start_peer};
use smol::net::{Shutdown, TcpStream};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The client's keepalive when a test blackholes the link: a blackholed link is declared dead
/// after 3 intervals. Not shorter: three of these test binaries at once on 2 cores (debug
/// build) starve a session for a second now and then, and a 300 ms keepalive then declares
/// a live link dead before the test's cut.
const BLACKHOLE_KEEPALIVE: Duration = Duration::from_secs(1);
/// Streams at once in the transfer tests: half `-L` (client-opened), half `-R` (relay-opened).
const STREAMS: u64 = 16;
/// Bytes each way on each of them.
const PER_STREAM: u64 = 1024 * 1024;
/// Mux frame types (docs/PROTOCOL.md) the blackhole tests look for.
const OPEN: u8 = 0x01;
const FIN: u8 = 0x06;
const RESET: u8 = 0x07;

/// Logs to the test's output with `RUST_LOG=debug` (shown for failing tests).
fn logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A client configured to reach the relay through `link` (the default keepalive, 20 s: a
/// FIN or RST cut is noticed at once; nothing but the cut ends a connection).
fn client_cfg(link: &Link) -> ClientConfig {
    let mut cfg = ClientConfig::new(format!("ws://{}/burrow", link.addr).parse().unwrap());
    cfg.max_backoff = Duration::from_millis(300);
    cfg
}

/// Panics if the connection was lost before the test cut it (the counts a test expects of
/// the suspension would be the wrong ones).
fn no_loss_before_the_cut(c: &RunningClient) {
    while let Ok(e) = c.events.try_recv() {
        assert!(
            !matches!(e, Event::Lost(_) | Event::Suspended { .. }),
            "the connection was lost before the cut: {e:?}"
        );
    }
}

/// The next change of the session's state (connected, lost, suspended, resumed).
async fn next_state(c: &RunningClient, what: &str) -> Event {
    c.wait(what, |e| {
        matches!(
            e,
            Event::Connected | Event::Lost(_) | Event::Suspended { .. } | Event::Resumed { .. }
        )
    })
    .await
}

/// Asserts the link loss was a suspension of `streams` streams, then a resume of them.
async fn expect_resume(c: &RunningClient, streams: usize) {
    match next_state(c, "suspended").await {
        Event::Suspended { streams: n, .. } => {
            assert_eq!(n, streams, "streams held for the resume")
        }
        other => panic!("expected Suspended after the cut, got {other:?}"),
    }
    match next_state(c, "resumed").await {
        Event::Resumed { streams: n } => assert_eq!(n, streams, "streams resumed"),
        other => panic!("expected Resumed after the reconnect, got {other:?}"),
    }
}

fn assert_resumed_both(relay: &RunningRelay, c: &RunningClient) {
    assert!(
        relay.metrics.resumes.load(Relaxed) > 0,
        "relay counted no resume"
    );
    assert!(
        c.metrics.resumes.load(Relaxed) > 0,
        "client counted no resume"
    );
}

/// 16 streams, 1 MiB each way, half through `-L` and half through `-R`; every sender stops at
/// a gate, the link is cut, the senders go on; once per cut in `cuts`. Every byte arrives,
/// checked, on every stream, and no stream is reset.
fn transfers_survive(cuts: &'static [Cut]) {
    logs();
    run(|sp| async move {
        let started = std::time::Instant::now();
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let link = Link::start(relay.addr).await;
        let (plan, mut controls) = plan(cuts.len());
        let (peer, outcomes, _p) = start_peer(PER_STREAM, plan.clone()).await;
        let mut cfg = client_cfg(&link);
        if cuts.contains(&Cut::Blackhole) {
            cfg.session.keepalive = BLACKHOLE_KEEPALIVE;
        }
        cfg.locals = vec![format!("127.0.0.1:0:{peer}").parse().unwrap()];
        cfg.remotes = vec![format!("127.0.0.1:0:{peer}").parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        c.wait("connected", |e| *e == Event::Connected).await;
        let public = c.bound().await;

        let streams: Vec<_> = (0..STREAMS)
            .map(|id| {
                let to = if id % 2 == 0 { c.locals[0] } else { public };
                smol::spawn(open_stream(to, id, PER_STREAM, plan.clone()))
            })
            .collect();
        let progress = plan.progress.clone();
        drop(plan);
        let parts = cuts.len() as u64 + 1;
        for (k, (&how, ctl)) in cuts.iter().zip(&mut controls).enumerate() {
            // Both ends of every stream wait at the gate: the cut lands mid-transfer.
            ctl.wait_halfway(2 * STREAMS).await;
            if k > 0 {
                // ... and after the last resume carried data both ways on every stream (else
                // the cut could land in the resume itself, and no data would cross in between).
                let gone_before = PER_STREAM * k as u64 / parts;
                eventually("data on the resumed connection", || {
                    progress.all_past(2 * STREAMS as usize, gone_before)
                })
                .await;
            }
            no_loss_before_the_cut(&c);
            let cut = std::time::Instant::now();
            link.cut(how);
            // The rest is sent while the link is down (or into the blackhole).
            ctl.open();
            expect_resume(&c, STREAMS as usize).await;
            log::info!("{how:?} cut: resumed after {:?}", cut.elapsed());
        }

        for (id, s) in streams.into_iter().enumerate() {
            let done = within(20, &format!("stream {id} (opener)"), s).await;
            done.unwrap_or_else(|e| panic!("{cuts:?}: {e}"));
        }
        for _ in 0..STREAMS {
            let done = within(20, "peer ends", outcomes.recv()).await.unwrap();
            done.unwrap_or_else(|e| panic!("{cuts:?}: {e}"));
        }
        let replayed = |m: &burrow::metrics::Metrics| m.replayed_bytes.load(Relaxed);
        log::info!(
            "{cuts:?}: {} s in all; replayed: client {} bytes, relay {} bytes",
            started.elapsed().as_secs_f64(),
            replayed(&c.metrics),
            replayed(&relay.metrics)
        );
        let n = cuts.len() as u64;
        let resumes = |m: &burrow::metrics::Metrics| m.resumes.load(Relaxed);
        assert!(
            resumes(&relay.metrics) >= n,
            "relay resumes: {}",
            resumes(&relay.metrics)
        );
        assert!(
            resumes(&c.metrics) >= n,
            "client resumes: {}",
            resumes(&c.metrics)
        );
        assert!(link.accepted() > n, "the client came back through the link");
        if cuts.contains(&Cut::Blackhole) {
            // What went into the hole came back only by replay.
            let (up, down) = (link.swallowed_up(), link.swallowed_down());
            log::info!("swallowed: {up} bytes from the client, {down} from the relay");
            assert!(up > 0, "nothing from the client went into the blackhole");
            // Either side may have had nothing numbered in the hole (the relay, when it was
            // waiting for credit the client sent into it), but not both.
            let both = replayed(&c.metrics) + replayed(&relay.metrics);
            assert!(both > 0, "nothing was replayed");
        }
    });
}

#[test]
fn transfers_survive_a_fin_cut() {
    transfers_survive(&[Cut::Fin]);
}

#[test]
fn transfers_survive_a_reset() {
    transfers_survive(&[Cut::Rst]);
}

#[test]
fn transfers_survive_a_blackhole() {
    transfers_survive(&[Cut::Blackhole]);
}

#[test]
fn transfers_survive_three_cuts_in_a_row() {
    transfers_survive(&[Cut::Fin, Cut::Rst, Cut::Blackhole]);
}

/// A relay, a link to it, and a client through the link with one `-L` to `target`.
async fn through_link(
    sp: &burrow::exec::Spawner,
    relay_cfg: RelayConfig,
    target: SocketAddr,
    tune: impl FnOnce(&mut ClientConfig),
) -> (RunningRelay, Link, RunningClient) {
    let relay = start_relay(sp, relay_cfg).await;
    let link = Link::start(relay.addr).await;
    let mut cfg = client_cfg(&link);
    cfg.locals = vec![format!("127.0.0.1:0:{target}").parse().unwrap()];
    tune(&mut cfg);
    let c = start_client(sp, cfg).await;
    c.wait("connected", |e| *e == Event::Connected).await;
    (relay, link, c)
}

/// Sends `n` checked bytes (payload `seed`) and reads them back from an echo.
async fn round_trip(s: &mut TcpStream, seed: u64, n: u64) -> Result<(), String> {
    send(s, seed, 0, n).await?;
    Check::new(seed).read_upto(&mut s.clone(), n).await
}

#[test]
fn past_the_grace_streams_are_reset_and_a_new_session_starts() {
    logs();
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        const GRACE: Duration = Duration::from_secs(1);
        let relay_cfg = RelayConfig {
            grace: GRACE,
            ..RelayConfig::default()
        };
        let tune = |cfg: &mut ClientConfig| {
            cfg.remotes = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        };
        let (relay, link, c) = through_link(&sp, relay_cfg, echo, tune).await;
        let public = c.bound().await;
        let mut local = TcpStream::connect(c.locals[0]).await.unwrap();
        let mut visitor = TcpStream::connect(public).await.unwrap();
        within(10, "-L echo", round_trip(&mut local, 30, 1024))
            .await
            .unwrap();
        within(10, "-R echo", round_trip(&mut visitor, 31, 1024))
            .await
            .unwrap();

        // The client cannot come back for longer than the grace.
        no_loss_before_the_cut(&c);
        link.refuse(true);
        link.cut(Cut::Rst);
        let cut = std::time::Instant::now();
        match next_state(&c, "suspended").await {
            Event::Suspended { streams, .. } => assert_eq!(streams, 2),
            other => panic!("expected Suspended after the cut, got {other:?}"),
        }
        // The relay gives the session up: its end of the -R stream is reset.
        let mut buf = [0u8; 1];
        let ended = within(
            10,
            "the relay resets the -R visitor",
            visitor.read(&mut buf),
        )
        .await;
        assert!(!matches!(ended, Ok(1..)), "visitor read {ended:?}");
        assert!(
            cut.elapsed() >= GRACE.mul_f64(0.9),
            "the -R stream was reset {:?} after the cut, within the grace",
            cut.elapsed()
        );
        link.refuse(false);
        // Failed attempts say `lost: …; resuming 2 streams`; then the relay no longer has the
        // session: `lost` (for good) and a new session.
        let mut ended = None;
        loop {
            match next_state(&c, "connected again").await {
                Event::Connected => break,
                Event::Suspended { .. } => continue,
                Event::Lost(why) => ended = Some(why),
                other => panic!("expected a new session, got {other:?}"),
            }
        }
        assert!(ended.is_some(), "no `lost` before the new session");
        // The -L stream was reset with the session it belonged to.
        let ended = within(10, "the -L stream ends", local.read(&mut buf)).await;
        assert!(!matches!(ended, Ok(1..)), "-L read {ended:?}");
        // The new session works.
        let mut again = TcpStream::connect(c.locals[0]).await.unwrap();
        within(
            10,
            "echo on the new session",
            round_trip(&mut again, 32, 1024),
        )
        .await
        .unwrap();
        assert_eq!(relay.metrics.resumes.load(Relaxed), 0);
        assert_eq!(c.metrics.resumes.load(Relaxed), 0);
    });
}

#[test]
fn a_relay_restart_resets_streams_and_says_so() {
    logs();
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let (first, link, c) = through_link(&sp, RelayConfig::default(), echo, |_| {}).await;
        let mut local = TcpStream::connect(c.locals[0]).await.unwrap();
        within(10, "echo", round_trip(&mut local, 60, 1024))
            .await
            .unwrap();
        // The relay is gone (its process restarted): the client's next connection reaches a
        // relay that never had its session.
        let second = start_relay(&sp, RelayConfig::default()).await;
        no_loss_before_the_cut(&c);
        link.retarget(second.addr);
        link.cut(Cut::Rst);
        drop(first);
        match next_state(&c, "suspended").await {
            Event::Suspended { streams, .. } => assert_eq!(streams, 1),
            other => panic!("expected Suspended after the cut, got {other:?}"),
        }
        match next_state(&c, "lost").await {
            Event::Lost(_) => {}
            other => panic!("expected `lost` (the relay no longer had the session), got {other:?}"),
        }
        match next_state(&c, "connected").await {
            Event::Connected => {}
            other => panic!("expected a new session, got {other:?}"),
        }
        let mut buf = [0u8; 1];
        let ended = within(10, "the -L stream ends", local.read(&mut buf)).await;
        assert!(!matches!(ended, Ok(1..)), "-L read {ended:?}");
        let mut again = TcpStream::connect(c.locals[0]).await.unwrap();
        within(10, "echo", round_trip(&mut again, 61, 1024))
            .await
            .unwrap();
        assert_eq!(second.metrics.resumes.load(Relaxed), 0);
        assert_eq!(c.metrics.resumes.load(Relaxed), 0);
    });
}

#[test]
fn without_resume_a_cut_resets_streams() {
    logs();
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let tune = |cfg: &mut ClientConfig| cfg.resume = false;
        let (relay, link, c) = through_link(&sp, RelayConfig::default(), echo, tune).await;
        let mut local = TcpStream::connect(c.locals[0]).await.unwrap();
        within(10, "echo", round_trip(&mut local, 40, 1024))
            .await
            .unwrap();
        no_loss_before_the_cut(&c);
        link.cut(Cut::Fin);
        match next_state(&c, "lost").await {
            Event::Lost(_) => {}
            other => panic!("expected Lost without resume, got {other:?}"),
        }
        let mut buf = [0u8; 1];
        let ended = within(10, "the -L stream ends", local.read(&mut buf)).await;
        assert!(!matches!(ended, Ok(1..)), "-L read {ended:?}");
        match next_state(&c, "connected").await {
            Event::Connected => {}
            other => panic!("expected Connected, got {other:?}"),
        }
        assert_eq!(relay.metrics.resumes.load(Relaxed), 0);
        assert_eq!(c.metrics.resumes.load(Relaxed), 0);
    });
}
