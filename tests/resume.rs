//! Sessions that outlive their connection (issue 10): a fault-injecting link between client
//! and relay cuts (FIN, RST) or blackholes the connection in the middle of transfers, of an
//! OPEN, of a FIN, of a half-closed stream; every stream must continue intact. Past the
//! relay's grace, and with `resume: false`, streams are reset as before.

mod common;
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
use payload::{Check, gate, open_stream, plan, send, start_peer};
use smol::net::{Shutdown, TcpStream};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Short, so that a blackholed link is declared dead (3 intervals) within a second.
const KEEPALIVE: Duration = Duration::from_millis(300);
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

/// A client configured to reach the relay through `link`.
fn client_cfg(link: &Link) -> ClientConfig {
    let mut cfg = ClientConfig::new(format!("ws://{}/burrow", link.addr).parse().unwrap());
    cfg.session.keepalive = KEEPALIVE;
    cfg.max_backoff = Duration::from_millis(300);
    cfg
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
            assert!(link.swallowed_up() > 0 && link.swallowed_down() > 0);
            assert!(replayed(&c.metrics) > 0, "client replayed nothing");
            assert!(replayed(&relay.metrics) > 0, "relay replayed nothing");
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
fn an_open_lost_in_the_cut_is_resumed() {
    logs();
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        // The default keepalive: nothing but the OPEN crosses the link while it is dark.
        let tune = |cfg: &mut ClientConfig| cfg.session.keepalive = Duration::from_secs(20);
        let (relay, link, c) = through_link(&sp, RelayConfig::default(), echo, tune).await;
        link.cut(Cut::Blackhole);
        let mut s = within(10, "connect -L", TcpStream::connect(c.locals[0]))
            .await
            .unwrap();
        // Early data too, in case the OPEN waits for some.
        within(10, "early data", send(&mut s, 1, 0, 1024))
            .await
            .unwrap();
        eventually("the OPEN went into the blackhole", || {
            link.swallowed_frames_up().contains(&OPEN)
        })
        .await;
        link.cut(Cut::Rst);
        expect_resume(&c, 1).await;
        within(10, "the rest", send(&mut s, 1, 1024, 64 * 1024))
            .await
            .unwrap();
        let mut echoed = Check::new(1);
        within(10, "echo after", echoed.read_upto(&mut s, 64 * 1024))
            .await
            .unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        within(10, "EOF", s.read_to_end(&mut rest)).await.unwrap();
        assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
        assert_resumed_both(&relay, &c);
    });
}

/// The far end for the FIN test: sends `b_half` bytes of payload 11 at once; reads and
/// checks `a_len` bytes of payload 10 (says so), then the EOF (says so), then sends `b_half`
/// more and its own FIN. Once `done` fires, its connection must not have been reset.
async fn fin_peer(
    a_len: u64,
    b_half: u64,
    done: smol::channel::Receiver<()>,
) -> (
    SocketAddr,
    smol::channel::Receiver<Result<&'static str, String>>,
    smol::Task<()>,
) {
    let l = smol::net::TcpListener::bind(common::lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = smol::channel::unbounded();
    let task = smol::spawn(async move {
        let Ok((s, _)) = l.accept().await else { return };
        let (mut r, mut w) = (s.clone(), s);
        let result = async {
            send(&mut w, 11, 0, b_half).await?;
            let mut a = Check::new(10);
            a.read_upto(&mut r, a_len).await?;
            tx.send(Ok("A")).await.ok();
            a.read_to_eof(&mut r, a_len).await?;
            tx.send(Ok("EOF")).await.ok();
            send(&mut w, 11, b_half, 2 * b_half).await?;
            w.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            done.recv().await.ok();
            // EOF exactly once: a FIN delivered twice (a protocol error) would have reset this
            // connection by now.
            let mut one = [0u8; 1];
            match r.read(&mut one).await {
                Ok(0) => Ok("end"),
                other => Err(format!("after the EOF: {other:?}")),
            }
        }
        .await;
        tx.send(result).await.ok();
    });
    (addr, rx, task)
}

#[test]
fn a_fin_lost_in_the_cut_arrives_once() {
    logs();
    run(|sp| async move {
        // Small, so that the link is idle when it goes dark: the blackhole starts at a frame.
        const A: u64 = 16 * 1024;
        const B_HALF: u64 = 16 * 1024;
        let (done, done_rx) = smol::channel::bounded(1);
        let (peer, said, _p) = fin_peer(A, B_HALF, done_rx).await;
        let heard = |what: &'static str| {
            let said = said.clone();
            async move {
                let got = within(10, what, said.recv()).await.unwrap();
                assert_eq!(got, Ok(what));
            }
        };
        // The default keepalive: no ping or ACK crosses the link while it is dark.
        let tune = |cfg: &mut ClientConfig| cfg.session.keepalive = Duration::from_secs(20);
        let (relay, link, c) = through_link(&sp, RelayConfig::default(), peer, tune).await;
        let mut s = within(10, "connect -L", TcpStream::connect(c.locals[0]))
            .await
            .unwrap();
        let mut r = s.clone();
        let mut b = Check::new(11);
        within(10, "A sent", send(&mut s, 10, 0, A)).await.unwrap();
        within(10, "first half of B", b.read_upto(&mut r, B_HALF))
            .await
            .unwrap();
        heard("A").await;
        // Everything but the FIN has crossed; the FIN goes into the blackhole.
        link.cut(Cut::Blackhole);
        s.shutdown(Shutdown::Write).unwrap();
        eventually("the FIN went into the blackhole", || {
            link.swallowed_frames_up().contains(&FIN)
        })
        .await;
        link.cut(Cut::Rst);
        expect_resume(&c, 1).await;
        heard("EOF").await;
        within(10, "the rest of B", b.read_to_eof(&mut r, 2 * B_HALF))
            .await
            .unwrap();
        drop((s, r));
        // The stream is over both ways; give the relay its chance to misbehave on it.
        assert_resumed_both(&relay, &c);
        eventually("the stream closed on the relay", || {
            relay.metrics.streams.load(Relaxed) == 0
        })
        .await;
        done.send(()).await.unwrap();
        heard("end").await;
    });
}

#[test]
fn a_half_closed_stream_finishes_across_a_cut() {
    logs();
    run(|sp| async move {
        const A: u64 = 64 * 1024;
        const B: u64 = 4 * 1024 * 1024;
        let (gate, mut ctl) = gate();
        let l = smol::net::TcpListener::bind(common::lo()).await.unwrap();
        let peer = l.local_addr().unwrap();
        let (eof_tx, eof_rx) = smol::channel::bounded(1);
        // The far end: reads A and its EOF, then streams B (pausing halfway at the gate).
        let far = smol::spawn(async move {
            let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
            let (mut r, mut w) = (s.clone(), s);
            Check::new(20).read_to_eof(&mut r, A).await?;
            eof_tx.send(()).await.ok();
            send(&mut w, 21, 0, B / 2).await?;
            gate.pause().await;
            send(&mut w, 21, B / 2, B).await?;
            w.shutdown(Shutdown::Write).map_err(|e| e.to_string())
        });
        let (relay, link, c) = through_link(&sp, RelayConfig::default(), peer, |_| {}).await;
        let mut s = within(10, "connect -L", TcpStream::connect(c.locals[0]))
            .await
            .unwrap();
        within(10, "A sent", send(&mut s, 20, 0, A)).await.unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        within(10, "A's FIN delivered", eof_rx.recv())
            .await
            .unwrap();
        let reading = smol::spawn(async move { Check::new(21).read_to_eof(&mut s, B).await });
        ctl.wait_halfway(1).await;
        link.cut(Cut::Fin);
        ctl.open();
        expect_resume(&c, 1).await;
        within(20, "B", reading).await.unwrap();
        within(10, "the far end", far).await.unwrap();
        assert_resumed_both(&relay, &c);
    });
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
        loop {
            match next_state(&c, "connected again").await {
                Event::Connected => break,
                Event::Lost(_) => continue,
                other => panic!("expected a new session, got {other:?}"),
            }
        }
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

/// An echo server that reports how each connection ended: `Ok(bytes echoed)` at EOF, or the
/// error that ended it.
async fn reporting_echo() -> (
    SocketAddr,
    smol::channel::Receiver<Result<u64, String>>,
    smol::Task<()>,
) {
    let l = smol::net::TcpListener::bind(common::lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = smol::channel::unbounded();
    let task = smol::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            conns.push(smol::spawn(async move {
                let copied = futures_lite::io::copy(s.clone(), &mut s.clone()).await;
                tx.send(copied.map_err(|e| e.to_string())).await.ok();
            }));
        }
    });
    (addr, rx, task)
}

#[test]
fn a_reset_lost_in_the_cut_arrives_once() {
    logs();
    run(|sp| async move {
        let (echo, ended, _e) = reporting_echo().await;
        // The default keepalive: nothing but the RESET crosses the link while it is dark.
        let tune = |cfg: &mut ClientConfig| cfg.session.keepalive = Duration::from_secs(20);
        let (relay, link, c) = through_link(&sp, RelayConfig::default(), echo, tune).await;
        let mut doomed = TcpStream::connect(c.locals[0]).await.unwrap();
        let mut bystander = TcpStream::connect(c.locals[0]).await.unwrap();
        within(10, "echo", round_trip(&mut doomed, 50, 1024))
            .await
            .unwrap();
        within(10, "echo", round_trip(&mut bystander, 51, 1024))
            .await
            .unwrap();
        link.cut(Cut::Blackhole);
        // The application resets its connection: the client sends RESET, into the blackhole.
        rustix::net::sockopt::set_socket_linger(&doomed, Some(Duration::ZERO)).unwrap();
        drop(doomed);
        eventually("the RESET went into the blackhole", || {
            link.swallowed_frames_up().contains(&RESET)
        })
        .await;
        link.cut(Cut::Rst);
        match next_state(&c, "suspended").await {
            Event::Suspended { streams, .. } => assert!(streams >= 1, "{streams} streams held"),
            other => panic!("expected Suspended after the cut, got {other:?}"),
        }
        match next_state(&c, "resumed").await {
            Event::Resumed { streams } => assert!(streams >= 1, "{streams} streams resumed"),
            other => panic!("expected Resumed after the reconnect, got {other:?}"),
        }
        // The far end of the reset stream is closed; the other stream lives on.
        let first = within(10, "the reset stream's far end", ended.recv()).await;
        log::info!("the reset stream's far end: {first:?}");
        eventually("the relay holds one stream", || {
            relay.metrics.streams.load(Relaxed) == 1
        })
        .await;
        within(
            10,
            "echo after the resume",
            round_trip(&mut bystander, 52, 64 * 1024),
        )
        .await
        .unwrap();
        bystander.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        within(10, "EOF", bystander.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(rest.is_empty());
        let second = within(10, "the bystander's far end", ended.recv()).await;
        assert_eq!(second, Ok(Ok(1024 + 64 * 1024)), "the bystander's far end");
        assert_resumed_both(&relay, &c);
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
