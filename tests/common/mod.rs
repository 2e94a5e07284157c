//! Shared test fixtures: real servers on 127.0.0.1 with ephemeral ports, deadlines on every wait.
#![allow(dead_code)]

use burrow::exec::Spawner;
use burrow::http::front;
use burrow::http::head::ResponseHead;
use burrow::proxy::{Proxy, ProxyConfig};
use burrow::shutdown::Shutdown;
use futures_lite::FutureExt;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub mod certs;
pub mod proc;
pub mod tunnel;

/// Longest any test may take before it fails instead of hanging CI.
pub const TEST_DEADLINE: Duration = Duration::from_secs(30);

pub fn lo() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Runs `body` on an executor owned by this test (two threads), failing after the deadline.
pub fn run<F, Fut>(body: F)
where
    F: FnOnce(Spawner) -> Fut,
    Fut: Future<Output = ()>,
{
    let ex = Arc::new(smol::Executor::new());
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let helper = {
        let ex = ex.clone();
        std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())))
    };
    let spawner: Spawner = ex.clone();
    let fut = body(spawner);
    smol::block_on(ex.run(fut.or(async {
        smol::Timer::after(TEST_DEADLINE).await;
        panic!("test deadline of {TEST_DEADLINE:?} passed")
    })));
    drop(stop);
    helper.join().ok();
}

/// Races `fut` with a short deadline of its own.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    fut.or(async {
        smol::Timer::after(Duration::from_secs(secs)).await;
        panic!("{what}: no result within {secs}s")
    })
    .await
}

/// A running proxy and the handle that shuts it down.
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub task: smol::Task<()>,
}

pub async fn start_proxy(spawner: &Spawner, config: ProxyConfig) -> RunningProxy {
    let proxy = Proxy::bind(lo(), config).await.expect("bind proxy");
    let addr = proxy.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let task = smol::spawn(proxy.run(spawner.clone(), shutdown.signal()));
    RunningProxy {
        addr,
        shutdown,
        task,
    }
}

/// The demo origin (keep-alive HTTP/1.1, `/bytes/N`).
pub async fn start_origin(spawner: &Spawner) -> (SocketAddr, smol::Task<()>) {
    let origin = burrow::demo::Origin::bind(lo()).await.unwrap();
    let addr = origin.local_addr().unwrap();
    (addr, smol::spawn(origin.run(spawner.clone())))
}

/// An echo server: every connection gets back what it sends, and its EOF as an EOF.
pub async fn start_echo() -> (SocketAddr, smol::Task<()>) {
    let l = TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = smol::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            conns.push(smol::spawn(async move {
                let (r, mut w) = (s.clone(), s);
                if futures_lite::io::copy(r, &mut w).await.is_ok() {
                    w.close().await.ok();
                }
            }));
        }
    });
    (addr, task)
}

/// A port nobody listens on (bound, then closed: only used as a refused target).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind(lo()).unwrap();
    l.local_addr().unwrap()
}

/// Sends `request` raw and reads the response head; returns the reader for the rest.
pub async fn send_raw(proxy: SocketAddr, request: &[u8]) -> (ResponseHead, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut r = BufReader::new(s);
    let head = within(
        10,
        "response head",
        front::read_response(&mut r, Duration::from_secs(10)),
    )
    .await
    .expect("a response head");
    (head, r)
}

/// `CONNECT target` (with optional extra header lines) and the proxy's answer.
pub async fn connect_via(
    proxy: SocketAddr,
    target: SocketAddr,
    extra: &str,
) -> (ResponseHead, BufReader<TcpStream>) {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n");
    send_raw(proxy, req.as_bytes()).await
}

/// Reads the rest of a stream to its end.
pub async fn read_all(r: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut out = Vec::new();
    within(10, "read to end", r.read_to_end(&mut out))
        .await
        .unwrap();
    out
}

pub fn basic(user_pass: &str) -> String {
    let creds: burrow::http::auth::Credentials = user_pass.parse().unwrap();
    format!("Proxy-Authorization: {}\r\n", creds.basic_header())
}

/// Runs the binary to its end (killed after a deadline); exit code and stderr.
pub fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    run_binary_env(args, &[])
}

/// [`run_binary`] with extra environment variables.
pub fn run_binary_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (Option<i32>, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_burrow"))
        .args(args)
        .env_remove("BURROW_PROXY_AUTH")
        .env_remove("BURROW_TOKEN")
        .env_remove("BURROW_THREADS")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start burrow");
    let deadline = std::time::Instant::now() + TEST_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("burrow {args:?} did not exit within {TEST_DEADLINE:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}
