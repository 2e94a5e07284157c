//! The WebSocket transport: tunnel URLs, the client handshake (token, session id, version), the
//! relay's side of the upgrade (after the front door has read the head), and the limits every
//! WebSocket here runs with.

use super::frame::{MAX_FRAME, VERSION};
use crate::http::head::RequestHead;
use crate::refusal::Refusal;
use crate::secret::Secret;
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use futures_lite::io::{AsyncRead, AsyncWrite};
use std::fmt;
use std::str::FromStr;

mod upgrade;
pub use upgrade::{Upgrade, bearer, check_upgrade, check_upgrade_with, switching_protocols};

/// Any byte stream a session can run over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed transport: TCP, TLS over TCP, either through a proxy chain.
pub type BoxIo = Box<dyn Io>;

/// The tunnel's URL path on the relay.
pub const TUNNEL_PATH: &str = "/burrow";
/// How long a WebSocket handshake (TLS and head included) may take, by default.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Header carrying the protocol version.
pub const VERSION_HEADER: &str = "Burrow-Version";
/// Header carrying the client's session id (for getting its bindings back on reconnect).
pub const SESSION_HEADER: &str = "Burrow-Session";
/// Header of resumable sessions: the client asks for `new` or for the key of the session to
/// resume; the relay answers with the key of the session it serves on this connection.
pub const RESUME_HEADER: &str = "Burrow-Resume";
/// Header of the relay's answer: how long (whole seconds) it holds a session whose connection
/// was lost.
pub const GRACE_HEADER: &str = "Burrow-Grace";

/// Header of the relay's answer: the optional protocol features it understands, a
/// comma-separated list (`unbind`, `pool`). A relay without it understands none of them.
pub const CAPS_HEADER: &str = "Burrow-Caps";
/// The capability a relay announces when it understands UNBIND.
pub const CAP_UNBIND: &str = "unbind";
/// The capability a relay announces when it understands a BIND's pool fields.
pub const CAP_POOL: &str = "pool";
/// The capability either side announces when it understands UDP flows (their OPEN targets,
/// DGRAM, BIND udp) and the refusal code 8 (connection refused). The client announces it in
/// its request, the relay in its answer; each sends them only to a peer that announced it.
pub const CAP_UDP: &str = "udp";

/// The optional features a relay announced in [`CAPS_HEADER`]; unknown ones are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// the relay closes a binding's listener on UNBIND
    pub unbind: bool,
    /// the relay reads a BIND's pool fields (pools)
    pub pool: bool,
    /// the peer understands UDP flows
    pub udp: bool,
}

impl Caps {
    /// Reads a [`CAPS_HEADER`] value (`None`: the header was absent: no capabilities).
    pub fn parse(value: Option<&str>) -> Caps {
        let has = |cap: &str| {
            value.is_some_and(|v| v.split(',').any(|c| c.trim().eq_ignore_ascii_case(cap)))
        };
        Caps {
            unbind: has(CAP_UNBIND),
            pool: has(CAP_POOL),
            udp: has(CAP_UDP),
        }
    }
}

/// What the relay offered for resuming: the key of the session it serves on this connection
/// (the one asked for if it resumed it) and how long it holds it when the connection is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeOffer {
    /// the session's key
    pub key: String,
    /// how long the relay holds the session without a connection
    pub grace: std::time::Duration,
}

/// What a client asks for in [`RESUME_HEADER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeAsk {
    /// a new session that can be resumed later
    New,
    /// continue the session with this key
    Key(String),
}

/// WebSocket limits: one frame per message, so nothing larger than a frame is ever needed.
///
/// Writes are gathered up to four DATA frames per system call (the writer flushes at the end
/// of every batch, so nothing waits for the buffer to fill). Reads stay at 64 KiB: tungstenite
/// zeroes the whole read size before every read, which a small message would pay for too.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(256 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME))
}

/// A relay URL: `ws://host[:port][/path]` or `wss://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelUrl {
    /// true for `wss://`
    pub tls: bool,
    /// host name or IP literal (no brackets)
    pub host: String,
    /// port (default 80 / 443)
    pub port: u16,
    /// path, default [`TUNNEL_PATH`]
    pub path: String,
}

impl FromStr for TunnelUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("wss://") {
            (true, r)
        } else {
            return Err(format!(
                "bad relay url {s:?}: expected ws://HOST[:PORT][/PATH] or wss://…"
            ));
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let default = if tls { 443 } else { 80 };
        let (host, port) = crate::dial::split_host_port(hostport, default)
            .ok_or_else(|| format!("bad relay url {s:?}: bad host or port"))?;
        let path = if path.is_empty() || path == "/" {
            TUNNEL_PATH.to_string()
        } else {
            path.to_string()
        };
        Ok(TunnelUrl {
            tls,
            host,
            port,
            path,
        })
    }
}

impl fmt::Display for TunnelUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        write!(
            f,
            "{scheme}://{}{}",
            crate::dial::host_port(&self.host, self.port),
            self.path
        )
    }
}

/// Why the client's handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// 401: wrong or missing token. Retrying will not help.
    Unauthorized(String),
    /// The relay speaks another protocol version. Retrying will not help.
    Version(String),
    /// Any other non-101 answer.
    Rejected(u16, String),
    /// The transport or the WebSocket layer failed.
    Failed(String),
}

impl HandshakeError {
    /// True when retrying cannot succeed (stop instead of looping).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            HandshakeError::Unauthorized(_) | HandshakeError::Version(_)
        )
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Unauthorized(why) => write!(f, "relay refused the token (401): {why}"),
            HandshakeError::Version(why) => write!(f, "protocol version mismatch: {why}"),
            HandshakeError::Rejected(status, why) => write!(f, "relay answered {status}: {why}"),
            HandshakeError::Failed(why) => write!(f, "websocket handshake failed: {why}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Upgrades `stream` (already connected to the relay, TLS done if any) to the tunnel.
pub async fn client_handshake<S>(
    stream: S,
    url: &TunnelUrl,
    token: Option<&Secret>,
    session_id: &str,
) -> Result<WebSocketStream<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    Ok(handshake(stream, url, token, session_id, None).await?.0)
}

/// A finished upgrade: the tunnel, the relay's resume offer (`None`: it cannot resume, or
/// it was not asked) and the capabilities it announced.
pub type Upgraded<S> = (WebSocketStream<S>, Option<ResumeOffer>, Caps);

/// [`client_handshake`] for a resumable session: asks for `resume`; the relay's offer is
/// `None` when it does not resume sessions (an older relay).
pub async fn client_handshake_resumable<S>(
    stream: S,
    url: &TunnelUrl,
    token: Option<&Secret>,
    session_id: &str,
    resume: &ResumeAsk,
) -> Result<(WebSocketStream<S>, Option<ResumeOffer>), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    handshake(stream, url, token, session_id, Some(resume)).await
}

async fn handshake<S>(
    stream: S,
    url: &TunnelUrl,
    token: Option<&Secret>,
    session_id: &str,
    resume: Option<&ResumeAsk>,
) -> Result<(WebSocketStream<S>, Option<ResumeOffer>), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws, offer, _) = client_handshake_caps(stream, url, token, session_id, resume).await?;
    Ok((ws, offer))
}

/// [`client_handshake`] that also returns what the relay announced: its resume offer when
/// `resume` asks for one, and its [`Caps`].
pub async fn client_handshake_caps<S>(
    stream: S,
    url: &TunnelUrl,
    token: Option<&Secret>,
    session_id: &str,
    resume: Option<&ResumeAsk>,
) -> Result<Upgraded<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let fail = |e: &dyn fmt::Display| HandshakeError::Failed(e.to_string());
    let mut req = url
        .to_string()
        .into_client_request()
        .map_err(|e| fail(&e))?;
    let headers = req.headers_mut();
    let value = |s: &str| {
        s.parse()
            .map_err(|_| HandshakeError::Failed(format!("bad header value for {s:?}")))
    };
    headers.insert(VERSION_HEADER, value(&VERSION.to_string())?);
    headers.insert(SESSION_HEADER, value(session_id)?);
    headers.insert(CAPS_HEADER, value(CAP_UDP)?);
    match resume {
        Some(ResumeAsk::New) => {
            headers.insert(RESUME_HEADER, value("new")?);
        }
        Some(ResumeAsk::Key(k)) => {
            headers.insert(RESUME_HEADER, value(k)?);
        }
        None => {}
    }
    if let Some(t) = token {
        let v = format!("Bearer {}", t.expose());
        headers.insert(
            "Authorization",
            v.parse()
                .map_err(|_| HandshakeError::Failed("token is not a valid header value".into()))?,
        );
    }
    match async_tungstenite::client_async_with_config(req, stream, Some(ws_config())).await {
        Ok((ws, resp)) => {
            let offer = match resume {
                Some(_) => resume_offer(resp.headers())?,
                None => None,
            };
            let caps = resp.headers().get(CAPS_HEADER).map(|v| v.to_str());
            // A value that is not text announces nothing (fail closed: no UNBIND is sent).
            let caps = Caps::parse(caps.and_then(Result::ok));
            Ok((ws, offer, caps))
        }
        Err(async_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            Err(match status {
                401 => HandshakeError::Unauthorized(body),
                426 => HandshakeError::Version(body),
                s => HandshakeError::Rejected(s, body),
            })
        }
        Err(e) => Err(fail(&e)),
    }
}

/// The relay's resume offer in a `101`: none from a relay that does not resume sessions;
/// a malformed one fails the handshake (never guessed).
fn resume_offer(
    headers: &async_tungstenite::tungstenite::http::HeaderMap,
) -> Result<Option<ResumeOffer>, HandshakeError> {
    let Some(key) = headers.get(RESUME_HEADER) else {
        return Ok(None);
    };
    let bad = |what: &str| HandshakeError::Failed(format!("relay sent a bad {what} header"));
    let key = key.to_str().map_err(|_| bad(RESUME_HEADER))?.trim();
    if !valid_key(key) {
        return Err(bad(RESUME_HEADER));
    }
    let grace = headers
        .get(GRACE_HEADER)
        .ok_or_else(|| bad(GRACE_HEADER))?
        .to_str()
        .ok()
        .and_then(|g| g.trim().parse::<u64>().ok())
        .ok_or_else(|| bad(GRACE_HEADER))?;
    Ok(Some(ResumeOffer {
        key: key.to_string(),
        grace: std::time::Duration::from_secs(grace),
    }))
}

/// Session ids and resume keys: 1 to 64 characters of `[A-Za-z0-9-]`.
fn valid_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Wraps a stream whose upgrade response was written; `leftover` are bytes read past the head.
pub async fn server_stream<S>(stream: S, leftover: Vec<u8>) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(ws_config())).await
}

/// A random id (hex) for sessions, from the OS's randomness where available.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if from_os.is_err() {
        // No /dev/urandom: mix the clock and the address of a stack value.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ (&bytes as *const _ as usize as u128);
        bytes.copy_from_slice(&seed.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_read_from_a_list_and_absent_means_none() {
        let cases = [
            (None, false, false),
            (Some(""), false, false),
            (Some("unbind"), true, false),
            (Some(" Unbind "), true, false),
            (Some("later, unbind"), true, false),
            (Some("unbinding"), false, false),
            (Some("later"), false, false),
            (Some("unbind, pool"), true, true),
            (Some("pools,pool"), false, true),
        ];
        for (value, unbind, pool) in cases {
            let udp = false;
            assert_eq!(Caps::parse(value), Caps { unbind, pool, udp }, "{value:?}");
        }
        assert!(Caps::parse(Some("unbind, pool, udp")).udp);
        assert!(!Caps::parse(Some("udp2")).udp);
        let answer = String::from_utf8(upgrade::switching_protocols("x", None)).unwrap();
        assert!(
            answer.contains("\r\nBurrow-Caps: unbind, pool, udp\r\n"),
            "{answer}"
        );
    }

    #[test]
    fn tunnel_urls() {
        let u: TunnelUrl = "ws://relay.example".parse().unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (false, "relay.example", 80, "/burrow")
        );
        let u: TunnelUrl = "wss://[::1]:8443/t".parse().unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "::1", 8443, "/t")
        );
        assert_eq!(u.to_string(), "wss://[::1]:8443/t");
        for bad in ["http://x", "ws://", "ws://x:0", "ws://x:70000", "x:80"] {
            assert!(bad.parse::<TunnelUrl>().is_err(), "{bad}");
        }
    }
}
