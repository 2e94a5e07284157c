//! Fixtures of the client reload tests: a checked download that runs across reloads, a
//! client run with its handle, waits for a closed port and for echoes, and a relay that
//! answers as an older version (no capabilities).

use super::common::tunnel::{RunningClient, RunningRelay, run_client};
use super::common::{lo, within};
use burrow::client::{Client, ClientConfig, ClientHandle, Event};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// The download that runs across the reloads: large enough that it cannot finish before the
/// test has read its first part and reloaded. Windows and socket buffers on the way hold
/// about 12 MiB (measured: a download left unread for 2 s had sent 12.3 MiB).
pub const DOWNLOAD: usize = 32 * 1024 * 1024;
/// What the test reads of it before it reloads.
pub const FIRST_PART: usize = 256 * 1024;

/// Logs to the test's output with `RUST_LOG=debug` (shown for failing tests).
pub fn logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Byte `i` of every download.
pub fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ ((i >> 16) as u8)
}

/// A server that sends each connection [`DOWNLOAD`] bytes of [`pattern`], then closes.
pub async fn start_download() -> (SocketAddr, smol::Task<()>) {
    let l = TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = smol::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            conns.push(smol::spawn(async move {
                let mut at = 0;
                while at < DOWNLOAD {
                    let n = (DOWNLOAD - at).min(64 * 1024);
                    let chunk: Vec<u8> = (at..at + n).map(pattern).collect();
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    at += n;
                }
                s.close().await.ok();
            }));
        }
    });
    (addr, task)
}

/// A download in progress: its connection and how much was read and checked.
pub struct Download {
    pub conn: TcpStream,
    pub read: usize,
}

impl Download {
    /// Starts a download through `at` and reads (and checks) its first part.
    pub async fn start(at: SocketAddr) -> Download {
        let conn = within(10, "connect", TcpStream::connect(at)).await.unwrap();
        let mut d = Download { conn, read: 0 };
        within(10, "first part", d.read_up_to(FIRST_PART)).await;
        d
    }

    pub async fn read_up_to(&mut self, until: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        while self.read < until {
            let want = (until - self.read).min(buf.len());
            let n = self.conn.read(&mut buf[..want]).await.unwrap();
            assert!(n > 0, "download ended early at {}", self.read);
            let at = self.read;
            assert!(
                buf[..n]
                    .iter()
                    .enumerate()
                    .all(|(k, b)| *b == pattern(at + k)),
                "download corrupted near byte {at}"
            );
            self.read += n;
        }
    }

    /// Reads the rest: every byte intact, then the end.
    pub async fn finish(mut self) {
        within(20, "rest of the download", self.read_up_to(DOWNLOAD)).await;
        let mut one = [0u8; 1];
        let n = within(10, "end", self.conn.read(&mut one)).await.unwrap();
        assert_eq!(n, 0, "more than {DOWNLOAD} bytes");
    }
}

/// A client, run by the test, with its handle.
/// A running client (the common fixture) with its reload handle and readiness.
pub struct Running {
    pub client: RunningClient,
    pub handle: ClientHandle,
    pub ready: burrow::http::surface::Ready,
}

impl std::ops::Deref for Running {
    type Target = RunningClient;
    fn deref(&self) -> &RunningClient {
        &self.client
    }
}

impl Running {
    pub async fn start(sp: &burrow::exec::Spawner, cfg: ClientConfig) -> Running {
        let client = Client::bind(cfg).await.unwrap();
        // The handle works before `run`.
        let (handle, ready) = (client.handle(), client.readiness());
        Running {
            client: run_client(sp, client),
            handle,
            ready,
        }
    }

    /// The relay's address for the binding that leads to `target`.
    pub async fn bound_to(&self, target: SocketAddr) -> SocketAddr {
        let want = target.to_string();
        match self
            .wait("bound", |e| match e {
                Event::Bound { target, .. } | Event::BindRefused { target, .. } => *target == want,
                _ => false,
            })
            .await
        {
            Event::Bound { addr, .. } => addr.parse().unwrap(),
            other => panic!("binding refused: {other:?}"),
        }
    }

    /// Where the `-L` a reload added listens.
    pub async fn listening(&self, spec: &str) -> SocketAddr {
        let spec = spec.to_string();
        match self
            .wait(
                "listening",
                |e| matches!(e, Event::Listening { spec: s, .. } if *s == spec),
            )
            .await
        {
            Event::Listening { addr, .. } => addr,
            _ => unreachable!(),
        }
    }
}

pub fn client_cfg(relay: &RunningRelay) -> ClientConfig {
    let mut cfg = ClientConfig::new(relay.url());
    cfg.max_backoff = Duration::from_millis(300);
    cfg
}

/// Waits (bounded) until connecting to `addr` is refused: the listener is closed.
pub async fn refuses(addr: SocketAddr, what: &str) {
    within(10, what, async {
        loop {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return,
                // Still listening (its accept loop is stopping), or a connection that reached
                // the backlog as the listener closed (reset): poll again.
                Ok(_) => {
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    })
    .await
}

/// One round trip on an open echo stream.
pub async fn echo_once(conn: &mut TcpStream, msg: &[u8]) {
    conn.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    within(10, "echo", conn.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(back, msg);
}

/// A new connection through `at` echoes.
pub async fn echoes(at: SocketAddr) {
    let mut c = within(10, "connect", TcpStream::connect(at)).await.unwrap();
    echo_once(&mut c, b"new").await;
}

/// A relay as an older version answers: a pass-through that drops the `Burrow-Caps` line from
/// the relay's `101`.
pub struct StripCaps {
    pub addr: SocketAddr,
    _accept: smol::Task<()>,
}

impl StripCaps {
    pub async fn start(relay: SocketAddr) -> StripCaps {
        let l = TcpListener::bind(lo()).await.unwrap();
        let addr = l.local_addr().unwrap();
        let accept = smol::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((client, _)) = l.accept().await {
                let Ok(up) = TcpStream::connect(relay).await else {
                    continue;
                };
                conns.push(smol::spawn(strip_caps(client, up)));
            }
        });
        StripCaps {
            addr,
            _accept: accept,
        }
    }
}

pub async fn strip_caps(client: TcpStream, up: TcpStream) {
    let to_relay = futures_lite::io::copy(client.clone(), up.clone());
    let to_client = async {
        let (mut r, mut w) = (up.clone(), client.clone());
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if r.read(&mut byte).await? == 0 {
                return Ok(0);
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        assert!(
            head.contains("Burrow-Caps: unbind, pool, udp\r\n"),
            "{head}"
        );
        let stripped: String = head
            .split_inclusive("\r\n")
            .filter(|l| !l.starts_with("Burrow-Caps:"))
            .collect();
        w.write_all(stripped.as_bytes()).await?;
        futures_lite::io::copy(r, w).await
    };
    let _ = futures_lite::future::or(to_relay, to_client).await;
}
