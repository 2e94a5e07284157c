//! Fixtures for tunnel tests: a relay and clients on loopback, and a TCP forwarder that can
//! freeze or cut the connections passing through it (a middlebox gone bad).
#![allow(dead_code)]

use super::{lo, within};
use burrow::client::{Client, ClientConfig, ClientError, Event};
use burrow::exec::Spawner;
use burrow::metrics::Metrics;
use burrow::relay::{Relay, RelayConfig};
use burrow::shutdown::Shutdown;
use burrow::tunnel::ws::{TunnelUrl, client_handshake};
use burrow::tunnel::{Session, SessionConfig, Side};
use futures_lite::FutureExt;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::channel::Receiver;
use smol::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct RunningRelay {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub metrics: Arc<Metrics>,
    pub task: smol::Task<()>,
}

impl RunningRelay {
    pub fn url(&self) -> TunnelUrl {
        format!("ws://{}/burrow", self.addr).parse().unwrap()
    }
}

pub async fn start_relay(sp: &Spawner, cfg: RelayConfig) -> RunningRelay {
    run_relay(sp, Relay::bind(lo(), cfg).await.unwrap())
}

/// Runs a bound relay (whose handle a test may have taken first) on its own task.
pub fn run_relay(sp: &Spawner, relay: Relay) -> RunningRelay {
    let addr = relay.local_addr().unwrap();
    let metrics = relay.metrics();
    let shutdown = Shutdown::new();
    let task = smol::spawn(relay.run(sp.clone(), shutdown.signal()));
    RunningRelay {
        addr,
        shutdown,
        metrics,
        task,
    }
}

pub struct RunningClient {
    pub events: Receiver<Event>,
    pub locals: Vec<SocketAddr>,
    pub shutdown: Shutdown,
    pub metrics: Arc<Metrics>,
    pub task: smol::Task<Result<(), ClientError>>,
}

pub async fn start_client(sp: &Spawner, cfg: ClientConfig) -> RunningClient {
    run_client(sp, Client::bind(cfg).await.unwrap())
}

/// Runs a bound client (whose handle a test may have taken first) on its own task.
pub fn run_client(sp: &Spawner, client: Client) -> RunningClient {
    let events = client.events();
    let locals = client.local_addrs();
    let metrics = client.metrics();
    let shutdown = Shutdown::new();
    let task = smol::spawn(client.run(sp.clone(), shutdown.signal()));
    RunningClient {
        events,
        locals,
        shutdown,
        metrics,
        task,
    }
}

impl RunningClient {
    /// The next event matching `pred` (others are skipped), within 10 s.
    pub async fn wait(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        within(10, what, async {
            loop {
                let e = self.events.recv().await.expect("client events ended");
                if pred(&e) {
                    return e;
                }
            }
        })
        .await
    }

    /// Waits for the next `bound R` event and returns its address.
    pub async fn bound(&self) -> SocketAddr {
        match self
            .wait("bound", |e| {
                matches!(e, Event::Bound { .. } | Event::BindRefused { .. })
            })
            .await
        {
            Event::Bound { addr, .. } => addr.parse().unwrap(),
            other => panic!("binding refused: {other:?}"),
        }
    }
}

/// Connections through a [`Forwarder`]: a freeze flag and the task moving its bytes.
type Conns = Arc<Mutex<Vec<(Arc<AtomicBool>, smol::Task<()>)>>>;

/// Forwards TCP to `target`; can freeze (stop passing bytes, keep sockets open) or cut every
/// connection that passes through it now.
pub struct Forwarder {
    pub addr: SocketAddr,
    conns: Conns,
    _accept: smol::Task<()>,
}

impl Forwarder {
    pub async fn start(target: SocketAddr) -> Forwarder {
        let l = TcpListener::bind(lo()).await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns: Conns = Arc::default();
        let c2 = conns.clone();
        let accept = smol::spawn(async move {
            while let Ok((a, _)) = l.accept().await {
                let Ok(b) = TcpStream::connect(target).await else {
                    continue;
                };
                let frozen = Arc::new(AtomicBool::new(false));
                let f = frozen.clone();
                let task = smol::spawn(async move {
                    let one = pump(a.clone(), b.clone(), f.clone());
                    let two = pump(b, a, f);
                    one.or(two).await;
                });
                c2.lock().unwrap().push((frozen, task));
            }
        });
        Forwarder {
            addr,
            conns,
            _accept: accept,
        }
    }

    /// Current connections stop passing bytes (silently, as a dead middlebox).
    pub fn freeze(&self) {
        for (f, _) in self.conns.lock().unwrap().iter() {
            f.store(true, Ordering::SeqCst);
        }
    }

    /// Current connections are closed.
    pub fn cut(&self) {
        self.conns.lock().unwrap().clear();
    }
}

async fn pump(mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            // Swallow everything from now on; never close.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Established TCP connections in this network namespace whose remote port is `port`.
pub fn established_to(port: u16) -> usize {
    let mut n = 0;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "01" {
                continue;
            }
            let remote_port = cols[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) {
                n += 1;
            }
        }
    }
    n
}

/// This process's resident set size in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Waits (bounded) until `cond` holds, polling.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    within(10, what, async {
        while !cond() {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A relay, and a connected client with `-L 127.0.0.1:0:target` (its address: `locals[0]`).
pub async fn forward_to(sp: &Spawner, target: SocketAddr) -> (RunningRelay, RunningClient) {
    let relay = start_relay(sp, RelayConfig::default()).await;
    let mut cfg = ClientConfig::new(relay.url());
    cfg.locals = vec![format!("127.0.0.1:0:{target}").parse().unwrap()];
    let client = start_client(sp, cfg).await;
    client.wait("connected", |e| *e == Event::Connected).await;
    (relay, client)
}

/// A hand-made client session (no `Client`) on the relay at `relay`: for frames and refusals a
/// real client would not send. The task runs the session's driver.
pub async fn raw_session(relay: SocketAddr, id: &str) -> (Session, smol::Task<()>) {
    let url: TunnelUrl = format!("ws://{relay}/burrow").parse().unwrap();
    let tcp = within(10, "connect", TcpStream::connect(relay))
        .await
        .unwrap();
    let ws = within(10, "handshake", client_handshake(tcp, &url, None, id))
        .await
        .unwrap();
    let (session, driver) = Session::new(
        Side::Client,
        SessionConfig::default(),
        id.into(),
        Arc::new(Metrics::default()),
    );
    let task = smol::spawn(async move {
        driver.run(ws).await;
    });
    (session, task)
}
