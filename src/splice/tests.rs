//! Tests of both splices: the user-space copy and splice(2) between TCP sockets.

use super::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::net::{TcpListener, TcpStream};

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = futures_lite::future::zip(TcpStream::connect(addr), l.accept()).await;
    (c.unwrap(), s.unwrap().0)
}

fn deadline<T>(f: impl Future<Output = T>) -> T {
    smol::block_on(f.or(async {
        smol::Timer::after(Duration::from_secs(10)).await;
        panic!("test deadline passed")
    }))
}

/// client <-> [a | splice | b] <-> server; `zero`: through [`splice_tcp`].
async fn spliced(idle: Option<Duration>, zero: bool) -> (TcpStream, TcpStream, smol::Task<Report>) {
    let (client, a) = pair().await;
    let (b, server) = pair().await;
    let task = smol::spawn(async move {
        if zero {
            return splice_tcp(&a, &b, idle).await;
        }
        let (mut ar, mut aw, mut br, mut bw) = (a.clone(), a, b.clone(), b);
        splice(&mut ar, &mut aw, &mut br, &mut bw, idle).await
    });
    (client, server, task)
}

fn half_close_keeps_other_direction_flowing(zero: bool) {
    deadline(async {
        let (mut client, mut server, task) = spliced(None, zero).await;
        client.write_all(b"request").await.unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request", "server sees the request, then EOF");
        // The other direction still works after the half-close.
        let big = vec![7u8; 1 << 20];
        server.write_all(&big).await.unwrap();
        server.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), big.len());
        let report = task.await;
        assert!(matches!(report.outcome, Outcome::Closed), "{report:?}");
        assert_eq!(report.a_to_b, 7);
        assert_eq!(report.b_to_a, 1 << 20);
        assert_eq!(report.zero_copy, zero, "{report:?}");
    });
}

#[test]
fn half_close_keeps_other_direction_flowing_copy() {
    half_close_keeps_other_direction_flowing(false);
}

#[test]
fn half_close_keeps_other_direction_flowing_zero_copy() {
    half_close_keeps_other_direction_flowing(true);
}

fn idle_timeout_ends_splice(zero: bool) {
    deadline(async {
        let idle = Some(Duration::from_millis(200));
        let (mut client, mut server, task) = spliced(idle, zero).await;
        // The warm-up, through once it arrived, then more: splice(2) carries that part.
        for part in [zerocopy::WARM_UP as usize, 4096] {
            client.write_all(&vec![1u8; part]).await.unwrap();
            server.read_exact(&mut vec![0u8; part]).await.unwrap();
        }
        let sent = vec![1u8; zerocopy::WARM_UP as usize + 4096];
        let report = task.await;
        assert!(matches!(report.outcome, Outcome::IdleTimeout), "{report:?}");
        assert_eq!(
            (report.a_to_b, report.zero_copy),
            (sent.len() as u64, zero),
            "{report:?}"
        );
        drop((client, server));
    });
}

#[test]
fn idle_timeout_ends_splice_copy() {
    idle_timeout_ends_splice(false);
}

#[test]
fn idle_timeout_ends_splice_zero_copy() {
    idle_timeout_ends_splice(true);
}

#[test]
fn a_short_exchange_never_leaves_user_space() {
    deadline(async {
        let (mut client, mut server, task) = spliced(None, true).await;
        client.write_all(b"hello").await.unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        server.write_all(b"world").await.unwrap();
        server.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!((&got[..], &back[..]), (&b"hello"[..], &b"world"[..]));
        let report = task.await;
        assert!(matches!(report.outcome, Outcome::Closed), "{report:?}");
        assert_eq!((report.a_to_b, report.b_to_a), (5, 5));
        assert!(!report.zero_copy, "a short exchange made pipes: {report:?}");
    });
}

fn writing_to_a_vanished_peer_is_an_error_outcome(zero: bool) {
    deadline(async {
        let (mut client, server, task) = spliced(None, zero).await;
        drop(server);
        // The splice passes the EOF on; our further writes meet a reset socket.
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..256 {
            if client.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let report = task.await;
        assert!(matches!(report.outcome, Outcome::Error(_)), "{report:?}");
    });
}

#[test]
fn writing_to_a_vanished_peer_is_an_error_outcome_copy() {
    writing_to_a_vanished_peer_is_an_error_outcome(false);
}

#[test]
fn writing_to_a_vanished_peer_is_an_error_outcome_zero_copy() {
    writing_to_a_vanished_peer_is_an_error_outcome(true);
}

/// A reader that always has data.
struct Endless;
impl AsyncRead for Endless {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        buf.fill(1);
        Poll::Ready(Ok(buf.len()))
    }
}

/// A writer that takes `allow` more bytes, then is full.
struct Drip {
    allow: usize,
}
impl AsyncWrite for Drip {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.allow == 0 {
            return Poll::Pending;
        }
        let n = buf.len().min(self.allow);
        self.allow -= n;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn a_slow_writer_makes_the_pump_park_little() {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let (mut r, mut w) = (Endless, Drip { allow: 10_000 });
    let mut pump = Pump::new();
    let mut moved = false;
    assert!(
        pump.poll(&mut cx, Pin::new(&mut r), Pin::new(&mut w), &mut moved)
            .is_pending()
    );
    // The first read could not know: it parks the rest of a full chunk.
    assert_eq!(pump.pending.len(), CHUNK - 10_000);
    let mut worst = 0;
    for round in 0..100 {
        // The far end reads a little now and then.
        w.allow += 3000;
        assert!(
            pump.poll(&mut cx, Pin::new(&mut r), Pin::new(&mut w), &mut moved)
                .is_pending()
        );
        if round > 30 {
            worst = worst.max(pump.pending.capacity());
        }
    }
    assert!(worst > 0, "the writer stayed slow");
    assert!(
        worst <= 2 * SLOW_CHUNK,
        "a slow writer kept {worst} bytes parked"
    );
    // A writer that keeps up gets full-size reads again.
    w.allow = usize::MAX;
    for _ in 0..8 {
        let _ = pump.step(
            &mut cx,
            Pin::new(&mut r),
            Pin::new(&mut w),
            &mut vec![0; CHUNK],
        );
    }
    assert_eq!(pump.read_limit, CHUNK);
}
