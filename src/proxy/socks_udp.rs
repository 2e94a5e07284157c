//! SOCKS5 UDP ASSOCIATE on the proxy door: a UDP socket of ours for the client's datagrams,
//! relayed through the dialer's association ([`Dialer::associate`]: our own UDP socket for the
//! direct dialer, a UDP flow through the tunnel for the mux dialer).
//!
//! Only datagrams from the client's IP are taken, and the first source port seen is the
//! client's from then on (RFC 1928 section 7); fragments are dropped. Every queue is bounded
//! and a full one drops (UDP semantics); drops are counted and shown in the log line. The
//! association ends when the control connection ends, when the dialer's association ends, or
//! when no datagram moved for the idle timeout.

use super::conn::{Conn, reply_for};
use crate::dial::Dialer;
use crate::dial::udp::{Datagram, UdpAssoc};
use crate::socks::server::encode_reply;
use crate::socks::{Addr, Reply, udp};
use crate::time::Sleep;
use async_tungstenite::tungstenite::Bytes;
use futures_lite::FutureExt;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use smol::channel::TrySendError;
use smol::net::{TcpStream, UdpSocket};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The largest datagram a client can send us (a UDP payload over IPv6 jumbo-less links):
/// whatever fits is read whole, so nothing is ever cut.
const RECV_BUF: usize = 65_535;

/// What one association moved and dropped.
#[derive(Default)]
struct Counts {
    /// payload bytes client → targets
    up: AtomicU64,
    /// payload bytes targets → client
    down: AtomicU64,
    /// datagrams relayed each way
    sent: AtomicU64,
    received: AtomicU64,
    /// datagrams dropped here: wrong source, bad header or fragment, a full queue, too big
    dropped: AtomicU64,
    /// when a datagram last moved, in milliseconds since the association began
    last: AtomicU64,
}

/// The association's shared state: the relay futures run on one task, each with `&Relay`.
struct Relay {
    sock: UdpSocket,
    /// the only IP datagrams are taken from: the control connection's peer
    client_ip: IpAddr,
    /// the client's datagram address: the first source seen from `client_ip`
    client: OnceLock<SocketAddr>,
    label: String,
    start: Instant,
    counts: Counts,
}

impl Relay {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.counts.last.store(ms, Relaxed);
    }

    fn drop_one(&self, why: &dyn std::fmt::Display) {
        let n = self.counts.dropped.fetch_add(1, Relaxed);
        // One line for the first drop; the count is in the connection's log line.
        if n == 0 {
            log::debug!("{}: udp datagram dropped: {why}", self.label);
        }
    }

    /// Client → targets, until the dialer's side is closed.
    async fn client_to_targets(&self, out: &smol::channel::Sender<Datagram>) -> String {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let (n, src) = match self.sock.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => return format!("udp receive failed: {e}"),
            };
            if src.ip().to_canonical() != self.client_ip {
                self.drop_one(&format_args!("from {src}, not the client"));
                continue;
            }
            if *self.client.get_or_init(|| src) != src {
                self.drop_one(&format_args!("from {src}, not the client's port"));
                continue;
            }
            let (addr, payload) = match udp::decode(&buf[..n]) {
                Ok(d) => d,
                Err(e) => {
                    self.drop_one(&e);
                    continue;
                }
            };
            let (host, port) = addr.host_port();
            let len = payload.len() as u64;
            let d = Datagram {
                host,
                port,
                payload: Bytes::copy_from_slice(payload),
            };
            match out.try_send(d) {
                Ok(()) => {
                    self.touch();
                    self.counts.up.fetch_add(len, Relaxed);
                    self.counts.sent.fetch_add(1, Relaxed);
                }
                Err(TrySendError::Full(_)) => self.drop_one(&"queue full"),
                Err(TrySendError::Closed(_)) => return "association closed".into(),
            }
        }
    }

    /// Targets → client, until the association ends.
    async fn targets_to_client(&self, back: &smol::channel::Receiver<Datagram>) -> String {
        while let Ok(d) = back.recv().await {
            // Nothing came from the client yet, so nothing can be an answer to it.
            let Some(&client) = self.client.get() else {
                self.drop_one(&"no datagram from the client yet");
                continue;
            };
            let Some(from) = Addr::from_host_port(&d.host, d.port) else {
                self.drop_one(&"bad source address");
                continue;
            };
            let bytes = udp::encode(&from, &d.payload);
            match self.sock.send_to(&bytes, client).await {
                Ok(_) => {
                    self.touch();
                    self.counts.down.fetch_add(d.payload.len() as u64, Relaxed);
                    self.counts.received.fetch_add(1, Relaxed);
                }
                // Too big with our header, or the client's socket is gone: UDP drops.
                Err(e) => self.drop_one(&e),
            }
        }
        "association ended".into()
    }

    /// Ends when no datagram moved either way for `idle`.
    async fn idle(&self, idle: Duration) -> String {
        loop {
            let last = Duration::from_millis(self.counts.last.load(Relaxed));
            let deadline = self.start + last + idle;
            if Instant::now() >= deadline {
                return "idle".into();
            }
            Sleep::until(deadline).await;
        }
    }
}

/// Reads the control connection until it ends (anything the client sends is ignored).
async fn control(mut reader: BufReader<TcpStream>) -> String {
    let mut buf = [0u8; 256];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return "closed".into(),
            Ok(_) => {}
            Err(e) => return format!("closed ({e})"),
        }
    }
}

impl<D: Dialer> Conn<D> {
    /// Serves a UDP ASSOCIATE: binds a UDP socket on the address the client reached us at,
    /// asks the dialer for an association, replies, and relays until the association ends.
    pub(super) async fn associate(
        &mut self,
        stream: &TcpStream,
        reader: BufReader<TcpStream>,
    ) -> String {
        let (id, peer) = (self.id, self.peer);
        let sock = match stream.local_addr() {
            Ok(local) => UdpSocket::bind((local.ip().to_canonical(), 0)).await,
            Err(e) => Err(e),
        };
        let (sock, bound) = match sock.and_then(|s| Ok((s.local_addr()?, s))) {
            Ok((bound, s)) => (s, bound),
            Err(e) => {
                log::warn!("conn {id} {peer}: socks5 UDP ASSOCIATE: cannot bind: {e}");
                self.socks_refuse(stream, Reply::GeneralFailure).await;
                return format!("udp bind failed: {e}");
            }
        };
        let UdpAssoc { out, back, run } = match self.dialer.associate().await {
            Ok(a) => a,
            Err(e) => {
                let reply = reply_for(&e);
                log::warn!(
                    "conn {id} {peer}: UDP ASSOCIATE: {e} (socks5 {:#04x} {reply})",
                    reply as u8
                );
                self.socks_refuse(stream, reply).await;
                return format!("{reply}: {e}");
            }
        };
        let mut w = stream.clone();
        if let Err(e) = w
            .write_all(&encode_reply(Reply::Succeeded, &Addr::Ip(bound)))
            .await
        {
            return format!("handshake write failed: {e}");
        }
        log::debug!("conn {id} {peer}: socks5 udp relay at {bound}");
        let relay = Relay {
            sock,
            client_ip: peer.ip().to_canonical(),
            client: OnceLock::new(),
            label: format!("conn {id} {peer}"),
            start: Instant::now(),
            counts: Counts::default(),
        };
        // Cancel-safety: each branch owns nothing the others need; whichever ends first ends
        // the association (dropping `run` ends the dialer's side).
        let end = relay
            .client_to_targets(&out)
            .or(relay.targets_to_client(&back))
            .or(async {
                run.await;
                "association ended".to_string()
            })
            .or(control(reader))
            .or(relay.idle(self.config.idle_timeout))
            .await;
        let c = &relay.counts;
        self.up += c.up.load(Relaxed);
        self.down += c.down.load(Relaxed);
        format!(
            "udp {end}: datagrams sent={} received={} dropped={}",
            c.sent.load(Relaxed),
            c.received.load(Relaxed),
            c.dropped.load(Relaxed)
        )
    }
}
