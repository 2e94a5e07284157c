//! The real `burrow` binary: signals, exit codes, stdio mode, and secrets kept out of logs.

mod common;

use common::proc::*;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn connect_tunnel(proxy: SocketAddr, target: SocketAddr, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

#[test]
fn sigterm_drains_an_open_tunnel_then_exits_zero() {
    let echo = echo_server();
    let mut p = Proc::start(
        &["proxy", "--listen", "127.0.0.1:0", "--drain-timeout", "10s"],
        &[],
    );
    let addr = p.listening();
    let (mut s, head) = connect_tunnel(addr, echo, "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"before ").unwrap();
    p.signal("-TERM");
    p.wait_line("draining");
    // The tunnel in flight keeps working after the signal.
    s.write_all(b"after").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = String::new();
    s.read_to_string(&mut back).unwrap();
    assert_eq!(back, "before after");
    drop(s);
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener gone after exit"
    );
}

#[test]
fn second_signal_exits_at_once() {
    let echo = echo_server();
    let mut p = Proc::start(
        &["proxy", "--listen", "127.0.0.1:0", "--drain-timeout", "60s"],
        &[],
    );
    let addr = p.listening();
    let (_held, head) = connect_tunnel(addr, echo, "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    p.signal("-INT");
    p.wait_line("draining");
    p.signal("-INT");
    let (code, log) = p.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(130), "{log}");
}

#[test]
fn credentials_never_appear_in_logs() {
    let echo = echo_server();
    let secret = "t0p-s3cret-pass";
    let mut p = Proc::start(
        &["proxy", "--listen", "127.0.0.1:0"],
        &[
            ("RUST_LOG", "trace"),
            ("BURROW_PROXY_AUTH", &format!("alice:{secret}")),
        ],
    );
    let addr = p.listening();
    let good = basic(&format!("alice:{secret}"));
    let bad = basic("alice:wrong-pass-xyz");
    let (_, head) = connect_tunnel(addr, echo, &bad);
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");
    let (_, head) = connect_tunnel(addr, echo, &good);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    p.signal("-TERM");
    let (_, log) = p.wait_exit(Duration::from_secs(15));
    assert!(log.contains("407"), "the refusal is logged: {log}");
    let token = good.trim().rsplit(' ').next().unwrap().to_string();
    for needle in [secret, "wrong-pass-xyz", token.as_str()] {
        assert!(
            !log.contains(needle),
            "{needle:?} leaked into the log:\n{log}"
        );
    }
}

#[test]
fn open_proxy_on_a_public_address_is_refused() {
    let mut p = Proc::start(&["proxy", "--listen", "0.0.0.0:0"], &[]);
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("open proxy"), "{log}");
}

#[test]
fn connect_joins_stdio_through_a_chain() {
    let echo = echo_server();
    let mut p = Proc::start(&["proxy", "--listen", "127.0.0.1:0", "--auth", "u:pw"], &[]);
    let addr = p.listening();
    let via = format!("http://u:pw@{addr}");
    let port = echo.port().to_string();
    let args = ["connect", "--via", &via, "127.0.0.1", &port];
    // stdin closed after the input: the EOF travels as a half-close; the echo answers and closes.
    let out = run_to_end(&args, b"ping through stdio");
    assert_eq!(out.0, Some(0), "{}", out.2);
    assert_eq!(out.1, "ping through stdio");
}

#[test]
fn connect_names_the_hop_that_refused() {
    let mut p = Proc::start(&["proxy", "--listen", "127.0.0.1:0", "--auth", "u:pw"], &[]);
    let addr = p.listening();
    let via = format!("http://{addr}");
    let (code, _, err) = run_to_end(&["connect", "--via", &via, "127.0.0.1:9"], b"");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("upstream hop 1 ({addr}) answered 407")),
        "{err}"
    );
}

/// Runs burrow with `input` on stdin (then closed); returns its exit code, stdout and stderr.
fn run_to_end(args: &[&str], input: &[u8]) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A child that exits without reading its input is fine.
    let _ = child.stdin.take().unwrap().write_all(input);
    wait_output(child)
}

/// Collects a child's exit code, stdout and stderr, killing it after 10 s.
fn wait_output(mut child: Child) -> (Option<i32>, String, String) {
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            child.kill().ok();
            panic!("child did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A relay with no lame duck (these tests are not about it).
fn relay_proc() -> (Proc, SocketAddr) {
    relay_proc_with(&["--lame-duck", "0"])
}

/// `burrow server --listen 127.0.0.1:0 --no-auth` with `extra` flags, and its address.
fn relay_proc_with(extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec!["server", "--listen", "127.0.0.1:0", "--no-auth"];
    args.extend_from_slice(extra);
    let mut relay = Proc::start(&args, &[]);
    let line = relay.wait_line("relay listening on ");
    let addr = line
        .split("relay listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (relay, addr)
}

/// A client process whose stdout lines (state changes) are collected too.
fn client_proc(args: &[&str]) -> (Proc, mpsc::Receiver<String>) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let out = line_reader(child.stdout.take().unwrap());
    let lines = line_reader(child.stderr.take().unwrap());
    (
        Proc {
            child,
            lines,
            seen: Vec::new(),
        },
        out,
    )
}

fn wait_stdout(out: &mpsc::Receiver<String>, needle: &str) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match out.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no stdout line with {needle:?}")
}

#[test]
fn client_stdio_mode_carries_one_stream() {
    let echo = echo_server();
    let (_relay, relay) = relay_proc();
    let url = format!("ws://{relay}/burrow");
    let spec = format!("stdio:127.0.0.1:{}", echo.port());
    let (code, out, err) = run_to_end(
        &["client", &url, "-L", &spec],
        b"through the tunnel on stdio",
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "through the tunnel on stdio");
}

#[test]
fn client_sigterm_lets_a_download_finish_then_exits_zero() {
    const SIZE: usize = 8 << 20;
    // An origin that sends SIZE bytes in paced chunks, so the download is in flight for a while.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut s = s;
                let mut head = [0u8; 1024];
                let _ = s.read(&mut head);
                let chunk = vec![b'z'; 256 * 1024];
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
                );
                for _ in 0..SIZE / chunk.len() {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(30));
                }
            });
        }
    });
    let (_relay, relay) = relay_proc();
    let url = format!("ws://{relay}/burrow");
    let spec = format!("127.0.0.1:0:{origin}");
    let (mut client, out) = client_proc(&["client", &url, "-R", &spec, "--drain-timeout", "20s"]);
    let bound = wait_stdout(&out, "bound R ");
    let public: SocketAddr = bound.split_whitespace().nth(2).unwrap().parse().unwrap();
    let mut s = TcpStream::connect(public).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 4096];
    let n = s.read(&mut first).unwrap();
    assert!(n > 0);
    client.signal("-TERM");
    let mut all = first[..n].to_vec();
    s.read_to_end(&mut all).unwrap();
    let head_end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let body = &all[head_end..];
    assert_eq!(body.len(), SIZE, "the download completed after SIGTERM");
    assert!(body.iter().all(|&b| b == b'z'), "and intact");
    // The visitor is done too (Connection: close): the stream ends, and so does the drain.
    drop(s);
    let (code, log) = client.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn demo_serves_what_it_prints_and_exits_zero_on_ctrl_c() {
    let (mut demo, out) = client_proc(&["demo"]);
    let line = wait_stdout(&out, "curl http://");
    let url = line.split("curl http://").nth(1).unwrap().trim();
    let (addr, path) = url.split_once('/').unwrap();
    let body = http_get(addr.parse().unwrap(), &format!("/{path}"));
    assert!(body.contains("hello from burrow"), "{body}");
    demo.signal("-INT");
    let (code, log) = demo.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn connect_passes_bytes_on_at_once_without_waiting_for_a_newline() {
    // A server that speaks first with no newline and then waits (as sshd's binary packets).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = l.local_addr().unwrap();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"no-newline").unwrap();
        // Hold the connection open until the test is done.
        let _ = done_rx.recv_timeout(Duration::from_secs(20));
    });
    let mut p = Proc::start(&["proxy", "--listen", "127.0.0.1:0"], &[]);
    let addr = p.listening();
    let mut child = Command::new(BIN)
        .args([
            "connect",
            "--via",
            &format!("http://{addr}"),
            &target.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 10];
        let got = stdout.read_exact(&mut buf).map(|_| buf.to_vec());
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(Duration::from_secs(10));
    drop(done_tx);
    child.kill().ok();
    child.wait().ok();
    assert_eq!(
        got.expect("bytes arrive while the connection is open")
            .unwrap(),
        b"no-newline"
    );
}

/// GET `path` on `addr`; returns the status code.
fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let out = http_get(addr, path);
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// GET `path` on `addr` (connection closed after); returns the whole response.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A client process with `--status` on an ephemeral port; returns it, its stdout and the
/// status address.
fn status_client(url: &str) -> (Proc, mpsc::Receiver<String>, SocketAddr) {
    let args = [
        "client",
        url,
        "-R",
        "127.0.0.1:0:proxy",
        "--status",
        "127.0.0.1:0",
    ];
    let (mut client, out) = client_proc(&args);
    let line = client.wait_line("status on http://");
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/readyz")
        .parse()
        .unwrap();
    (client, out, addr)
}

#[test]
fn client_status_readyz_turns_200_once_connected_and_bound() {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A client whose relay is not there: alive, but not ready.
    let (_lonely, _out, status) = status_client(&format!("ws://{nobody}/burrow"));
    assert_eq!(http_status(status, "/healthz"), 200);
    assert_eq!(http_status(status, "/readyz"), 503);
    assert_eq!(http_status(status, "/nope"), 404);
    // A client of a real relay becomes ready once its -R is bound.
    let (_relay, relay) = relay_proc();
    let (_client, out, status) = status_client(&format!("ws://{relay}/burrow"));
    wait_stdout(&out, "bound R ");
    assert_eq!(http_status(status, "/readyz"), 200);
    let metrics = http_get(status, "/metrics");
    assert!(metrics.contains("burrow_sessions 1"), "{metrics}");
}

#[test]
fn relay_sigterm_answers_readyz_503_through_its_lame_duck_then_exits_zero() {
    let (mut relay, addr) = relay_proc_with(&["--lame-duck", "3s"]);
    assert_eq!(http_status(addr, "/readyz"), 200);
    relay.signal("-TERM");
    // Readiness ends before this line is written, and the relay serves for 3 s after it.
    relay.wait_line("relay: lame duck for 3 s: /readyz 503, still serving");
    assert_eq!(http_status(addr, "/readyz"), 503);
    assert_eq!(http_status(addr, "/healthz"), 200, "still serving");
    let (code, log) = relay.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{log}");
}

#[cfg(feature = "tls")]
#[test]
fn sighup_reloads_the_relay_certificate() {
    let dir = common::certs::TempDir::new("sighup");
    let ca = common::certs::Ca::new("sighup CA");
    let (cert, key) = ca.write_leaf(&dir, "relay", &["localhost"], false);
    let args = [
        "server",
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let mut relay = Proc::start(&args, &[]);
    relay.wait_line("relay listening on ");
    // A broken key file: the reload is refused and the old certificate stays.
    std::fs::write(&key, "garbage").unwrap();
    relay.signal("-HUP");
    relay.wait_line("keeping the old TLS certificate");
    let (c2, k2) = ca.leaf(&["localhost"], false);
    std::fs::write(&cert, c2).unwrap();
    std::fs::write(&key, k2).unwrap();
    relay.signal("-HUP");
    relay.wait_line("TLS certificate reloaded");
}

/// Anonymous resident memory of a process, in KiB.
fn anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Open descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits (bounded) until `pid` holds at most `limit` descriptors; returns the last count.
fn fds_settle(pid: u32, limit: usize) -> usize {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let n = fd_count(pid);
        if n <= limit || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn churn_leaks_no_descriptors_or_memory_in_proxy_relay_or_client() {
    let echo = echo_server();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut proxy = Proc::start(
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--deny",
            "10.0.0.0/8",
            "--head-timeout",
            "1s",
        ],
        &[],
    );
    let paddr = proxy.listening();
    let (mut relay_p, relay) = relay_proc();
    let url = format!("ws://{relay}/burrow");
    let spec = format!("127.0.0.1:0:{echo}");
    let (client_p, out) = client_proc(&["client", &url, "-L", &spec, "-R", &spec]);
    let local: SocketAddr = wait_stdout(&out, "listening L ")
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let public: SocketAddr = wait_stdout(&out, "bound R ")
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    relay_p.wait_line("connected");
    let base = [
        fd_count(proxy.child.id()),
        fd_count(relay_p.child.id()),
        fd_count(client_p.child.id()),
    ];
    let churn = |i: usize| {
        // Proxy: a tunnel with data, a refusal, an unreachable target, a reset, garbage.
        let (mut s, head) = connect_tunnel(paddr, echo, "");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        if i % 2 == 0 {
            drop(s); // abrupt close with the tunnel open
        } else {
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        }
        let (_, head) = connect_tunnel(paddr, "10.1.2.3:80".parse().unwrap(), "");
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        let (_, head) = connect_tunnel(paddr, closed, "");
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
        let mut g = TcpStream::connect(paddr).unwrap();
        g.write_all(b"\x16\x03\x01 not http\r\n\r\n").unwrap();
        let _ = g.read_to_end(&mut Vec::new());
        // Tunnel: a stream each way, half of them cut short.
        for addr in [local, public] {
            let mut t = TcpStream::connect(addr).unwrap();
            t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            t.write_all(b"ping").unwrap();
            let mut back = [0u8; 4];
            t.read_exact(&mut back).unwrap();
            if i % 2 == 1 {
                t.shutdown(std::net::Shutdown::Write).unwrap();
                let _ = t.read_to_end(&mut Vec::new());
            }
        }
    };
    let procs = [proxy.child.id(), relay_p.child.id(), client_p.child.id()];
    let settle = |label: &str| {
        for (pid, before) in procs.iter().zip(base) {
            let after = fds_settle(*pid, before);
            assert!(
                after <= before,
                "pid {pid}: {before} descriptors before the churn, {after} {label}"
            );
        }
    };
    (0..300).for_each(churn);
    settle("after the first round");
    let rss1 = procs.map(anon_kib);
    (300..600).for_each(churn);
    settle("after the second round");
    let rss2 = procs.map(anon_kib);
    for ((pid, a), b) in procs.iter().zip(rss1).zip(rss2) {
        // A per-connection leak of even 1 KiB would add ~1.5 MiB over the second round.
        assert!(
            b <= a + 512,
            "pid {pid}: anonymous memory grew from {a} KiB to {b} KiB"
        );
    }
    // A stalled half-head (slowloris) times out and is released too.
    let mut slow = TcpStream::connect(paddr).unwrap();
    slow.write_all(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(slow);
    settle("after the slowloris");
}

#[test]
fn relay_without_a_token_generates_one_and_prints_the_client_command() {
    let (mut relay, out) = client_proc(&["server", "--listen", "127.0.0.1:0", "--lame-duck", "0"]);
    let line = relay.wait_line("relay listening on ");
    let addr = line
        .split("relay listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let cmd = wait_stdout(&out, "burrow client ");
    assert!(cmd.contains(&format!("ws://{addr}/burrow")), "{cmd}");
    let token = cmd
        .split("--token ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let url = format!("ws://{addr}/burrow");
    // Without it: 401, and the client stops at once (exit 1, no retry loop).
    let (code, _, err) = run_to_end(&["client", &url, "-R", "127.0.0.1:0:proxy"], b"");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("401"), "{err}");
    // With it: connected and bound.
    let (_client, out) =
        client_proc(&["client", &url, "--token", &token, "-R", "127.0.0.1:0:proxy"]);
    wait_stdout(&out, "bound R ");
    // The generated token never reaches the log.
    relay.signal("-TERM");
    let (_, log) = relay.wait_exit(Duration::from_secs(15));
    assert!(!log.contains(&token), "{log}");
}
