//! Incremental, bounded HTTP/1.x head parser and writer. No I/O: bytes in, a head or an error out.
//!
//! [`HeadBuf`] finds the end of a head and enforces the size limits while the bytes arrive, so a
//! peer that never sends a line feed is refused after [`MAX_LINE`] bytes instead of being buffered
//! without bound. [`parse_request`] and [`parse_response`] then turn the delimited head into a
//! [`RequestHead`] or [`ResponseHead`]; `write_to` turns them back into bytes.

use std::fmt;

/// Longest request line or header line, in bytes (without the line ending).
///
/// 8 KiB is what RFC 9112 section 3 recommends a request line to support at least, and what
/// common servers use for a header line; nothing a proxy client sends legitimately is longer.
pub const MAX_LINE: usize = 8 * 1024;
/// Longest head (request/status line plus headers plus the empty line), in bytes.
///
/// Bounds the memory one connection can hold before it is authenticated.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head.
///
/// Real clients send a few dozen; the cap keeps a head of tiny lines from costing many allocations.
pub const MAX_HEADERS: usize = 100;

/// HTTP version of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

impl Version {
    /// The version as written on the wire, e.g. `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// Header fields in the order received. Names keep their case; lookups ignore it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The value of the first field called `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// The values of every field called `name`, in order.
    pub fn get_all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated list field (`Connection: keep-alive, Upgrade`) contains
    /// `token`, ignoring ASCII case; repeated fields count as one list.
    pub fn contains_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
    }

    /// Removes every field called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Appends a field, keeping any others of the same name.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// Replaces every field called `name` with one field, where the first one was (or at the end).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let mut new = Some(value.into());
        self.0.retain_mut(|(n, v)| {
            if !n.eq_ignore_ascii_case(&name) {
                true
            } else if let Some(value) = new.take() {
                n.clone_from(&name);
                *v = value;
                true
            } else {
                false
            }
        });
        if let Some(value) = new {
            self.0.push((name, value));
        }
    }

    /// All fields as `(name, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.0 {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

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

impl Target {
    /// Host and port of an authority-form or absolute-form target.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        match self {
            Target::Authority { host, port } | Target::Absolute { host, port, .. } => {
                Some((host, *port))
            }
            Target::Origin(_) | Target::Asterisk => None,
        }
    }
}

/// Writes the target as it appears in a request line.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Authority { host, port } => write!(f, "{}:{port}", Bracketed(host)),
            Target::Absolute {
                scheme,
                host,
                port,
                path,
            } => {
                write!(f, "{scheme}://{}", Bracketed(host))?;
                if default_port(scheme) != Some(*port) {
                    write!(f, ":{port}")?;
                }
                f.write_str(path)
            }
            Target::Origin(path) => f.write_str(path),
            Target::Asterisk => f.write_str("*"),
        }
    }
}

/// A host as written in an authority: IPv6 literals (the only hosts with a `:`) in brackets.
struct Bracketed<'a>(&'a str);

impl fmt::Display for Bracketed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains(':') {
            write!(f, "[{}]", self.0)
        } else {
            f.write_str(self.0)
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
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

impl RequestHead {
    /// Appends the head, request line through the empty line, with CRLF line endings.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let line = format!(
            "{} {} {}\r\n",
            self.method,
            self.target,
            self.version.as_str()
        );
        out.extend_from_slice(line.as_bytes());
        self.headers.write_to(out);
        out.extend_from_slice(b"\r\n");
    }
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

impl ResponseHead {
    /// Appends the head, status line through the empty line, with CRLF line endings.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let line = format!(
            "{} {:03} {}\r\n",
            self.version.as_str(),
            self.status,
            self.reason
        );
        out.extend_from_slice(line.as_bytes());
        self.headers.write_to(out);
        out.extend_from_slice(b"\r\n");
    }
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
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::UriTooLong => 414,
            HeadError::HeadersTooLarge => 431,
            HeadError::UnsupportedVersion => 505,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(why) => write!(f, "malformed http head: {why}"),
            HeadError::UriTooLong => f.write_str("request line too long"),
            HeadError::HeadersTooLarge => f.write_str("http head too large"),
            HeadError::UnsupportedVersion => f.write_str("unsupported http version"),
        }
    }
}

impl std::error::Error for HeadError {}

mod parse;
pub(crate) use parse::is_tchar;
pub use parse::{HeadBuf, parse_request, parse_response};

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
