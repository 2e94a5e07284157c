//! The client side of SOCKS5: asking a SOCKS5 proxy (an upstream hop `socks5://`) to CONNECT
//! to a target. Greeting (no auth, and username/password when we have credentials), RFC 1929
//! authentication, then the request.
//!
//! Every read is exact: the server's answers have known lengths (the reply's address says its
//! own), so not one byte past the reply is consumed and the stream can be handed over as is.
//! The whole exchange is at most 2 + 2 + 262 bytes from the server; the caller bounds it in
//! time.

use super::wire::{self, AUTH_VERSION, Addr, AddrError, Reply, VERSION, atyp, cmd, method};
use crate::http::auth::Credentials;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::fmt;
use std::io;

/// The longest user name or password RFC 1929 can carry (one length byte).
pub const MAX_CREDENTIAL_LEN: usize = 255;

/// Why a SOCKS5 CONNECT through a proxy failed.
#[derive(Debug)]
pub enum ClientError {
    /// Reading or writing failed (an unexpected EOF is [`ClientError::Closed`]).
    Io(io::Error),
    /// The proxy closed the connection in the middle of the exchange.
    Closed,
    /// The proxy does not speak SOCKS5: its answer had this version byte.
    BadVersion(u8),
    /// The proxy accepts none of the methods we offered (it wants credentials we do not
    /// have, or another method).
    NoAcceptableMethod,
    /// The proxy picked a method we did not offer.
    BadMethod(u8),
    /// The proxy rejected our username/password (its RFC 1929 status byte).
    AuthFailed(u8),
    /// The proxy refused the CONNECT with this reply code (RFC 1928 §6; may be undefined).
    Refused(u8),
    /// The reply's reserved byte or bound address was malformed.
    BadReply(AddrError),
    /// The credentials do not fit RFC 1929 (a part longer than 255 bytes).
    CredentialsTooLong,
}

impl ClientError {
    /// True when the proxy wants credentials we do not have or rejected ours.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ClientError::NoAcceptableMethod | ClientError::AuthFailed(_)
        )
    }

    fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => ClientError::Closed,
            _ => ClientError::Io(e),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "i/o error: {e}"),
            ClientError::Closed => f.write_str("closed in the middle of the SOCKS5 handshake"),
            ClientError::BadVersion(v) => {
                write!(f, "not a SOCKS5 proxy (answered version byte 0x{v:02x})")
            }
            ClientError::NoAcceptableMethod => {
                f.write_str("no acceptable authentication method (credentials required?)")
            }
            ClientError::BadMethod(m) => {
                write!(f, "picked method 0x{m:02x}, which we did not offer")
            }
            ClientError::AuthFailed(s) => {
                write!(f, "rejected the username/password (status 0x{s:02x})")
            }
            ClientError::Refused(code) => match Reply::from_u8(*code) {
                Some(r) => write!(f, "refused the CONNECT: {r} (0x{code:02x})"),
                None => write!(f, "refused the CONNECT with unknown reply 0x{code:02x}"),
            },
            ClientError::BadReply(e) => write!(f, "bad reply to CONNECT: {e}"),
            ClientError::CredentialsTooLong => {
                f.write_str("user name or password longer than 255 bytes (SOCKS5 limit)")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// The greeting: the methods we offer. Username/password only when we have credentials.
pub fn greeting(auth: Option<&Credentials>) -> Vec<u8> {
    match auth {
        Some(_) => vec![VERSION, 2, method::NONE, method::USER_PASS],
        None => vec![VERSION, 1, method::NONE],
    }
}

/// The RFC 1929 request: `VER ULEN UNAME PLEN PASSWD`.
pub fn auth_request(auth: &Credentials) -> Result<Vec<u8>, ClientError> {
    let (user, pass) = (auth.user.as_bytes(), auth.pass.expose().as_bytes());
    if user.len() > MAX_CREDENTIAL_LEN || pass.len() > MAX_CREDENTIAL_LEN {
        return Err(ClientError::CredentialsTooLong);
    }
    let mut out = Vec::with_capacity(3 + user.len() + pass.len());
    out.push(AUTH_VERSION);
    out.push(user.len() as u8);
    out.extend_from_slice(user);
    out.push(pass.len() as u8);
    out.extend_from_slice(pass);
    Ok(out)
}

/// The CONNECT request for `target`: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
pub fn connect_request(target: &Addr) -> Vec<u8> {
    let mut out = vec![VERSION, cmd::CONNECT, 0];
    target.encode(&mut out);
    out
}

/// Runs the client handshake on `stream` and asks for a CONNECT to `target`; returns the
/// address the proxy bound (its `BND.ADDR`). On success the stream carries the target's bytes
/// and nothing of it has been read. Not cancel-safe (a half-done handshake leaves the stream
/// useless): callers race it with a timeout and drop the stream when the time runs out.
pub async fn connect<S>(
    stream: &mut S,
    auth: Option<&Credentials>,
    target: &Addr,
) -> Result<Addr, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Fail before any byte is sent when the credentials cannot be carried.
    let auth_req = auth.map(auth_request).transpose()?;
    write(stream, &greeting(auth)).await?;
    let [ver, chosen] = read_array::<_, 2>(stream).await?;
    if ver != VERSION {
        return Err(ClientError::BadVersion(ver));
    }
    match (chosen, &auth_req) {
        (method::NONE, _) => {}
        (method::USER_PASS, Some(req)) => {
            write(stream, req).await?;
            let [ver, status] = read_array::<_, 2>(stream).await?;
            if ver != AUTH_VERSION {
                return Err(ClientError::BadVersion(ver));
            }
            if status != 0 {
                return Err(ClientError::AuthFailed(status));
            }
        }
        (method::NO_ACCEPTABLE, _) => return Err(ClientError::NoAcceptableMethod),
        (other, _) => return Err(ClientError::BadMethod(other)),
    }
    write(stream, &connect_request(target)).await?;
    read_reply(stream).await
}

/// Reads a reply exactly: the 4 fixed bytes, then the address its type announces.
async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Addr, ClientError> {
    // RSV is reserved: its value does not change the reply's meaning or length.
    let [ver, rep, _rsv, kind] = read_array::<_, 4>(stream).await?;
    if ver != VERSION {
        return Err(ClientError::BadVersion(ver));
    }
    if rep != Reply::Succeeded as u8 {
        // The bound address of a failure carries nothing we need; the stream is dropped.
        return Err(ClientError::Refused(rep));
    }
    // Enough bytes for the longest address: ATYP, 1 + 255 name bytes, 2 port bytes.
    let mut buf = vec![kind];
    let rest = match kind {
        atyp::IPV4 => 4 + 2,
        atyp::IPV6 => 16 + 2,
        atyp::DOMAIN => {
            let [len] = read_array::<_, 1>(stream).await?;
            buf.push(len);
            len as usize + 2
        }
        other => return Err(ClientError::BadReply(AddrError::BadType(other))),
    };
    let start = buf.len();
    buf.resize(start + rest, 0);
    stream
        .read_exact(&mut buf[start..])
        .await
        .map_err(ClientError::from_io)?;
    let (addr, _) = wire::Addr::decode(&buf).map_err(ClientError::BadReply)?;
    Ok(addr)
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), ClientError> {
    stream
        .write_all(bytes)
        .await
        .map_err(ClientError::from_io)?;
    stream.flush().await.map_err(ClientError::from_io)
}

async fn read_array<S: AsyncRead + Unpin, const N: usize>(
    stream: &mut S,
) -> Result<[u8; N], ClientError> {
    let mut out = [0u8; N];
    stream
        .read_exact(&mut out)
        .await
        .map_err(ClientError::from_io)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::io::Cursor;

    /// A scripted peer in memory: what the server "sends" is `input`, what we send lands in
    /// `output`.
    struct Script {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::pin::Pin::new(&mut self.input).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Script {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.output.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn run(
        server: &[u8],
        auth: Option<&Credentials>,
        target: &Addr,
    ) -> (Result<Addr, ClientError>, Vec<u8>, Vec<u8>) {
        let mut s = Script {
            input: Cursor::new(server.to_vec()),
            output: Vec::new(),
        };
        let r = smol::block_on(connect(&mut s, auth, target));
        let pos = s.input.position() as usize;
        (r, s.output, server[pos..].to_vec())
    }

    fn name() -> Addr {
        Addr::Domain("example.com".into(), 443)
    }

    const OK_V4: [u8; 10] = [5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90];

    #[test]
    fn no_auth_connect_by_name_sends_exact_bytes_and_reads_nothing_past_the_reply() {
        let mut server = vec![5, 0];
        server.extend_from_slice(&OK_V4);
        server.extend_from_slice(b"early data");
        let (r, sent, left) = run(&server, None, &name());
        assert_eq!(r.unwrap(), Addr::Ip("10.0.0.1:8080".parse().unwrap()));
        let mut want = vec![5, 1, 0, 5, 1, 0, 3, 11];
        want.extend_from_slice(b"example.com");
        want.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(sent, want);
        assert_eq!(left, b"early data", "bytes after the reply stay unread");
    }

    #[test]
    fn user_pass_auth_and_ip_targets() {
        let creds: Credentials = "alice:s3cret".parse().unwrap();
        let mut server = vec![5, 2, 1, 0];
        // A reply with an IPv6 bound address, then one with a name: both read exactly.
        server.extend_from_slice(&[5, 0, 0, 4]);
        server.extend_from_slice(&[0; 18]);
        server.push(0xAA);
        let target = Addr::Ip("[::1]:22".parse().unwrap());
        let (r, sent, left) = run(&server, Some(&creds), &target);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(left, [0xAA]);
        let mut want = vec![5, 2, 0, 2, 1, 5];
        want.extend_from_slice(b"alice");
        want.push(6);
        want.extend_from_slice(b"s3cret");
        want.extend_from_slice(&[
            5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 22,
        ]);
        assert_eq!(sent, want);

        let mut server = vec![5, 0, 5, 0, 0, 3, 4];
        server.extend_from_slice(b"host");
        server.extend_from_slice(&[0, 80, 0xBB]);
        let target = Addr::Ip("1.2.3.4:80".parse().unwrap());
        let (r, sent, left) = run(&server, Some(&creds), &target);
        assert_eq!(r.unwrap(), Addr::Domain("host".into(), 80));
        assert_eq!(left, [0xBB]);
        // The server picked "no auth": no RFC 1929 request was sent.
        assert_eq!(sent, [5, 2, 0, 2, 5, 1, 0, 1, 1, 2, 3, 4, 0, 80]);
    }

    #[test]
    fn failures_are_typed() {
        let creds: Credentials = "u:p".parse().unwrap();
        let cases: Vec<(Vec<u8>, Option<&Credentials>, &str)> = vec![
            (vec![5, 0xFF], None, "NoAcceptableMethod"),
            (vec![5, 2], None, "BadMethod(2)"),
            (vec![5, 2, 1, 1], Some(&creds), "AuthFailed(1)"),
            (vec![4, 0], None, "BadVersion(4)"),
            (vec![5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0], None, "Refused(5)"),
            (vec![5, 0, 5, 0x2A, 0, 1], None, "Refused(42)"),
            (vec![5, 0, 5, 0, 0, 9], None, "BadReply(BadType(9))"),
            (vec![5, 0, 5, 0, 0, 1, 1, 2, 3], None, "Closed"),
            (vec![5], None, "Closed"),
            (vec![], None, "Closed"),
        ];
        for (server, auth, want) in cases {
            let (r, _, _) = run(&server, auth, &name());
            assert_eq!(format!("{:?}", r.unwrap_err()), want, "{server:?}");
        }
        assert!(ClientError::NoAcceptableMethod.is_auth());
        assert!(ClientError::AuthFailed(1).is_auth());
        assert!(!ClientError::Refused(2).is_auth());
    }

    #[test]
    fn long_credentials_are_refused_before_sending() {
        let long = format!("u:{}", "x".repeat(256));
        let creds: Credentials = long.parse().unwrap();
        let (r, sent, _) = run(&[5, 2], Some(&creds), &name());
        assert!(matches!(r, Err(ClientError::CredentialsTooLong)));
        assert!(sent.is_empty());
    }
}
