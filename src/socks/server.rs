//! The server side of the SOCKS5 handshake (RFC 1928, RFC 1929): pure, bounded parsers of the
//! greeting, the username/password sub-negotiation and the request ([`parse_greeting`],
//! [`parse_auth`], [`parse_request`]), and [`handshake`], which drives them over a stream with
//! one deadline for the whole exchange and answers every error it can answer.
//!
//! Each parser takes the bytes received so far and returns `Ok(None)` while the message is
//! incomplete: no message is longer than its `*_MAX` constant, so a peer can never make us
//! buffer more than that before we decide.

use super::wire::{AUTH_VERSION, Addr, AddrError, Reply, VERSION, cmd, method};
use crate::http::auth::Credentials;
use crate::http::front::REFUSAL_WRITE;
use futures_lite::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Longest greeting: VER NMETHODS and up to 255 methods.
pub const GREETING_MAX: usize = 2 + 255;
/// Longest username/password message: VER ULEN UNAME(255) PLEN PASSWD(255).
pub const AUTH_MAX: usize = 3 + 255 + 255;
/// Longest request: VER CMD RSV ATYP, a 255-byte name with its length byte, the port.
pub const REQUEST_MAX: usize = 4 + 1 + 255 + 2;

/// What the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// a TCP stream to the address
    Connect,
    /// a UDP relay; the address is where the client will send from (often zeros)
    UdpAssociate,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// the command
    pub command: Command,
    /// the target (CONNECT) or the client's datagram source (UDP ASSOCIATE)
    pub addr: Addr,
}

/// RFC 1929 credentials as sent: bytes, not necessarily UTF-8. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPass {
    /// the user name (1 to 255 bytes)
    pub user: Vec<u8>,
    /// the password (1 to 255 bytes)
    pub pass: Vec<u8>,
}

impl fmt::Debug for UserPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPass")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("pass", &"***")
            .finish()
    }
}

/// Where in the handshake an error happened: it decides the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// reading the greeting (answer: method 0xFF)
    Greeting,
    /// reading the username/password message (answer: status 1)
    Auth,
    /// reading the request (answer: a reply code)
    Request,
}

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// a version byte other than 5 (or 1 for the sub-negotiation)
    Version(u8),
    /// the client offers no method we accept (with auth on: not username/password)
    NoAcceptableMethod,
    /// wrong credentials (or an empty user name or password)
    BadCredentials,
    /// BIND or a command RFC 1928 does not define
    Command(u8),
    /// an address type RFC 1928 does not define
    AddrType(u8),
    /// an empty or non-UTF-8 domain name
    BadName,
    /// the peer closed in the middle of a message
    Truncated,
    /// the handshake did not finish within the deadline
    Timeout,
    /// the socket failed
    Io(io::Error),
}

impl HandshakeError {
    /// The reply code a failed request is answered with.
    pub fn reply(&self) -> Reply {
        match self {
            HandshakeError::Command(_) => Reply::CommandNotSupported,
            HandshakeError::AddrType(_) => Reply::AddressTypeNotSupported,
            _ => Reply::GeneralFailure,
        }
    }

    /// True for a normal hang-up (nothing to answer, logged at debug).
    pub fn is_hangup(&self) -> bool {
        matches!(self, HandshakeError::Truncated | HandshakeError::Io(_))
    }

    /// The bytes that answer this error at `stage`, if the peer can still read an answer.
    pub fn answer(&self, stage: Stage) -> Option<Vec<u8>> {
        if self.is_hangup() {
            return None;
        }
        Some(match stage {
            Stage::Greeting => vec![VERSION, method::NO_ACCEPTABLE],
            Stage::Auth => vec![AUTH_VERSION, 1],
            Stage::Request => encode_reply(self.reply(), &unspecified()),
        })
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Version(v) => write!(f, "unknown version {v}"),
            HandshakeError::NoAcceptableMethod => f.write_str("no acceptable auth method"),
            HandshakeError::BadCredentials => f.write_str("wrong credentials"),
            HandshakeError::Command(c) => write!(f, "command 0x{c:02x} not supported"),
            HandshakeError::AddrType(t) => write!(f, "address type 0x{t:02x} not supported"),
            HandshakeError::BadName => f.write_str("bad domain name"),
            HandshakeError::Truncated => f.write_str("connection closed inside the handshake"),
            HandshakeError::Timeout => f.write_str("handshake not received in time"),
            HandshakeError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// `0.0.0.0:0`: the bound address of a reply that has none to give.
pub fn unspecified() -> Addr {
    Addr::Ip(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
}

/// A reply: `VER REP RSV ATYP BND.ADDR BND.PORT`.
pub fn encode_reply(reply: Reply, bound: &Addr) -> Vec<u8> {
    let mut out = vec![VERSION, reply as u8, 0];
    bound.encode(&mut out);
    out
}

/// A parser's answer: `None` while more bytes are needed, else the message and its length.
pub type Parsed<T> = Result<Option<(T, usize)>, HandshakeError>;

/// `VER NMETHODS METHODS...`: the methods offered.
pub fn parse_greeting(buf: &[u8]) -> Parsed<Vec<u8>> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(HandshakeError::Version(ver));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    let end = 2 + usize::from(n);
    Ok(buf.get(2..end).map(|m| (m.to_vec(), end)))
}

/// The method we choose from those offered: username/password when `auth` is on (and only
/// then), else none.
pub fn choose_method(offered: &[u8], auth: bool) -> Option<u8> {
    let want = if auth {
        method::USER_PASS
    } else {
        method::NONE
    };
    offered.contains(&want).then_some(want)
}

/// `VER(1) ULEN UNAME PLEN PASSWD` (RFC 1929).
pub fn parse_auth(buf: &[u8]) -> Parsed<UserPass> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != AUTH_VERSION {
        return Err(HandshakeError::Version(ver));
    }
    let Some(&ulen) = buf.get(1) else {
        return Ok(None);
    };
    let ulen = usize::from(ulen);
    let Some(&plen) = buf.get(2 + ulen) else {
        return Ok(None);
    };
    let end = 3 + ulen + usize::from(plen);
    if buf.len() < end {
        return Ok(None);
    }
    let user = buf[2..2 + ulen].to_vec();
    let pass = buf[3 + ulen..end].to_vec();
    // RFC 1929: both are 1 to 255 bytes.
    if user.is_empty() || pass.is_empty() {
        return Err(HandshakeError::BadCredentials);
    }
    Ok(Some((UserPass { user, pass }, end)))
}

/// `VER CMD RSV ATYP DST.ADDR DST.PORT`. The reserved byte is not checked (RFC 1928 gives it
/// no meaning, and clients in the wild send junk there).
pub fn parse_request(buf: &[u8]) -> Parsed<Request> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(HandshakeError::Version(ver));
    }
    let Some(&c) = buf.get(1) else {
        return Ok(None);
    };
    let command = match c {
        cmd::CONNECT => Command::Connect,
        cmd::UDP_ASSOCIATE => Command::UdpAssociate,
        other => return Err(HandshakeError::Command(other)),
    };
    if buf.len() < 4 {
        return Ok(None);
    }
    match Addr::decode(&buf[3..]) {
        Ok((addr, n)) => Ok(Some((Request { command, addr }, 3 + n))),
        Err(AddrError::Short) => Ok(None),
        Err(AddrError::BadType(t)) => Err(HandshakeError::AddrType(t)),
        Err(AddrError::BadName) => Err(HandshakeError::BadName),
    }
}

/// Reads one message with `parse`; bytes past it stay in `r`.
async fn read_message<R, T>(
    r: &mut R,
    acc: &mut Vec<u8>,
    parse: fn(&[u8]) -> Parsed<T>,
) -> Result<T, HandshakeError>
where
    R: AsyncBufRead + Unpin,
{
    acc.clear();
    loop {
        let buf = r.fill_buf().await.map_err(HandshakeError::Io)?;
        if buf.is_empty() {
            return Err(HandshakeError::Truncated);
        }
        let before = acc.len();
        // No message is longer than its parser's *_MAX (< 1 KiB), so `acc` stays that short
        // plus one read: a parser answers (or fails) once the longest message fits.
        acc.extend_from_slice(buf);
        match parse(acc)? {
            Some((msg, len)) => {
                r.consume(len - before);
                return Ok(msg);
            }
            None => {
                let n = acc.len() - before;
                r.consume(n);
            }
        }
    }
}

/// Runs the server side of the handshake on `r`/`w` within `timeout`: greeting, method
/// choice, credentials when `auth` is set, and the request, which is returned (its reply is
/// the caller's). Every error is answered where an answer can still be read (method 0xFF,
/// auth status 1, or a reply code) before it is returned. Bytes the client sent behind the
/// request stay in `r`.
pub async fn handshake<R, W>(
    r: &mut R,
    w: &mut W,
    auth: Option<&Credentials>,
    timeout: Duration,
) -> Result<Request, HandshakeError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut stage = Stage::Greeting;
    let negotiate = negotiate(r, w, auth, &mut stage);
    let result = crate::time::with_timeout(timeout, negotiate, || HandshakeError::Timeout).await;
    if let Err(e) = &result
        && let Some(answer) = e.answer(stage)
    {
        let write = async {
            w.write_all(&answer).await?;
            w.flush().await?;
            w.close().await
        };
        // The peer may have gone or may not read: the error is what the caller logs.
        crate::time::within(REFUSAL_WRITE, write).await;
    }
    result
}

async fn negotiate<R, W>(
    r: &mut R,
    w: &mut W,
    auth: Option<&Credentials>,
    stage: &mut Stage,
) -> Result<Request, HandshakeError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut acc = Vec::with_capacity(64);
    let offered = read_message(r, &mut acc, parse_greeting).await?;
    let chosen =
        choose_method(&offered, auth.is_some()).ok_or(HandshakeError::NoAcceptableMethod)?;
    w.write_all(&[VERSION, chosen])
        .await
        .map_err(HandshakeError::Io)?;
    if let Some(creds) = auth {
        *stage = Stage::Auth;
        let given = read_message(r, &mut acc, parse_auth).await?;
        if !creds.matches_user_pass(&given.user, &given.pass) {
            return Err(HandshakeError::BadCredentials);
        }
        w.write_all(&[AUTH_VERSION, 0])
            .await
            .map_err(HandshakeError::Io)?;
    }
    *stage = Stage::Request;
    read_message(r, &mut acc, parse_request).await
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
