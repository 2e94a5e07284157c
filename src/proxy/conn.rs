//! One proxy client connection: what every request handler on it shares (identity, config,
//! dialer, byte counts) and the answers it gives on its own (auth challenge, error replies,
//! SOCKS5 failure replies).

use super::config::ProxyConfig;
use crate::dial::{DialError, Dialer};
use crate::http::auth;
use crate::http::front::{self, REFUSAL_WRITE, ReadError};
use crate::http::head::RequestHead;
use crate::shutdown::ShutdownSignal;
use crate::socks::Reply;
use crate::socks::server::{encode_reply, unspecified};
use futures_lite::io::AsyncWriteExt;
use smol::net::TcpStream;
use std::net::SocketAddr;
use std::sync::Arc;

/// One client connection.
pub(super) struct Conn<D> {
    pub(super) id: u64,
    pub(super) peer: SocketAddr,
    pub(super) config: Arc<ProxyConfig>,
    pub(super) dialer: Arc<D>,
    pub(super) shutdown: ShutdownSignal,
    /// bytes client → target/origin
    pub(super) up: u64,
    /// bytes target/origin → client
    pub(super) down: u64,
    /// the client speaks SOCKS5 (shown in the log line)
    pub(super) socks: bool,
}

/// What a request handler asks the connection loop to do next.
pub(super) enum Next {
    /// Done: close the connection with this outcome for the log line.
    Close(String),
    /// A further request arrived on a keep-alive connection.
    Request(RequestHead),
}

/// How the setup of a connection ended.
pub(super) enum Setup<S> {
    /// Answered (or failed) and done: the outcome for the log line.
    Done(String),
    /// A CONNECT tunnel is established and its handshake written: relay it.
    Tunnel(S),
}

impl<D: Dialer> Conn<D> {
    /// Answers an unreadable head (or nothing, when the peer just left).
    pub(super) async fn head_error(&mut self, stream: &TcpStream, e: ReadError) -> String {
        match e.status() {
            Some(status) => {
                log::warn!("conn {} {}: {e} ({status})", self.id, self.peer);
                self.reply(stream, status, &e.to_string(), &[]).await
            }
            None => format!("{e}"),
        }
    }

    /// Checks `Proxy-Authorization` when auth is on. `Err` carries the 407 outcome.
    pub(super) async fn authorize(
        &mut self,
        stream: &TcpStream,
        head: &RequestHead,
    ) -> Result<(), String> {
        let Some(creds) = &self.config.auth else {
            return Ok(());
        };
        let header = head.headers.get("proxy-authorization");
        if creds.matches_header(header) {
            return Ok(());
        }
        let why = if header.is_some() {
            "wrong credentials"
        } else {
            "credentials required"
        };
        log::warn!("conn {} {}: {why} (407)", self.id, self.peer);
        let challenge = [("Proxy-Authenticate", auth::challenge())];
        Err(self.reply(stream, 407, why, &challenge).await)
    }

    /// Sends an error response and returns the log outcome.
    pub(super) async fn reply(
        &mut self,
        stream: &TcpStream,
        status: u16,
        why: &str,
        extra: &[(&str, &str)],
    ) -> String {
        // The client reads the answer, not a reset: write, flush, then stop sending.
        if let Err(e) = front::refuse(stream.clone(), status, why, extra, REFUSAL_WRITE).await {
            log::debug!("conn {}: answering {status}: {e}", self.id);
        }
        format!("{status} {why}")
    }

    /// Answers a request with a failure reply: write, flush, then stop sending.
    pub(super) async fn socks_refuse(&self, stream: &TcpStream, reply: Reply) {
        let mut w = stream.clone();
        let answer = encode_reply(reply, &unspecified());
        let write = async {
            w.write_all(&answer).await?;
            w.flush().await?;
            w.close().await
        };
        match crate::time::within(REFUSAL_WRITE, write).await {
            Some(Ok(())) => {}
            Some(Err(e)) => log::debug!("conn {}: answering socks5 {reply}: {e}", self.id),
            None => log::debug!("conn {}: socks5 {reply} not taken in time", self.id),
        }
    }
}

/// The reply that answers a failed dial.
pub(super) fn reply_for(e: &DialError) -> Reply {
    match e {
        DialError::Unsupported { .. } => Reply::CommandNotSupported,
        e => Reply::for_refusal(e.refusal()),
    }
}

impl<D: Dialer> Conn<D> {
    /// A tunnel's dial succeeded: writes the client's answer `ok` (a `200`, a SOCKS5 reply),
    /// then the bytes that came early from either side (a TLS ClientHello behind the request,
    /// an SSH banner behind an upstream's answer), which are never dropped.
    pub(super) async fn established(
        &mut self,
        stream: &TcpStream,
        reader: futures_lite::io::BufReader<TcpStream>,
        upstream: D::Stream,
        ok: &[u8],
        early: Vec<u8>,
    ) -> Setup<D::Stream> {
        let pending = reader.buffer().to_vec();
        drop(reader);
        let (mut client_w, mut up_w) = (stream.clone(), upstream.clone());
        let handshake = async {
            client_w.write_all(ok).await?;
            client_w.write_all(&early).await?;
            up_w.write_all(&pending).await
        };
        if let Err(e) = handshake.await {
            return Setup::Done(format!("handshake write failed: {e}"));
        }
        self.up += pending.len() as u64;
        self.down += early.len() as u64;
        Setup::Tunnel(upstream)
    }
}
