//! Datagrams from a dialer's network: the seam a SOCKS5 UDP ASSOCIATE relays through.
//!
//! A [`UdpAssoc`] is one association: datagrams to any `host:port` go in at [`UdpAssoc::out`]
//! and the answers come back at [`UdpAssoc::back`], each with the address it came from. Its
//! [`UdpAssoc::run`] future moves them (a UDP socket of our own for the direct dialer, a UDP
//! flow through the tunnel for the mux dialer) and must be polled for as long as the
//! association lives; dropping it ends the association. Both queues are bounded: a full one
//! drops the datagram (UDP semantics), and whoever drops counts it.

use async_tungstenite::tungstenite::Bytes;
use smol::channel::{Receiver, Sender};
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// Datagrams that may wait in each direction of an association; more are dropped.
pub const ASSOC_QUEUE: usize = 64;

/// One datagram and its far end (where it goes, or where it came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// host name or IP literal (no brackets)
    pub host: String,
    /// port
    pub port: u16,
    /// the payload, whole (0 to 65,507 bytes)
    pub payload: Bytes,
}

/// One UDP association from a dialer's network.
pub struct UdpAssoc {
    /// datagrams to send: `try_send`, and a full queue drops
    pub out: Sender<Datagram>,
    /// datagrams that came back from targets; closed when the association ended
    pub back: Receiver<Datagram>,
    /// moves the datagrams; poll it beside the association's use, drop it to end it
    pub run: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl fmt::Debug for UdpAssoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpAssoc")
            .field("out", &self.out.len())
            .field("back", &self.back.len())
            .finish_non_exhaustive()
    }
}
