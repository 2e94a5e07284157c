//! Incremental, bounded HTTP/1.x head parser and writer. No I/O: bytes in, a head or an error out.
//!
//! INTERFACE STUB — to be implemented.

use std::fmt;

/// Longest request line or header line, in bytes (without the line ending).
pub const MAX_LINE: usize = 8 * 1024;
/// Longest head (request/status line plus headers plus the empty line), in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head.
pub const MAX_HEADERS: usize = 100;

/// HTTP version of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// Header fields in the order received. Names keep their case; lookups ignore it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

/// The request target, by form (RFC 9112 section 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `CONNECT host:port`; IPv6 literals come without brackets in `host`.
    Authority {
        /// host name or IP literal (no brackets)
        host: String,
        /// port
        port: u16,
    },
    /// `GET http://host[:port]/path?query`
    Absolute {
        /// lowercase scheme, `http` (or `https`)
        scheme: String,
        /// host name or IP literal (no brackets)
        host: String,
        /// explicit port or the scheme's default
        port: u16,
        /// origin-form path and query, `/` when empty
        path: String,
    },
    /// `GET /path?query`
    Origin(String),
    /// `OPTIONS *`
    Asterisk,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// method token, as sent (case-sensitive)
    pub method: String,
    /// the request target
    pub target: Target,
    /// version
    pub version: Version,
    /// header fields
    pub headers: Headers,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// version
    pub version: Version,
    /// three-digit status code
    pub status: u16,
    /// reason phrase (may be empty)
    pub reason: String,
    /// header fields
    pub headers: Headers,
}

/// Why a head was refused. Each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// syntax error (400)
    Malformed(&'static str),
    /// request line longer than [`MAX_LINE`] (414)
    UriTooLong,
    /// a header line longer than [`MAX_LINE`], a head over [`MAX_HEAD`], or more than
    /// [`MAX_HEADERS`] fields (431)
    HeadersTooLarge,
    /// not HTTP/1.0 or HTTP/1.1 (505)
    UnsupportedVersion,
}

impl HeadError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        todo!()
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for HeadError {}

/// Accumulates bytes until a whole head has arrived, enforcing the limits while reading.
#[derive(Debug, Default)]
pub struct HeadBuf {
    buf: Vec<u8>,
}

impl HeadBuf {
    /// Appends `data`. Returns `Ok(Some(head_len))` once the buffer holds a whole head
    /// (the first `head_len` bytes; the rest is body or tunnel data that must not be lost).
    pub fn feed(&mut self, _data: &[u8]) -> Result<Option<usize>, HeadError> {
        todo!()
    }
    /// Everything buffered so far.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
    /// Takes the buffer out.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// Parses a whole request head (as delimited by [`HeadBuf`]).
pub fn parse_request(_head: &[u8]) -> Result<RequestHead, HeadError> {
    todo!()
}

/// Parses a whole response head (as delimited by [`HeadBuf`]).
pub fn parse_response(_head: &[u8]) -> Result<ResponseHead, HeadError> {
    todo!()
}
