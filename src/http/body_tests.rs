//! Tests of body framing rules, the copiers and the idle limit.

use super::*;
use crate::http::head::parse_request;
use futures_lite::io::{BufReader, Cursor};

fn copy(framing: Framing, input: &[u8]) -> (Result<u64, BodyError>, Vec<u8>, Vec<u8>) {
    smol::block_on(async {
        let mut r = BufReader::with_capacity(3, Cursor::new(input.to_vec()));
        let mut out = Vec::new();
        let res = copy_body(&mut r, &mut out, framing).await;
        let mut rest = Vec::new();
        futures_lite::io::AsyncReadExt::read_to_end(&mut r, &mut rest)
            .await
            .unwrap();
        (res, out, rest)
    })
}

#[test]
fn chunked_is_copied_verbatim_and_stops_at_its_end() {
    let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: y\r\n\r\n";
    let mut input = body.to_vec();
    input.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    let (res, out, rest) = copy(Framing::Chunked, &input);
    assert_eq!(res.unwrap(), body.len() as u64);
    assert_eq!(out, body);
    assert_eq!(
        rest, b"GET /next HTTP/1.1\r\n",
        "pipelined bytes stay unread"
    );
}

#[test]
fn length_copies_exactly() {
    let (res, out, rest) = copy(Framing::Length(5), b"helloworld");
    assert_eq!(res.unwrap(), 5);
    assert_eq!(out, b"hello");
    assert_eq!(rest, b"world");
    let (res, _, _) = copy(Framing::Length(50), b"short");
    assert!(matches!(res, Err(BodyError::Truncated)));
}

#[test]
fn framing_rules() {
    let cases: &[(&str, Result<Framing, ()>)] = &[
        ("GET / HTTP/1.1\r\n\r\n", Ok(Framing::Empty)),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            Ok(Framing::Length(3)),
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            Ok(Framing::Length(3)),
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            Err(()),
        ),
        ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", Err(())),
        ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", Err(())),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            Ok(Framing::Chunked),
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Ok(Framing::Chunked),
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            Err(()),
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            Err(()),
        ),
        // Issue 7: chunked twice, in one field or two; empty list elements.
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            Err(()),
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            Err(()),
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked\r\n\r\n",
            Err(()),
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n",
            Err(()),
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\u{a0}\r\n\r\n",
            Err(()),
        ),
        // Issue 7: Transfer-Encoding on HTTP/1.0 is faulty framing.
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            Err(()),
        ),
        (
            "POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
            Ok(Framing::Length(3)),
        ),
        // Issue 6: Connection may not name a framing field.
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nConnection: Content-Length\r\n\r\n",
            Err(()),
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, transfer-encoding\r\n\r\n",
            Err(()),
        ),
        (
            "GET / HTTP/1.1\r\nConnection: content-length\r\n\r\n",
            Err(()),
        ),
        (
            "GET / HTTP/1.1\r\nConnection: keep-alive, x-custom\r\n\r\n",
            Ok(Framing::Empty),
        ),
    ];
    assert!(!cases.is_empty());
    for (raw, want) in cases {
        let head = parse_request(raw.as_bytes()).unwrap();
        let got = request_framing(&head).map_err(|_| ());
        assert_eq!(&got, want, "{raw:?}");
    }
}

#[test]
fn response_framing_rules() {
    let cases: &[(&str, &str, Result<Framing, ()>)] = &[
        ("GET", "HTTP/1.1 200 OK\r\n\r\n", Ok(Framing::UntilClose)),
        (
            "HEAD",
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            Ok(Framing::Empty),
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Ok(Framing::Chunked),
        ),
        (
            "GET",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Err(()),
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\n",
            Err(()),
        ),
        (
            "HEAD",
            "HTTP/1.1 204 No Content\r\nConnection: transfer-encoding\r\n\r\n",
            Err(()),
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            Err(()),
        ),
    ];
    for (method, raw, want) in cases {
        let head = crate::http::head::parse_response(raw.as_bytes()).unwrap();
        let got = response_framing(method, &head).map_err(|_| ());
        assert_eq!(&got, want, "{method} {raw:?}");
    }
}

#[test]
fn idle_ends_a_stalled_read_and_a_stalled_write() {
    smol::block_on(async {
        let limit = Duration::from_millis(50);
        // A reader that has 3 of 10 bytes and then nothing, like a client that stalls.
        let mut r = Idle::new(
            futures_lite::io::BufReader::new(ThenStall(Some(b"abc".to_vec()))),
            limit,
        );
        let mut out = Vec::new();
        let err = copy_body(&mut r, &mut out, Framing::Length(10))
            .await
            .unwrap_err();
        assert!(err.is_read_stall(), "{err}");
        assert_eq!(out, b"abc");
        // A writer that never takes a byte.
        let mut w = Idle::new(Never, limit);
        let mut r = Cursor::new(b"hello".to_vec());
        let err = copy_body(&mut r, &mut w, Framing::Length(5))
            .await
            .unwrap_err();
        assert!(err.is_write_stall(), "{err}");
    });
}

/// A reader that gives its bytes once, then is never ready again.
struct ThenStall(Option<Vec<u8>>);

impl AsyncRead for ThenStall {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.take() {
            Some(data) => {
                buf[..data.len()].copy_from_slice(&data);
                Poll::Ready(Ok(data.len()))
            }
            None => Poll::Pending,
        }
    }
}

/// A writer that is never ready.
struct Never;

impl AsyncWrite for Never {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Pending
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}
