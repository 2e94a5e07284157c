//! One attempt to reach the relay: through the `--via` proxies, TLS for `wss://`, the
//! WebSocket upgrade, each bounded; and the one place a failure is classified as fatal or
//! worth a retry.

use super::*;
use crate::tunnel::ws::{Caps, ResumeAsk, ResumeOffer};

/// A failed connection attempt, classified in one place: fatal when retrying cannot help
/// (the user has to fix something: credentials, token, certificate, version), otherwise
/// retried with backoff. Each layer's error says which it is (`is_fatal`, `is_hop_auth`).
pub(super) enum AttemptError {
    /// Stop: the client exits with this error.
    Fatal(String),
    /// Try again after the backoff.
    Retry(String),
}

impl AttemptError {
    fn classify(why: impl std::fmt::Display, fatal: bool) -> Self {
        match fatal {
            true => AttemptError::Fatal(why.to_string()),
            false => AttemptError::Retry(why.to_string()),
        }
    }
}

impl From<HandshakeError> for AttemptError {
    fn from(e: HandshakeError) -> Self {
        let fatal = e.is_fatal();
        AttemptError::classify(e, fatal)
    }
}

#[cfg(feature = "tls")]
impl From<crate::tls::HandshakeFailure> for AttemptError {
    fn from(e: crate::tls::HandshakeFailure) -> Self {
        let fatal = e.is_fatal();
        AttemptError::classify(e, fatal)
    }
}

/// An upgraded connection to the relay, and what the relay offered for resuming (`None`: it
/// cannot resume, or we did not ask).
pub(super) struct Link {
    pub(super) ws: WebSocketStream<BoxIo>,
    pub(super) offer: Option<ResumeOffer>,
    /// what the relay understands (UNBIND)
    pub(super) caps: Caps,
}

impl RelayLink {
    /// Connects, secures and upgrades, asking for `ask` (with `--no-resume`, nothing); the
    /// session is not running yet.
    pub(super) async fn connect_once(&self, ask: &ResumeAsk) -> Result<Link, AttemptError> {
        let cfg = &self.cfg;
        let url = &self.url;
        let (stream, early) = match cfg
            .via
            .connect(
                &url.host,
                url.port,
                &Rules::default(),
                ChainNames::ByName,
                cfg.connect_timeout,
            )
            .await
        {
            Ok(pair) => pair,
            Err(e) if e.is_hop_auth() => {
                let why = format!("{e} (check the credentials in --via)");
                return Err(AttemptError::classify(why, true));
            }
            Err(e) => {
                let why = format!("cannot reach relay {url}: {e}");
                return Err(AttemptError::classify(why, false));
            }
        };
        if !early.is_empty() {
            return Err(AttemptError::Retry(
                "relay spoke before the handshake".into(),
            ));
        }
        stream.set_nodelay(true).ok();
        let transport = self.secure(stream).await?;
        let token = cfg.token.as_ref();
        // With --no-resume, nothing is asked (and nothing offered).
        let ask = cfg.resume.then_some(ask);
        let handshake = ws::client_handshake_caps(transport, url, token, &self.session_id, ask);
        let (ws, offer, caps) = crate::time::with_timeout(cfg.handshake_timeout, handshake, || {
            HandshakeError::Failed("no answer to the upgrade in time".into())
        })
        .await?;
        Ok(Link { ws, offer, caps })
    }

    /// A new session for `link`: resumable when the relay offered it.
    pub(super) fn new_session(&self, link: &Link) -> (Session, crate::tunnel::Driver) {
        let mut cfg = self.cfg.session.clone();
        cfg.resumable = link.offer.is_some();
        cfg.udp = link.caps.udp;
        let label = format!("{}@{}", &self.session_id[..8], self.url);
        Session::new(Side::Client, cfg, label, self.metrics.clone())
    }

    /// TLS on top of the connection for `wss://` (bounded by the handshake timeout).
    async fn secure(&self, stream: TcpStream) -> Result<BoxIo, AttemptError> {
        if !self.url.tls {
            return Ok(Box::new(stream));
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            use crate::tls::HandshakeFailure;
            let handshake = tls.connect(&self.url.host, stream);
            let s = crate::time::with_timeout(self.cfg.handshake_timeout, handshake, || {
                HandshakeFailure::Failed("TLS handshake timed out".into())
            })
            .await?;
            return Ok(Box::new(s));
        }
        Err(AttemptError::Fatal(
            "wss:// needs TLS, and this build has none (the `tls` feature is off)".into(),
        ))
    }
}
