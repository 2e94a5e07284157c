//! Absolute-form forwarding under hostile framing (issue 7 items 6, 7, 8): raw clients and raw
//! origins on 127.0.0.1, so the bytes each side sees are exactly what the proxy sent.

mod common;

use burrow::http::front;
use burrow::http::head::RequestHead;
use burrow::proxy::ProxyConfig;
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Idle limit for the stall tests: short, yet far above a debug build's scheduling noise.
const IDLE: Duration = Duration::from_millis(500);

/// An origin for one connection: accepts it, reads the request head, and hands both to `script`.
async fn raw_origin<F, Fut, T>(script: F) -> (SocketAddr, smol::Task<T>)
where
    F: FnOnce(RequestHead, BufReader<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let l = TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = smol::spawn(async move {
        let (s, _) = within(10, "origin accept", l.accept()).await.unwrap();
        let mut r = BufReader::new(s);
        let head = front::read_request(&mut r, Duration::from_secs(10))
            .await
            .expect("origin: a request head");
        script(head, r).await
    });
    (addr, task)
}

/// Reads until the peer closes (an EOF or a reset); returns what came before.
async fn until_closed(r: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    within(10, "peer closes", async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    got
}

/// An origin that answers every request on every connection with an empty 200 and reports
/// each request's path, in order.
async fn recording_origin() -> (SocketAddr, smol::channel::Receiver<String>, smol::Task<()>) {
    let l = TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = smol::channel::unbounded();
    let task = smol::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            conns.push(smol::spawn(async move {
                let mut r = BufReader::new(s);
                while let Ok(head) = front::read_request(&mut r, Duration::from_secs(10)).await {
                    // Ignored: the test may have stopped listening; the origin just goes on.
                    let _ = tx.send(head.target.to_string()).await;
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                    if r.get_mut().write_all(ok).await.is_err() {
                        break;
                    }
                }
            }));
        }
    });
    (addr, rx, task)
}

#[test]
fn connection_naming_a_framing_field_in_a_request_is_400_and_smuggles_nothing() {
    run(|sp| async move {
        let (origin, seen, _o) = recording_origin().await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        let by_length = format!(
            "POST http://{origin}/a HTTP/1.1\r\nContent-Length: {}\r\nConnection: Content-Length\r\n\r\n{smuggled}",
            smuggled.len()
        );
        let by_chunks = format!(
            "POST http://{origin}/b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, Transfer-Encoding\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
            smuggled.len()
        );
        for req in [by_length, by_chunks] {
            let (head, _) = send_raw(p.addr, req.as_bytes()).await;
            assert_eq!(head.status, 400, "{req}");
        }
        // The first thing the origin ever sees is this request: nothing came before it.
        let (head, _) = send_raw(
            p.addr,
            format!("GET http://{origin}/after HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(head.status, 200);
        let first = within(10, "origin sees a request", seen.recv())
            .await
            .unwrap();
        assert_eq!(first, "/after");
    });
}

#[test]
fn bad_framing_from_the_origin_is_502() {
    run(|sp| async move {
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let cases: &[&[u8]] = &[
            // Issue 6: the origin asks us to strip the fields that frame its body.
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            // Issue 7: framing headers that parsers disagree on.
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ];
        assert!(!cases.is_empty());
        for &answer in cases {
            let (origin, o) = raw_origin(move |_, mut r| async move {
                r.get_mut().write_all(answer).await.unwrap();
                until_closed(&mut r).await
            })
            .await;
            let req = format!("GET http://{origin}/ HTTP/1.1\r\n\r\n");
            let (head, _) = send_raw(p.addr, req.as_bytes()).await;
            let show = String::from_utf8_lossy(answer);
            assert_eq!(head.status, 502, "{show}");
            // The origin connection is closed, not kept for the next request.
            within(10, "origin closed", o).await;
        }
    });
}

#[test]
fn lenient_chunked_request_bodies_get_400_and_never_reach_the_origin() {
    run(|sp| async move {
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        // (body, what the origin may receive of it before the proxy sees the bad line)
        let cases: &[(&[u8], &[u8])] = &[
            (b"+5\r\nhello\r\n0\r\n\r\n", b""),
            (b"5\x0b\r\nhello\r\n0\r\n\r\n", b""),
            (b"5\xc2\xa0\r\nhello\r\n0\r\n\r\n", b""),
            (b"5\r;x\r\nhello\r\n0\r\n\r\n", b""),
            (b"5\nhello\n0\n\n", b""),
            (
                b"5\r\nhello\r\n0\r\nX-No-Colon\r\n\r\n",
                b"5\r\nhello\r\n0\r\n",
            ),
        ];
        assert!(!cases.is_empty());
        for (body, reaches) in cases {
            let (origin, o) =
                raw_origin(|_, mut r| async move { until_closed(&mut r).await }).await;
            let mut req =
                format!("POST http://{origin}/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .into_bytes();
            req.extend_from_slice(body);
            let (head, _) = send_raw(p.addr, &req).await;
            let show = String::from_utf8_lossy(body);
            assert_eq!(head.status, 400, "{show:?}");
            let got = within(10, "origin closed", o).await;
            assert_eq!(got, *reaches, "{show:?}");
        }
        // Header-level cases are refused before any origin is dialed (a dial would be a 502).
        let nobody = closed_port();
        for headers in [
            "HTTP/1.1\r\nTransfer-Encoding: chunked, chunked",
            "HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "HTTP/1.0\r\nTransfer-Encoding: chunked",
        ] {
            let req = format!("POST http://{nobody}/ {headers}\r\n\r\n0\r\n\r\n");
            let (head, _) = send_raw(p.addr, req.as_bytes()).await;
            assert_eq!(head.status, 400, "{headers}");
        }
    });
}

#[test]
fn a_lenient_chunked_response_body_closes_both_sides() {
    run(|sp| async move {
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let (origin, o) = raw_origin(|_, mut r| async move {
            let answer =
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n+5\r\nworld\r\n0\r\n\r\n";
            r.get_mut().write_all(answer).await.unwrap();
            until_closed(&mut r).await
        })
        .await;
        // A keep-alive request: only the proxy's close can end the read below.
        let req = format!("GET http://{origin}/ HTTP/1.1\r\n\r\n");
        let (head, mut r) = send_raw(p.addr, req.as_bytes()).await;
        assert_eq!(head.status, 200);
        assert_eq!(until_closed(&mut r).await, b"5\r\nhello\r\n");
        within(10, "origin closed", o).await;
    });
}

#[test]
fn valid_chunked_bodies_with_extensions_and_trailers_pass_verbatim() {
    run(|sp| async move {
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let up: &[u8] = b"4 ; a=\"q\\\"x\" ;b\r\nWiki\r\n0;c=d\r\nX-Sum: 1\r\n\r\n";
        let down: &[u8] = b"5;e\r\npedia\r\n0\r\nGrpc-Status: 0\r\n\r\n";
        let (origin, o) = raw_origin(move |_, mut r| async move {
            let mut got = vec![0; up.len()];
            r.read_exact(&mut got).await.unwrap();
            let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            answer.extend_from_slice(down);
            r.get_mut().write_all(&answer).await.unwrap();
            got
        })
        .await;
        let mut req = format!(
            "POST http://{origin}/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(up);
        let (head, mut r) = send_raw(p.addr, &req).await;
        assert_eq!(head.status, 200);
        assert_eq!(read_all(&mut r).await, down);
        assert_eq!(within(10, "origin", o).await, up);
    });
}

#[test]
fn a_stalled_request_body_gets_408_and_closes_the_origin() {
    run(|sp| async move {
        let cfg = ProxyConfig {
            idle_timeout: IDLE,
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        let (origin, o) = raw_origin(|_, mut r| async move { until_closed(&mut r).await }).await;
        let req = format!("POST http://{origin}/ HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc");
        let start = Instant::now();
        // The client keeps its connection open and silent: only the proxy can end this.
        let (head, _client) = send_raw(p.addr, req.as_bytes()).await;
        assert_eq!(head.status, 408);
        assert!(start.elapsed() >= IDLE, "answered before the idle limit");
        assert_eq!(within(10, "origin closed", o).await, b"abc");
    });
}

#[test]
fn a_stalled_response_body_closes_the_client_and_the_origin() {
    run(|sp| async move {
        let cfg = ProxyConfig {
            idle_timeout: IDLE,
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        let (origin, o) = raw_origin(|_, mut r| async move {
            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc";
            r.get_mut().write_all(answer).await.unwrap();
            // The origin keeps its connection open and silent.
            until_closed(&mut r).await
        })
        .await;
        let req = format!("GET http://{origin}/ HTTP/1.1\r\n\r\n");
        let (head, mut r) = send_raw(p.addr, req.as_bytes()).await;
        assert_eq!(head.status, 200);
        // Only the idle limit can close it, and until_closed fails after its own deadline.
        assert_eq!(until_closed(&mut r).await, b"abc");
        within(10, "origin closed", o).await;
    });
}
