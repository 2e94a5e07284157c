//! Message body framing (RFC 9112 section 6) for the forwarding proxy.
//!
//! Bodies are passed through verbatim, chunked ones included: the copier parses chunk sizes
//! only to find where the message ends, so nothing is re-encoded and trailers survive. The
//! parsing is strict (see [`chunked`]) and every framing decision refuses when in doubt: two
//! parsers that disagree on where a message ends are how requests get smuggled.
//!
//! The copiers do no timing of their own; wrap each side in [`Idle`] to bound a stall.

use super::head::{Headers, RequestHead, ResponseHead, Version};
use crate::time::Sleep;
use futures_lite::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

#[path = "chunked.rs"]
pub mod chunked;

/// Fields that frame a message. A `Connection` field naming one would have it removed after
/// the framing was computed from it, so such a message is refused instead.
const FRAMING_FIELDS: &[&str] = &["content-length", "transfer-encoding"];

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
    /// The sender closed inside the body.
    Truncated,
    /// Reading the body failed, or stalled under [`Idle`] (`TimedOut`).
    Read(io::Error),
    /// Writing the body failed, or stalled under [`Idle`] (`TimedOut`).
    Write(io::Error),
}

impl BodyError {
    /// Whether the sender (read side) stopped sending for longer than the idle limit.
    pub fn is_read_stall(&self) -> bool {
        matches!(self, BodyError::Read(e) if e.kind() == io::ErrorKind::TimedOut)
    }

    /// Whether the receiver (write side) stopped taking bytes for longer than the idle limit.
    pub fn is_write_stall(&self) -> bool {
        matches!(self, BodyError::Write(e) if e.kind() == io::ErrorKind::TimedOut)
    }

    /// Whether the sender's bytes broke the framing rules (as opposed to a transport failure).
    pub fn is_malformed(&self) -> bool {
        matches!(self, BodyError::Malformed(_) | BodyError::UnsupportedCoding)
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Malformed(why) => write!(f, "malformed body: {why}"),
            BodyError::UnsupportedCoding => f.write_str("unsupported transfer coding"),
            BodyError::Truncated => f.write_str("connection closed inside the body"),
            BodyError::Read(e) => write!(f, "reading the body failed: {e}"),
            BodyError::Write(e) => write!(f, "writing the body failed: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

fn read_err(e: io::Error) -> BodyError {
    BodyError::Read(e)
}

fn write_err(e: io::Error) -> BodyError {
    BodyError::Write(e)
}

/// `Content-Length` or `Transfer-Encoding` framing, `None` when neither is present.
fn length_or_chunked(h: &Headers, version: Version) -> Result<Option<Framing>, BodyError> {
    if FRAMING_FIELDS
        .iter()
        .any(|f| h.contains_token("connection", f))
    {
        return Err(BodyError::Malformed(
            "connection header names a framing field",
        ));
    }
    let te: Vec<&str> = h.get_all("transfer-encoding").collect();
    let cl: Vec<&str> = h.get_all("content-length").collect();
    if !te.is_empty() {
        if !cl.is_empty() {
            // Both present is the classic request-smuggling shape: refuse it.
            return Err(BodyError::Malformed(
                "both content-length and transfer-encoding",
            ));
        }
        if version == Version::Http10 {
            // RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
            // framing (a 1.0 hop in between would not have understood it).
            return Err(BodyError::Malformed("transfer-encoding in http/1.0"));
        }
        return transfer_coding(&te).map(Some);
    }
    let mut len = None;
    for v in cl.iter().flat_map(|v| v.split(',')) {
        let v = v.trim_matches([' ', '\t']);
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

/// The framing a `Transfer-Encoding` list gives: chunked, applied once and last.
fn transfer_coding(values: &[&str]) -> Result<Framing, BodyError> {
    let codings: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|c| c.trim_matches([' ', '\t']))
        .collect();
    if codings.iter().any(|c| c.is_empty()) {
        return Err(BodyError::Malformed("empty transfer coding"));
    }
    let chunked = codings
        .iter()
        .filter(|c| c.eq_ignore_ascii_case("chunked"))
        .count();
    if chunked > 1 {
        // RFC 9112 section 6.1: a sender must not apply chunked more than once.
        return Err(BodyError::Malformed("chunked applied more than once"));
    }
    match codings.last() {
        Some(last) if last.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
        _ => Err(BodyError::UnsupportedCoding),
    }
}

/// The framing of a request body.
pub fn request_framing(req: &RequestHead) -> Result<Framing, BodyError> {
    Ok(length_or_chunked(&req.headers, req.version)?.unwrap_or(Framing::Empty))
}

/// The framing of a response body to a request with `method`.
pub fn response_framing(method: &str, res: &ResponseHead) -> Result<Framing, BodyError> {
    // Checked even when the body is empty by status: the head is refused, not half-trusted.
    let framing = length_or_chunked(&res.headers, res.version)?;
    if method == "HEAD"
        || (100..200).contains(&res.status)
        || res.status == 204
        || res.status == 304
    {
        return Ok(Framing::Empty);
    }
    Ok(framing.unwrap_or(Framing::UntilClose))
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
        Framing::UntilClose => copy_until_close(r, w).await?,
        Framing::Chunked => chunked::copy_chunked(r, w).await?,
    };
    w.flush().await.map_err(write_err)?;
    Ok(n)
}

async fn copy_exact<R, W>(r: &mut R, w: &mut W, mut left: u64) -> Result<u64, BodyError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let total = left;
    while left > 0 {
        let buf = r.fill_buf().await.map_err(read_err)?;
        if buf.is_empty() {
            return Err(BodyError::Truncated);
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        w.write_all(&buf[..n]).await.map_err(write_err)?;
        r.consume(n);
        left -= n as u64;
    }
    Ok(total)
}

async fn copy_until_close<R, W>(r: &mut R, w: &mut W) -> Result<u64, BodyError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        let buf = r.fill_buf().await.map_err(read_err)?;
        if buf.is_empty() {
            return Ok(total);
        }
        let n = buf.len();
        w.write_all(buf).await.map_err(write_err)?;
        r.consume(n);
        total = total.saturating_add(n as u64);
    }
}

/// A stream whose every read and write fails with `TimedOut` after `limit` without progress.
///
/// Wraps one side of a body transfer, so that a peer announcing 100 bytes and sending 3 (or
/// never reading what it asked for) cannot hold a connection and an origin forever. The limit
/// is per operation, not per body: a slow but moving transfer is fine.
pub struct Idle<T> {
    inner: T,
    limit: Duration,
    /// Runs while an operation is pending; `armed` says whether it was set for this wait.
    timer: Sleep,
    armed: bool,
}

impl<T> std::fmt::Debug for Idle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("limit", &self.limit)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl<T> Idle<T> {
    /// Wraps `inner` with an idle limit of `limit` per operation.
    pub fn new(inner: T, limit: Duration) -> Self {
        Idle {
            inner,
            limit,
            timer: Sleep::after(limit),
            armed: false,
        }
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Called when the inner operation is pending: `Ready` with the error once `limit` passed.
    fn poll_stall(
        timer: &mut Sleep,
        armed: &mut bool,
        limit: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<io::Error> {
        if !*armed {
            timer.reset(std::time::Instant::now() + limit);
            *armed = true;
        }
        match Pin::new(timer).poll(cx) {
            Poll::Ready(_) => {
                *armed = false;
                let why = format!("no progress for {limit:?}");
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, why))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Runs one inner poll under the limit.
    fn run<O>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&mut T, &mut Context<'_>) -> Poll<io::Result<O>>,
    ) -> Poll<io::Result<O>> {
        match op(&mut self.inner, cx) {
            Poll::Ready(out) => {
                self.armed = false;
                Poll::Ready(out)
            }
            Poll::Pending => {
                Self::poll_stall(&mut self.timer, &mut self.armed, self.limit, cx).map(Err)
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .run(cx, |inner, cx| Pin::new(inner).poll_read(cx, buf))
    }
}

impl<T: AsyncBufRead + Unpin> AsyncBufRead for Idle<T> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let Idle {
            inner,
            limit,
            timer,
            armed,
        } = self.get_mut();
        match Pin::new(inner).poll_fill_buf(cx) {
            Poll::Ready(out) => {
                *armed = false;
                Poll::Ready(out)
            }
            Poll::Pending => Self::poll_stall(timer, armed, *limit, cx).map(Err),
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.get_mut().inner).consume(amt)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .run(cx, |inner, cx| Pin::new(inner).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .run(cx, |inner, cx| Pin::new(inner).poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .run(cx, |inner, cx| Pin::new(inner).poll_close(cx))
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
