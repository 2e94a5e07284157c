//! Reading heads off a stream (bounded, one deadline for the whole head) and writing the
//! short error responses every front door sends.

use super::head::{self, HeadBuf, HeadError, RequestHead, ResponseHead};
use futures_lite::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

/// Why no head could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed before sending a byte (a normal end of a keep-alive connection).
    Closed,
    /// The peer closed in the middle of a head (400).
    Truncated,
    /// The head broke a rule or a limit.
    Head(HeadError),
    /// The whole head did not arrive within the deadline (408). `partial`: some bytes came.
    Timeout {
        /// whether any byte of the head had arrived
        partial: bool,
    },
    /// The socket failed.
    Io(io::Error),
}

impl ReadError {
    /// The status to answer with, if an answer is due at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            ReadError::Closed | ReadError::Io(_) => None,
            ReadError::Truncated => Some(400),
            ReadError::Head(e) => Some(e.status()),
            ReadError::Timeout { .. } => Some(408),
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => f.write_str("connection closed"),
            ReadError::Truncated => f.write_str("connection closed inside the head"),
            ReadError::Head(e) => e.fmt(f),
            ReadError::Timeout { .. } => f.write_str("head not received in time"),
            ReadError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads one whole head from `r` within `timeout`. Bytes past the head stay in `r`.
pub async fn read_head_bytes<R: AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> Result<Vec<u8>, ReadError> {
    let mut hb = HeadBuf::default();
    let read = async {
        loop {
            let buf = match r.fill_buf().await {
                Ok(b) => b,
                Err(e) => return Err(ReadError::Io(e)),
            };
            if buf.is_empty() {
                return Err(if hb.buffered().is_empty() {
                    ReadError::Closed
                } else {
                    ReadError::Truncated
                });
            }
            let (before, n) = (hb.buffered().len(), buf.len());
            match hb.feed(buf).map_err(ReadError::Head)? {
                Some(len) => {
                    r.consume(len - before);
                    let mut bytes = std::mem::take(&mut hb).into_inner();
                    bytes.truncate(len);
                    return Ok(bytes);
                }
                None => r.consume(n),
            }
        }
    };
    // `partial` is only known once the race is over (the read holds the buffer till then).
    let timed_out = || ReadError::Timeout { partial: false };
    match crate::time::with_timeout(timeout, read, timed_out).await {
        Err(ReadError::Timeout { .. }) => Err(ReadError::Timeout {
            partial: !hb.buffered().is_empty(),
        }),
        other => other,
    }
}

/// Reads and parses a request head.
pub async fn read_request<R: AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> Result<RequestHead, ReadError> {
    let bytes = read_head_bytes(r, timeout).await?;
    head::parse_request(&bytes).map_err(ReadError::Head)
}

/// Reads and parses a response head.
pub async fn read_response<R: AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> Result<ResponseHead, ReadError> {
    let bytes = read_head_bytes(r, timeout).await?;
    head::parse_response(&bytes).map_err(ReadError::Head)
}

/// The standard reason phrase of the statuses burrow sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A complete `Connection: close` response with a one-line plain-text reason as its body.
pub fn error_response(status: u16, reason: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{status} {}: {reason}\n", reason_phrase(status));
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    out.into_bytes()
}

/// How long a refusal at an accept loop may take to write: accepting waits for it, so it must
/// never stall (a peer that does not take 200 bytes at once is not waited for).
pub const REFUSAL_AT_ACCEPT: Duration = Duration::from_millis(200);

/// How long a refusal on a connection's own task may take to write: long enough for a slow
/// but honest peer, short enough that one that does not read frees its slot soon.
pub const REFUSAL_WRITE: Duration = Duration::from_secs(2);

/// Why a refusal did not reach the peer.
#[derive(Debug)]
pub enum RefuseError {
    /// The peer did not take the answer within the deadline.
    Late,
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for RefuseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseError::Late => f.write_str("peer did not take the answer in time"),
            RefuseError::Io(e) => write!(f, "writing the answer failed: {e}"),
        }
    }
}

impl std::error::Error for RefuseError {}

/// The one way every front door turns a peer away: writes [`error_response`] (`status`, the
/// one-line `reason`, `extra` headers) within `within`, flushes, then closes the write side
/// (a TCP write shutdown, or TLS close_notify) so the peer reads the answer rather than a
/// reset. The response is built before the returned future is, so the future owns nothing
/// but `stream`.
pub fn refuse<S>(
    mut stream: S,
    status: u16,
    reason: &str,
    extra: &[(&str, &str)],
    within: Duration,
) -> impl Future<Output = Result<(), RefuseError>> + Send + use<S>
where
    S: AsyncWrite + Unpin + Send,
{
    let answer = error_response(status, reason, extra);
    async move {
        let write = async {
            stream.write_all(&answer).await?;
            stream.flush().await?;
            stream.close().await
        };
        let write = async { write.await.map_err(RefuseError::Io) };
        crate::time::with_timeout(within, write, || RefuseError::Late).await
    }
}
