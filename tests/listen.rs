//! The one accept loop (`listen::AcceptLoop`) on real sockets: the per-listener limit and its
//! refusal, refusals from the admission, the drain, and shutdown stopping the accepting.

mod common;

use burrow::exec::Spawner;
use burrow::listen::{AcceptLoop, Drain, TurnAway};
use burrow::shutdown::Shutdown;
use common::{lo, run, within};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::channel::{Receiver, Sender};
use smol::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A running loop whose connections each say `hello`, then wait for `release` (or are
/// cancelled, which drops their sender of `alive`), then say `done`.
struct Running {
    addr: SocketAddr,
    shutdown: Shutdown,
    task: smol::Task<()>,
    admitted: Receiver<()>,
    release: Sender<()>,
    /// closed once every connection task has ended or was cancelled
    alive: Receiver<()>,
    over_limit: Arc<AtomicUsize>,
}

async fn start(sp: &Spawner, limit: usize, drain: Drain) -> Running {
    let listener = TcpListener::bind(lo()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let (admitted_tx, admitted) = smol::channel::unbounded();
    let (release, release_rx) = smol::channel::unbounded::<()>();
    let (alive_tx, alive) = smol::channel::bounded::<()>(1);
    let over_limit = Arc::new(AtomicUsize::new(0));
    let (signal, spawner, refused) = (shutdown.signal(), sp.clone(), over_limit.clone());
    let task = smol::spawn(async move {
        let accept_loop = AcceptLoop {
            what: "test",
            limit,
            drain,
        };
        let admit = |mut stream: TcpStream, _peer| {
            let (admitted, release, alive) =
                (admitted_tx.clone(), release_rx.clone(), alive_tx.clone());
            Ok(async move {
                let _alive = alive;
                // A probe of `until_refused` may be admitted and gone already: no unwraps.
                let _ = stream.write_all(b"hello\n").await;
                let _ = admitted.send(()).await;
                // Ends when released, or when the test drops the sender (which releases
                // every connection, probes included).
                let _ = release.recv().await;
                // The peer may be gone already; nothing to check then.
                let _ = stream.write_all(b"done\n").await;
            })
        };
        let over_limit = |mut stream: TcpStream, _peer, open| {
            assert_eq!(open, limit, "asked to refuse below the limit");
            refused.fetch_add(1, Ordering::SeqCst);
            TurnAway::answer(async move { stream.write_all(b"busy\n").await })
        };
        accept_loop
            .run(listener, spawner, &signal, admit, over_limit)
            .await
    });
    Running {
        addr,
        shutdown,
        task,
        admitted,
        release,
        alive,
        over_limit,
    }
}

/// Reads until end of file.
async fn read_all(s: &mut TcpStream) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Reads exactly one line of `n` bytes.
async fn read_n(s: &mut TcpStream, n: usize) -> String {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).await.unwrap();
    String::from_utf8(buf).unwrap()
}

/// Connects and waits for the connection to be admitted.
async fn admitted(r: &Running) -> TcpStream {
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    assert_eq!(read_n(&mut s, 6).await, "hello\n");
    within(5, "admission", r.admitted.recv()).await.unwrap();
    s
}

/// Polls until a connect to `addr` is refused (the listener is gone), with a deadline.
async fn until_refused(addr: SocketAddr) {
    within(10, "listener closing", async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[test]
fn a_connection_over_the_limit_is_answered_and_counted_once() {
    run(|sp| async move {
        let r = start(&sp, 1, Drain::Within(Duration::from_secs(10))).await;
        let mut a = admitted(&r).await;
        let mut b = TcpStream::connect(r.addr).await.unwrap();
        assert_eq!(within(5, "refusal", read_all(&mut b)).await, "busy\n");
        assert_eq!(r.over_limit.load(Ordering::SeqCst), 1);
        // The slot comes back once the first connection ends.
        r.release.send(()).await.unwrap();
        assert_eq!(within(5, "first ends", read_all(&mut a)).await, "done\n");
        let _c = within(5, "slot given back", async {
            loop {
                let mut c = TcpStream::connect(r.addr).await.unwrap();
                if read_n(&mut c, 5).await == "hello" {
                    return c;
                }
                // Refused while the first task was still leaving the set: try again.
            }
        })
        .await;
        assert!(r.admitted.recv().await.is_ok());
    })
}

#[test]
fn a_refusal_from_the_admission_is_sent_and_nothing_is_spawned() {
    run(|sp| async move {
        let listener = TcpListener::bind(lo()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        let n = Arc::new(AtomicUsize::new(0));
        let seen = n.clone();
        let task = smol::spawn(async move {
            let accept_loop = AcceptLoop {
                what: "test",
                limit: 8,
                drain: Drain::Within(Duration::from_secs(5)),
            };
            let admit = |mut stream: TcpStream, _peer| {
                // Every other connection is answered, the rest are closed without a word.
                let refusal = if seen.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                    TurnAway::answer(async move { stream.write_all(b"no\n").await })
                } else {
                    TurnAway::Close
                };
                Err::<std::future::Pending<()>, _>(refusal)
            };
            let over_limit = |_s, _p, _o| panic!("the limit is not reached");
            accept_loop
                .run(listener, sp, &signal, admit, over_limit)
                .await
        });
        let mut a = TcpStream::connect(addr).await.unwrap();
        assert_eq!(within(5, "answer", read_all(&mut a)).await, "no\n");
        let mut b = TcpStream::connect(addr).await.unwrap();
        assert_eq!(within(5, "close", read_all(&mut b)).await, "");
        shutdown.drain();
        // Nothing was spawned, so nothing holds the drain up.
        within(5, "loop ends", task).await;
        assert_eq!(n.load(Ordering::SeqCst), 2);
    })
}

#[test]
fn shutdown_stops_accepting_and_the_drain_waits_for_open_connections() {
    run(|sp| async move {
        let r = start(&sp, 8, Drain::Within(Duration::from_secs(20))).await;
        let mut a = admitted(&r).await;
        r.shutdown.drain();
        until_refused(r.addr).await;
        // The listener is gone, the loop is draining: it must wait for `a`.
        assert!(
            !r.task.is_finished(),
            "drain did not wait for an open connection"
        );
        drop(r.release);
        assert_eq!(within(5, "a ends", read_all(&mut a)).await, "done\n");
        within(5, "loop ends after the drain", r.task).await;
        assert_eq!(r.over_limit.load(Ordering::SeqCst), 0);
    })
}

#[test]
fn the_drain_cancels_what_is_left_at_its_deadline() {
    run(|sp| async move {
        let r = start(&sp, 8, Drain::Within(Duration::from_millis(300))).await;
        let mut a = admitted(&r).await;
        r.shutdown.drain();
        within(10, "loop ends at the drain deadline", r.task).await;
        // The connection task was cancelled: its end of `alive` is gone, its socket closed.
        assert!(within(5, "task cancelled", r.alive.recv()).await.is_err());
        assert_eq!(within(5, "a closed", read_all(&mut a)).await, "");
        drop(r.release);
    })
}

#[test]
fn an_abort_cuts_the_drain_short() {
    run(|sp| async move {
        let r = start(&sp, 8, Drain::Within(Duration::from_secs(60))).await;
        let _a = admitted(&r).await;
        r.shutdown.drain();
        until_refused(r.addr).await;
        r.shutdown.abort();
        within(10, "loop ends on abort", r.task).await;
        assert!(within(5, "task cancelled", r.alive.recv()).await.is_err());
    })
}

#[test]
fn drain_cancel_ends_at_once_and_owner_waits() {
    run(|sp| async move {
        let r = start(&sp, 8, Drain::Cancel).await;
        let _a = admitted(&r).await;
        r.shutdown.drain();
        within(10, "loop ends at once", r.task).await;
        assert!(within(5, "task cancelled", r.alive.recv()).await.is_err());

        let r = start(&sp, 8, Drain::Owner).await;
        let mut a = admitted(&r).await;
        r.shutdown.drain();
        until_refused(r.addr).await;
        assert!(!r.task.is_finished(), "an owner's loop must wait");
        drop(r.release);
        assert_eq!(within(5, "a ends", read_all(&mut a)).await, "done\n");
        within(5, "loop ends", r.task).await;
    })
}

/// A writer that never takes a byte (a peer that stopped reading with full buffers).
struct Stalled;

impl futures_lite::io::AsyncWrite for Stalled {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Pending
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

#[test]
fn the_refusal_writer_answers_then_closes() {
    use burrow::http::front;
    run(|_sp| async move {
        let listener = TcpListener::bind(lo()).await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let extra = [("Proxy-Authenticate", "Basic realm=\"burrow\"")];
        // A clone goes in and `ours` stays open: only the writer's own close ends the stream.
        let refusal = front::refuse(
            ours.clone(),
            407,
            "credentials required",
            &extra,
            front::REFUSAL_WRITE,
        );
        within(5, "refusal", refusal).await.unwrap();
        // The whole answer, then end of file: the write side was closed, not left open.
        let got = within(5, "answer and close", read_all(&mut peer)).await;
        let want = front::error_response(407, "credentials required", &extra);
        assert_eq!(got.as_bytes(), want.as_slice());
        assert!(got.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"));
        assert!(got.ends_with("407 Proxy Authentication Required: credentials required\n"));
    })
}

#[test]
fn the_refusal_writer_gives_up_on_a_stalled_peer() {
    use burrow::http::front::{self, RefuseError};
    run(|_sp| async move {
        let refusal = front::refuse(Stalled, 503, "busy", &[], Duration::from_millis(100));
        match within(5, "refusal deadline", refusal).await {
            Err(RefuseError::Late) => {}
            other => panic!("expected a late refusal, got {other:?}"),
        }
    })
}
