//! Message body framing (RFC 9112 section 6) for the forwarding proxy.
//!
//! Bodies are passed through verbatim, chunked ones included: the copier parses chunk sizes
//! only to find where the message ends, so nothing is re-encoded and trailers survive.

use super::head::{Headers, RequestHead, ResponseHead};
use futures_lite::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use std::fmt;
use std::io;

/// Longest chunk-size line or trailer line we accept.
const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// A body that breaks the framing rules, or a stream that failed under it.
#[derive(Debug)]
pub enum BodyError {
    /// Bad framing headers or chunk syntax (400 for requests, 502 for responses).
    Malformed(&'static str),
    /// A transfer coding other than chunked (501 for requests).
    UnsupportedCoding,
    /// The stream ended inside the body.
    Truncated,
    /// Reading or writing failed.
    Io(io::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Malformed(why) => write!(f, "malformed body: {why}"),
            BodyError::UnsupportedCoding => f.write_str("unsupported transfer coding"),
            BodyError::Truncated => f.write_str("connection closed inside the body"),
            BodyError::Io(e) => write!(f, "body transfer failed: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

impl From<io::Error> for BodyError {
    fn from(e: io::Error) -> Self {
        BodyError::Io(e)
    }
}

fn length_or_chunked(h: &Headers) -> Result<Option<Framing>, BodyError> {
    let te: Vec<&str> = h.get_all("transfer-encoding").collect();
    let cl: Vec<&str> = h.get_all("content-length").collect();
    if !te.is_empty() {
        if !cl.is_empty() {
            // Both present is the classic request-smuggling shape: refuse it.
            return Err(BodyError::Malformed(
                "both content-length and transfer-encoding",
            ));
        }
        let last = te
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .next_back()
            .unwrap_or("");
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(Some(Framing::Chunked))
        } else {
            Err(BodyError::UnsupportedCoding)
        };
    }
    let mut len = None;
    for v in cl.iter().flat_map(|v| v.split(',')) {
        let v = v.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BodyError::Malformed("bad content-length"));
        }
        let n: u64 = v
            .parse()
            .map_err(|_| BodyError::Malformed("bad content-length"))?;
        if len.is_some_and(|l| l != n) {
            return Err(BodyError::Malformed("conflicting content-length"));
        }
        len = Some(n);
    }
    Ok(len.map(|n| {
        if n == 0 {
            Framing::Empty
        } else {
            Framing::Length(n)
        }
    }))
}

/// The framing of a request body.
pub fn request_framing(req: &RequestHead) -> Result<Framing, BodyError> {
    Ok(length_or_chunked(&req.headers)?.unwrap_or(Framing::Empty))
}

/// The framing of a response body to a request with `method`.
pub fn response_framing(method: &str, res: &ResponseHead) -> Result<Framing, BodyError> {
    if method == "HEAD"
        || (100..200).contains(&res.status)
        || res.status == 204
        || res.status == 304
    {
        return Ok(Framing::Empty);
    }
    Ok(length_or_chunked(&res.headers)?.unwrap_or(Framing::UntilClose))
}

/// Copies one body from `r` to `w` under `framing`; returns the bytes copied.
pub async fn copy_body<R, W>(r: &mut R, w: &mut W, framing: Framing) -> Result<u64, BodyError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let n = match framing {
        Framing::Empty => 0,
        Framing::Length(n) => copy_exact(r, w, n).await?,
        Framing::UntilClose => futures_lite::io::copy(&mut *r, &mut *w).await?,
        Framing::Chunked => copy_chunked(r, w).await?,
    };
    w.flush().await?;
    Ok(n)
}

async fn copy_exact<R, W>(r: &mut R, w: &mut W, mut left: u64) -> Result<u64, BodyError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let total = left;
    while left > 0 {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(BodyError::Truncated);
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        w.write_all(&buf[..n]).await?;
        r.consume(n);
        left -= n as u64;
    }
    Ok(total)
}

/// Reads one line (up to and including LF) into `line`, at most `max` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> Result<(), BodyError> {
    line.clear();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(BodyError::Truncated);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            return Err(BodyError::Malformed("chunk line too long"));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(());
        }
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let text = std::str::from_utf8(line).map_err(|_| BodyError::Malformed("chunk size"))?;
    let hex = text.split(';').next().unwrap_or("").trim();
    if hex.is_empty() || hex.len() > 15 {
        return Err(BodyError::Malformed("chunk size"));
    }
    u64::from_str_radix(hex, 16).map_err(|_| BodyError::Malformed("chunk size"))
}

async fn copy_chunked<R, W>(r: &mut R, w: &mut W) -> Result<u64, BodyError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut line = Vec::with_capacity(64);
    let mut total = 0u64;
    loop {
        read_line(r, &mut line, MAX_CHUNK_LINE).await?;
        let size = chunk_size(&line)?;
        w.write_all(&line).await?;
        total += line.len() as u64;
        if size == 0 {
            break;
        }
        total += copy_exact(r, w, size).await?;
        read_line(r, &mut line, MAX_CHUNK_LINE).await?;
        if line != b"\r\n" && line != b"\n" {
            return Err(BodyError::Malformed("chunk not followed by CRLF"));
        }
        w.write_all(&line).await?;
        total += line.len() as u64;
    }
    // Trailer fields, then the final empty line.
    let mut trailers = 0;
    loop {
        read_line(r, &mut line, MAX_CHUNK_LINE).await?;
        trailers += line.len();
        if trailers > MAX_TRAILERS {
            return Err(BodyError::Malformed("trailers too large"));
        }
        w.write_all(&line).await?;
        total += line.len() as u64;
        if line == b"\r\n" || line == b"\n" {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
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
    fn bad_chunks_are_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"4\r\nWikiXX",
            b"4\r\nWi",
            b"ffffffffffffffff\r\n",
        ] {
            let (res, _, _) = copy(Framing::Chunked, bad);
            assert!(res.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
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
        ];
        assert!(!cases.is_empty());
        for (raw, want) in cases {
            let head = parse_request(raw.as_bytes()).unwrap();
            let got = request_framing(&head).map_err(|_| ());
            assert_eq!(&got, want, "{raw:?}");
        }
    }
}
