//! The parser: [`HeadBuf`] delimits a head while enforcing the limits; [`parse_request`] and
//! [`parse_response`] turn the delimited bytes into a head.

use super::{
    HeadError, Headers, MAX_HEAD, MAX_HEADERS, MAX_LINE, RequestHead, ResponseHead, Target,
    Version, default_port,
};
use std::net::Ipv6Addr;

/// Accumulates bytes until a whole head has arrived, enforcing the limits while reading.
///
/// Every byte is scanned once, however the input is split. Empty lines before the start line
/// are skipped (RFC 9112 section 2.2) but count toward [`MAX_HEAD`].
#[derive(Debug, Default)]
pub struct HeadBuf {
    /// Bytes received: the head (once complete) and, after it, untouched body or tunnel data.
    buf: Vec<u8>,
    /// `buf[..scanned]` has been scanned; `line_start <= scanned <= buf.len()`.
    scanned: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// Whether the start line has ended; lines after it are header lines.
    started: bool,
    /// Header lines seen so far.
    fields: usize,
    /// Once complete or refused, `feed` repeats the answer.
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Reading,
    Done(usize),
    Failed(HeadError),
}

impl HeadBuf {
    /// Appends `data`. Returns `Ok(Some(head_len))` once the buffer holds a whole head
    /// (the first `head_len` bytes; the rest is body or tunnel data that must not be lost).
    ///
    /// After the head is complete, further data is appended untouched and the same `head_len`
    /// returned. After an error, data is dropped and the same error returned.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, HeadError> {
        match &self.state {
            State::Reading => {}
            State::Done(len) => {
                self.buf.extend_from_slice(data);
                return Ok(Some(*len));
            }
            State::Failed(e) => return Err(e.clone()),
        }
        self.buf.extend_from_slice(data);
        let result = self.scan();
        match &result {
            Ok(Some(len)) => self.state = State::Done(*len),
            Err(e) => self.state = State::Failed(e.clone()),
            Ok(None) => {}
        }
        result
    }

    /// Everything buffered so far.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the buffer out.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    fn scan(&mut self) -> Result<Option<usize>, HeadError> {
        loop {
            // Never look further than the longest allowed line (plus CR LF) or the longest head:
            // past that the answer is an error whatever the bytes are.
            let end = (self.line_start + MAX_LINE + 2)
                .min(MAX_HEAD)
                .min(self.buf.len());
            let Some(at) = self.buf[self.scanned..end].iter().position(|&b| b == b'\n') else {
                self.scanned = end;
                return self.check_partial().map(|()| None);
            };
            let lf = self.scanned + at;
            self.scanned = lf + 1;
            let len = strip_cr(&self.buf[self.line_start..lf]).len();
            self.line_start = lf + 1;
            if len == 0 {
                if self.started {
                    return Ok(Some(lf + 1));
                }
                continue;
            }
            if len > MAX_LINE {
                return Err(self.too_long());
            }
            if self.started {
                self.fields += 1;
                if self.fields > MAX_HEADERS {
                    return Err(HeadError::HeadersTooLarge);
                }
            }
            self.started = true;
        }
    }

    /// Checks the unfinished line at the end of the buffer.
    fn check_partial(&self) -> Result<(), HeadError> {
        // A trailing CR may belong to the CR LF still to come, so it does not count yet.
        if strip_cr(&self.buf[self.line_start..self.scanned]).len() > MAX_LINE {
            return Err(self.too_long());
        }
        // The empty line would end at or past byte MAX_HEAD.
        if self.scanned >= MAX_HEAD {
            return Err(HeadError::HeadersTooLarge);
        }
        Ok(())
    }

    fn too_long(&self) -> HeadError {
        if self.started {
            HeadError::HeadersTooLarge
        } else {
            HeadError::UriTooLong
        }
    }
}

/// Parses a whole request head (as delimited by [`HeadBuf`], which enforces the size limits).
pub fn parse_request(head: &[u8]) -> Result<RequestHead, HeadError> {
    let (line, fields) = split_head(head)?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed(
            "request line is not method, target, version",
        ));
    };
    let method = ascii(method, is_tchar, "bad method")?;
    let version = parse_version(version)?;
    let target = parse_target(method, target)?;
    Ok(RequestHead {
        method: method.to_owned(),
        target,
        version,
        headers: parse_fields(&fields)?,
    })
}

/// Parses a whole response head (as delimited by [`HeadBuf`], which enforces the size limits).
pub fn parse_response(head: &[u8]) -> Result<ResponseHead, HeadError> {
    let (line, fields) = split_head(head)?;
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return Err(HeadError::Malformed("status line has no status code"));
    };
    let version = parse_version(&line[..sp])?;
    let rest = &line[sp + 1..];
    let (code, reason) = match rest.iter().position(|&b| b == b' ') {
        Some(sp) => (&rest[..sp], &rest[sp + 1..]),
        None => (rest, &[][..]),
    };
    let status = match code {
        [h, t, u] if code.iter().all(u8::is_ascii_digit) => {
            u16::from(h - b'0') * 100 + u16::from(t - b'0') * 10 + u16::from(u - b'0')
        }
        _ => return Err(HeadError::Malformed("status code is not three digits")),
    };
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed("status code is not 100 to 599"));
    }
    let reason = text(reason, "bad reason phrase")?;
    Ok(ResponseHead {
        version,
        status,
        reason: reason.to_owned(),
        headers: parse_fields(&fields)?,
    })
}

/// Splits a head into its start line and header lines. Empty lines before the start line are
/// skipped; the head must end with its empty line.
fn split_head(head: &[u8]) -> Result<(&[u8], Vec<&[u8]>), HeadError> {
    let mut start = None;
    let mut fields = Vec::new();
    let mut rest = head;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let line = strip_cr(&rest[..lf]);
        rest = &rest[lf + 1..];
        match (start, line.is_empty()) {
            (None, true) => {}
            (None, false) => start = Some(line),
            (Some(_), false) => fields.push(line),
            (Some(start), true) if rest.is_empty() => return Ok((start, fields)),
            (Some(_), true) => return Err(HeadError::Malformed("bytes after the end of the head")),
        }
    }
    Err(HeadError::Malformed("head does not end with an empty line"))
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `HTTP/1.0` or `HTTP/1.1`; any other `HTTP/d.d` is unsupported, the rest malformed.
fn parse_version(v: &[u8]) -> Result<Version, HeadError> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(HeadError::UnsupportedVersion)
        }
        _ => Err(HeadError::Malformed("bad http version")),
    }
}

fn parse_target(method: &str, raw: &[u8]) -> Result<Target, HeadError> {
    let raw = ascii(raw, |b| b.is_ascii_graphic(), "bad request target")?;
    if raw.contains('#') {
        return Err(HeadError::Malformed("fragment in request target"));
    }
    if method == "CONNECT" {
        if raw.starts_with('/') || raw.contains("://") || raw == "*" {
            return Err(HeadError::Malformed("CONNECT target is not host:port"));
        }
        let (host, port) = parse_authority(raw, None)?;
        return Ok(Target::Authority { host, port });
    }
    if raw == "*" {
        return match method {
            "OPTIONS" => Ok(Target::Asterisk),
            _ => Err(HeadError::Malformed("'*' target is for OPTIONS only")),
        };
    }
    if raw.starts_with('/') {
        return Ok(Target::Origin(raw.to_owned()));
    }
    let Some((scheme, rest)) = raw.split_once("://") else {
        // Includes authority-form with a method other than CONNECT.
        return Err(HeadError::Malformed(
            "request target is not origin or absolute form",
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    let Some(default) = default_port(&scheme) else {
        return Err(HeadError::Malformed(
            "request target scheme is not http or https",
        ));
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(HeadError::Malformed("userinfo in request target"));
    }
    let (host, port) = parse_authority(authority, Some(default))?;
    let path = match path {
        "" => "/".to_owned(),
        query if query.starts_with('?') => format!("/{query}"),
        path => path.to_owned(),
    };
    Ok(Target::Absolute {
        scheme,
        host,
        port,
        path,
    })
}

/// `host[:port]` or `[v6][:port]`. Without `default` the port is required; an empty port
/// (`host:`) means the default (RFC 3986 section 3.2.3).
fn parse_authority(s: &str, default: Option<u16>) -> Result<(String, u16), HeadError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(HeadError::Malformed("unclosed '[' in host"));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(HeadError::Malformed("bad ipv6 literal"));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(HeadError::Malformed("junk after ipv6 literal")),
            },
        }
    } else {
        let (host, port) = match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        let host_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_');
        if host.is_empty() || !host.bytes().all(host_char) {
            return Err(HeadError::Malformed("bad host"));
        }
        (host, port)
    };
    let port = match (port, default) {
        (None | Some(""), Some(default)) => default,
        (None, None) => return Err(HeadError::Malformed("missing port")),
        (Some(port), _) => parse_port(port)?,
    };
    Ok((host.to_owned(), port))
}

fn parse_port(s: &str) -> Result<u16, HeadError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError::Malformed("bad port"));
    }
    match s.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(HeadError::Malformed("port out of range")),
    }
}

fn parse_fields(lines: &[&[u8]]) -> Result<Headers, HeadError> {
    let mut headers = Headers(Vec::with_capacity(lines.len()));
    for line in lines {
        if let [b' ' | b'\t', ..] = line {
            return Err(HeadError::Malformed("obsolete line folding"));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(HeadError::Malformed("header line has no colon"));
        };
        // A name is a token, so "Name : value" fails here (RFC 9112 section 5.1).
        let name = ascii(&line[..colon], is_tchar, "bad header name")?;
        let value = text(trim_ows(&line[colon + 1..]), "bad header value")?;
        headers.push(name, value);
    }
    Ok(headers)
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// A non-empty string of ASCII bytes that all pass `valid`.
fn ascii<'a>(b: &'a [u8], valid: fn(u8) -> bool, why: &'static str) -> Result<&'a str, HeadError> {
    if b.is_empty() || !b.iter().all(|&c| c.is_ascii() && valid(c)) {
        return Err(HeadError::Malformed(why));
    }
    std::str::from_utf8(b).map_err(|_| HeadError::Malformed(why))
}

/// Field value or reason phrase: UTF-8 of visible characters, SP and HTAB; no other controls.
fn text<'a>(b: &'a [u8], why: &'static str) -> Result<&'a str, HeadError> {
    if !b.iter().all(|&c| c == b'\t' || (c >= b' ' && c != 0x7f)) {
        return Err(HeadError::Malformed(why));
    }
    std::str::from_utf8(b).map_err(|_| HeadError::Malformed(why))
}

/// RFC 9110 section 5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
