//! SOCKS5 on the proxy door: the handshake (`socks::server`), then CONNECT through the same
//! dialer, rules and timeouts as an HTTP CONNECT, answered with the reply code for the
//! refusal; UDP ASSOCIATE is `socks_udp`.

use super::conn::{Conn, Setup, reply_for};
use crate::dial::Dialer;
use crate::socks::server::{self, Command, HandshakeError, encode_reply, unspecified};
use crate::socks::{Addr, Reply};
use futures_lite::io::BufReader;
use smol::net::TcpStream;
use std::time::Duration;

impl<D: Dialer> Conn<D> {
    /// Serves a SOCKS5 client: the handshake within `timeout`, then its request.
    pub(super) async fn socks(
        &mut self,
        stream: &TcpStream,
        mut reader: BufReader<TcpStream>,
        target: &mut String,
        timeout: Duration,
    ) -> Setup<D::Stream> {
        let mut w = stream.clone();
        let auth = self.config.auth.as_ref();
        let request = match server::handshake(&mut reader, &mut w, auth, timeout).await {
            Ok(r) => r,
            Err(e) => return Setup::Done(self.handshake_error(e)),
        };
        match request.command {
            Command::Connect => {
                *target = request.addr.to_string();
                self.socks_connect(stream, reader, &request.addr).await
            }
            Command::UdpAssociate => {
                *target = "udp".to_string();
                Setup::Done(self.associate(stream, reader).await)
            }
        }
    }

    /// Logs a failed handshake (already answered) and returns the outcome.
    fn handshake_error(&self, e: HandshakeError) -> String {
        let (id, peer) = (self.id, self.peer);
        match &e {
            e if e.is_hangup() => log::debug!("conn {id} {peer}: socks5 {e}"),
            HandshakeError::NoAcceptableMethod if self.config.auth.is_some() => {
                log::warn!("conn {id} {peer}: socks5 credentials required (method 0xff)")
            }
            HandshakeError::BadCredentials => {
                log::warn!("conn {id} {peer}: socks5 wrong credentials (status 1)")
            }
            e => log::warn!("conn {id} {peer}: socks5 {e}"),
        }
        e.to_string()
    }

    /// Dials the CONNECT target and writes the success reply (with the bound address), then
    /// the bytes that came early from either side, which are never dropped.
    async fn socks_connect(
        &mut self,
        stream: &TcpStream,
        reader: BufReader<TcpStream>,
        addr: &Addr,
    ) -> Setup<D::Stream> {
        let (host, port) = addr.host_port();
        let (upstream, early) = match self.dialer.dial(&host, port).await {
            Ok(pair) => pair,
            Err(e) => {
                let reply = reply_for(&e);
                log::warn!(
                    "conn {} {}: CONNECT {addr}: {e} (socks5 {:#04x} {reply})",
                    self.id,
                    self.peer,
                    reply as u8,
                );
                self.socks_refuse(stream, reply).await;
                return Setup::Done(format!("{reply}: {e}"));
            }
        };
        // The upstream socket's own address when there is one; a mux stream has none.
        let bound = D::tcp(&upstream)
            .and_then(|t| t.local_addr().ok())
            .map_or_else(unspecified, Addr::Ip);
        let ok = encode_reply(Reply::Succeeded, &bound);
        self.established(stream, reader, upstream, &ok, early).await
    }
}
