//! How the proxy reaches a target: the [`Dialer`] seam. The standalone proxy dials directly or
//! through an upstream chain; the tunnel's `:proxy` modes open a mux stream instead.

use super::DialError;
use super::chain::{ChainNames, Upstream};
use super::rules::Rules;
use super::udp::UdpAssoc;
use futures_lite::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use std::future::Future;
use std::time::Duration;

/// Opens byte streams to `host:port`.
pub trait Dialer: Send + Sync + 'static {
    /// The stream type; clones share the stream (one reads while another writes).
    type Stream: AsyncRead + AsyncWrite + Clone + Unpin + Send + Sync + 'static;

    /// Connects; returns the stream and any bytes that arrived before it was handed over
    /// (e.g. behind an upstream proxy's `200`).
    fn dial(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<(Self::Stream, Vec<u8>), DialError>> + Send;

    /// The plain TCP socket under `stream`, when it is one: the proxy then moves a tunnel's
    /// bytes with splice(2) ([`crate::splice::splice_tcp`]). `None` (the default) copies.
    fn tcp(stream: &Self::Stream) -> Option<&TcpStream> {
        let _ = stream;
        None
    }

    /// A UDP association from this dialer's network (SOCKS5 UDP ASSOCIATE): datagrams to any
    /// target the rules allow. The default: not supported (answered "command not supported").
    fn associate(&self) -> impl Future<Output = Result<UdpAssoc, DialError>> + Send {
        async {
            Err(DialError::Unsupported {
                what: "UDP ASSOCIATE",
                why: "not available here",
            })
        }
    }
}

/// Direct connections (or an upstream chain), with target rules and a connect timeout.
#[derive(Debug, Clone, Default)]
pub struct DirectDialer {
    /// the upstream chain (empty: direct)
    pub upstream: Upstream,
    /// target rules
    pub rules: Rules,
    /// how rules treat names the chain resolves
    pub names: ChainNames,
    /// limit for the whole connect (chain included)
    pub timeout: Duration,
}

impl Dialer for DirectDialer {
    type Stream = TcpStream;

    fn dial(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<(TcpStream, Vec<u8>), DialError>> + Send {
        self.upstream
            .connect(host, port, &self.rules, self.names, self.timeout)
    }

    /// Direct and chained connections are plain TCP once the chain's handshakes are done.
    fn tcp(stream: &TcpStream) -> Option<&TcpStream> {
        Some(stream)
    }

    /// Direct only: an upstream chain carries TCP streams, not datagrams.
    fn associate(&self) -> impl Future<Output = Result<UdpAssoc, DialError>> + Send {
        let chained = !self.upstream.hops.is_empty();
        let (rules, timeout) = (self.rules.clone(), self.timeout);
        async move {
            if chained {
                return Err(DialError::Unsupported {
                    what: "UDP ASSOCIATE",
                    why: "an upstream chain carries only TCP",
                });
            }
            super::udp_direct::associate(rules, timeout).await
        }
    }
}
