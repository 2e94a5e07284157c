//! Frames in flight when the link goes: an OPEN, a FIN, a RESET swallowed by a blackhole (the
//! link reads the frame types it swallows, so each cut lands right after that frame was lost)
//! must arrive exactly once after the resume; a half-closed stream finishes across a cut.

use super::*;
use payload::gate;

#[test]
fn an_open_lost_in_the_cut_is_resumed() {
    logs();
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        // The default keepalive: nothing crosses the link while it is dark but the frame.
        let (relay, link, c) = through_link(&sp, RelayConfig::default(), echo, |_| {}).await;
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
        no_loss_before_the_cut(&c);
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
        // The default keepalive: nothing crosses the link while it is dark but the frame.
        let (relay, link, c) = through_link(&sp, RelayConfig::default(), peer, |_| {}).await;
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
        no_loss_before_the_cut(&c);
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
        no_loss_before_the_cut(&c);
        link.cut(Cut::Fin);
        ctl.open();
        expect_resume(&c, 1).await;
        within(20, "B", reading).await.unwrap();
        within(10, "the far end", far).await.unwrap();
        assert_resumed_both(&relay, &c);
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
        // The default keepalive: nothing crosses the link while it is dark but the frame.
        let (relay, link, c) = through_link(&sp, RelayConfig::default(), echo, |_| {}).await;
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
        no_loss_before_the_cut(&c);
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
