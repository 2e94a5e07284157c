//! A fault-injecting link between client and relay: a TCP forwarder on 127.0.0.1 that, on
//! command, cuts every connection passing through it now (FIN or RST), blackholes them (bytes
//! vanish, sockets stay open: a NAT that forgot the mapping), or refuses new ones. After a cut,
//! new connections pass normally. Grown from tests/common/tunnel.rs's `Forwarder`.

use futures_lite::future::zip;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{Shutdown, TcpListener, TcpStream};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a cut ends the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A FIN to both ends (`shutdown(Write)`), nothing passes after it: each end reads a
    /// clean EOF.
    Fin,
    /// `SO_LINGER` 0, then close: each end gets a reset.
    Rst,
    /// Stop passing bytes (both ways, EOF included) and keep the sockets open: only keepalive
    /// can tell the connection is dead.
    Blackhole,
}

/// A connection's state: bytes pass; bytes vanish into a blackhole; a FIN was sent both ways
/// and what still comes is read (so that closing later sends no reset) and dropped.
const PASS: u8 = 0;
const HOLE: u8 = 1;
const FIN_SENT: u8 = 2;

/// One connection through the link: both sockets (so a cut can reach them), its state, and
/// the task moving its bytes.
struct Conn {
    client_side: TcpStream,
    relay_side: TcpStream,
    mode: Arc<AtomicU8>,
    _task: smol::Task<()>,
}

struct Inner {
    /// where new connections go
    target: Mutex<SocketAddr>,
    conns: Mutex<Vec<Conn>>,
    refusing: AtomicBool,
    accepted: AtomicU64,
    /// bytes from the client that fell into a blackhole
    swallowed_up: AtomicU64,
    /// bytes from the relay that fell into a blackhole
    swallowed_down: AtomicU64,
    /// the mux frame types (first payload byte of each binary WebSocket message) from the
    /// client that fell into a blackhole, when it began at a message boundary (an idle link)
    frames_up: Mutex<Vec<u8>>,
}

/// Most frame types kept in `frames_up` (the rest are not recorded).
const MAX_FRAMES_SEEN: usize = 4096;

/// The forwarder; connect the client to `addr` instead of the relay.
pub struct Link {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    _accept: smol::Task<()>,
}

impl Link {
    pub async fn start(target: SocketAddr) -> Link {
        let l = TcpListener::bind(crate::common::lo()).await.unwrap();
        let addr = l.local_addr().unwrap();
        let inner = Arc::new(Inner {
            target: Mutex::new(target),
            conns: Mutex::default(),
            refusing: AtomicBool::default(),
            accepted: AtomicU64::default(),
            swallowed_up: AtomicU64::default(),
            swallowed_down: AtomicU64::default(),
            frames_up: Mutex::default(),
        });
        let i2 = inner.clone();
        let accept = smol::spawn(async move {
            while let Ok((a, _)) = l.accept().await {
                if i2.refusing.load(SeqCst) {
                    // Closed with a reset: the client's attempt fails at once.
                    rst(&a);
                    continue;
                }
                let target = *i2.target.lock().unwrap();
                let Ok(b) = TcpStream::connect(target).await else {
                    rst(&a);
                    continue;
                };
                i2.accepted.fetch_add(1, SeqCst);
                let mode = Arc::new(AtomicU8::new(PASS));
                let task = {
                    let (a, b, mode, i3) = (a.clone(), b.clone(), mode.clone(), i2.clone());
                    smol::spawn(async move {
                        let up = pump(a.clone(), b.clone(), &mode, &i3.swallowed_up, Some(&i3));
                        let down = pump(b, a, &mode, &i3.swallowed_down, None);
                        zip(up, down).await;
                    })
                };
                let mut conns = i2.conns.lock().unwrap();
                // Connections that ended (both ways closed) are let go; blackholed ones stay.
                conns.retain(|c| !c._task.is_finished() || c.mode.load(SeqCst) == HOLE);
                conns.push(Conn {
                    client_side: a,
                    relay_side: b,
                    mode,
                    _task: task,
                });
            }
        });
        Link {
            addr,
            inner,
            _accept: accept,
        }
    }

    /// Ends every connection passing through now, the way `how` says; later ones pass.
    pub fn cut(&self, how: Cut) {
        let mut conns = self.inner.conns.lock().unwrap();
        match how {
            Cut::Blackhole => {
                for c in conns.iter() {
                    c.mode.store(HOLE, SeqCst);
                }
            }
            Cut::Fin => {
                // Kept until both ends closed (their task ends), read and dropped meanwhile.
                for c in conns.iter() {
                    c.mode.store(FIN_SENT, SeqCst);
                    c.client_side.shutdown(Shutdown::Write).ok();
                    c.relay_side.shutdown(Shutdown::Write).ok();
                }
            }
            Cut::Rst => {
                for c in conns.drain(..) {
                    rst(&c.client_side);
                    rst(&c.relay_side);
                    // Dropping the pump task and the sockets closes them: a reset.
                }
            }
        }
    }

    /// While on, new connections are reset as soon as they are accepted.
    pub fn refuse(&self, on: bool) {
        self.inner.refusing.store(on, SeqCst);
    }

    /// New connections go to `target` from now on (a relay restarted elsewhere).
    pub fn retarget(&self, target: SocketAddr) {
        *self.inner.target.lock().unwrap() = target;
    }

    /// Connections passed through so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(SeqCst)
    }

    /// Bytes from the client that a blackhole swallowed.
    pub fn swallowed_up(&self) -> u64 {
        self.inner.swallowed_up.load(SeqCst)
    }

    /// The types of the mux frames from the client that a blackhole swallowed (meaningful when
    /// the link was idle as it went dark).
    pub fn swallowed_frames_up(&self) -> Vec<u8> {
        self.inner.frames_up.lock().unwrap().clone()
    }

    /// Bytes from the relay that a blackhole swallowed.
    pub fn swallowed_down(&self) -> u64 {
        self.inner.swallowed_down.load(SeqCst)
    }
}

/// Makes the socket's close send a reset (`SO_LINGER` 0).
fn rst(s: &TcpStream) {
    rustix::net::sockopt::set_socket_linger(s, Some(Duration::ZERO)).expect("SO_LINGER 0");
}

/// Moves bytes `from` → `to`, passing EOF on as a half-close; in a blackhole, bytes (and EOF)
/// are counted in `swallowed` and dropped; after a FIN cut, they are dropped.
async fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    mode: &AtomicU8,
    swallowed: &AtomicU64,
    frames: Option<&Inner>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut tap = Tap::default();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                if mode.load(SeqCst) == PASS {
                    to.shutdown(Shutdown::Write).ok();
                }
                return;
            }
            Err(_) => {
                if mode.load(SeqCst) == PASS {
                    to.shutdown(Shutdown::Both).ok();
                }
                return;
            }
            Ok(n) => n,
        };
        match mode.load(SeqCst) {
            PASS => {}
            HOLE => {
                swallowed.fetch_add(n as u64, SeqCst);
                if let Some(inner) = frames {
                    tap.feed(&buf[..n], &inner.frames_up);
                }
                continue;
            }
            _ => continue,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            from.shutdown(Shutdown::Both).ok();
            return;
        }
    }
}

/// Reads WebSocket frames (RFC 6455 §5.2) off a byte stream and notes the first payload byte
/// of each binary one: the mux frame type.
#[derive(Default)]
struct Tap {
    head: Vec<u8>,
    skip: u64,
}

impl Tap {
    fn feed(&mut self, mut data: &[u8], types: &Mutex<Vec<u8>>) {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64) as usize;
                self.skip -= n as u64;
                data = &data[n..];
                if self.skip > 0 {
                    return;
                }
            }
            self.head.extend_from_slice(data);
            data = &[];
            let Some((header, len, ty)) = ws_header(&self.head) else {
                return;
            };
            if let Some(ty) = ty {
                let mut types = types.lock().unwrap();
                if types.len() < MAX_FRAMES_SEEN {
                    types.push(ty);
                }
            }
            let total = (header as u64).saturating_add(len);
            if self.head.len() as u64 >= total {
                self.head.drain(..total as usize);
            } else {
                self.skip = total - self.head.len() as u64;
                self.head.clear();
            }
        }
    }
}

/// A frame's header size, payload length, and (binary frames) the payload's first byte; `None`
/// while more bytes are needed.
fn ws_header(h: &[u8]) -> Option<(usize, u64, Option<u8>)> {
    let (b0, b1) = (*h.first()?, *h.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (ext, len) = match b1 & 0x7f {
        126 => (
            2,
            u64::from(u16::from_be_bytes(h.get(2..4)?.try_into().ok()?)),
        ),
        127 => (8, u64::from_be_bytes(h.get(2..10)?.try_into().ok()?)),
        n => (0, u64::from(n)),
    };
    let header = 2 + ext + if masked { 4 } else { 0 };
    let binary = b0 & 0x0f == 2;
    if !binary || len == 0 {
        return (h.len() >= header).then_some((header, len, None));
    }
    let first = *h.get(header)?;
    let mask = if masked { h[header - 4] } else { 0 };
    Some((header, len, Some(first ^ mask)))
}

#[test]
fn the_tap_reads_frame_types_off_masked_and_long_frames() {
    let frame = |ty: u8, len: usize| {
        let mask = [0x5a, 1, 2, 3];
        let mut f = vec![0x82];
        match len {
            0..126 => f.push(0x80 | len as u8),
            _ => {
                f.push(0x80 | 126);
                f.extend((len as u16).to_be_bytes());
            }
        }
        f.extend(mask);
        let payload = std::iter::once(ty).chain(std::iter::repeat_n(0xee, len - 1));
        f.extend(payload.enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    };
    let ping = [0x89, 0x80, 0, 0, 0, 0];
    let mut stream = frame(0x01, 40);
    stream.extend(ping);
    stream.extend(frame(0x04, 3000));
    stream.extend(frame(0x06, 5));
    let types = Mutex::new(Vec::new());
    let mut tap = Tap::default();
    for piece in stream.chunks(7) {
        tap.feed(piece, &types);
    }
    assert_eq!(*types.lock().unwrap(), [0x01, 0x04, 0x06]);
}
