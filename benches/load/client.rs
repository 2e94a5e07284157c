//! The load side: how a client reaches the server on each path, and the measurements.
//! Blocking sockets and plain threads: nothing here competes with an executor for the two
//! cores, and every socket has read and write timeouts so nothing hangs.

use crate::server::{ECHO, ECHO_ONCE, SINK, SINK_COUNT_LEN};
use anyhow::{Context, Result, bail, ensure};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a single read, write or connect may block before the bench calls it a failure.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// One write in the bulk tests.
const WRITE_CHUNK: usize = 256 * 1024;
/// A proxy's answer to CONNECT is a status line and a few headers; more is a bug.
const MAX_RESPONSE_HEAD: usize = 4096;
/// Round trips before the RTT clock starts (warm caches, settled congestion window).
const RTT_WARMUP: usize = 200;
/// Size of one RTT probe.
const RTT_PAYLOAD: usize = 64;

/// How a client reaches the server: a TCP address, and for proxies the target to CONNECT to.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// Where the client connects (the server, socat, or the first proxy).
    pub entry: SocketAddr,
    /// `Some(server)`: send `CONNECT server` and read the 200 before the data phase.
    pub tunnel_to: Option<SocketAddr>,
}

impl Route {
    /// Connects, and through a proxy completes the CONNECT handshake. The stream is then a
    /// clean byte pipe to the server.
    pub fn open(&self) -> Result<TcpStream> {
        self.open_within(IO_TIMEOUT)
    }

    /// [`Route::open`] with `timeout` for the connect and every read and write.
    pub fn open_within(&self, timeout: Duration) -> Result<TcpStream> {
        let mut s = TcpStream::connect_timeout(&self.entry, timeout)
            .with_context(|| format!("connect {}", self.entry))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        if let Some(target) = self.tunnel_to {
            connect_handshake(&mut s, target)
                .with_context(|| format!("CONNECT {target} via {}", self.entry))?;
        }
        Ok(s)
    }
}

fn connect_handshake(s: &mut TcpStream, target: SocketAddr) -> Result<()> {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = [0u8; MAX_RESPONSE_HEAD];
    let mut n = 0;
    loop {
        ensure!(
            n < buf.len(),
            "response head longer than {MAX_RESPONSE_HEAD} bytes"
        );
        let k = s.read(&mut buf[n..])?;
        ensure!(
            k > 0,
            "proxy closed the connection before the end of its response head"
        );
        n += k;
        let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]);
        let status_line = head.lines().next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let code = parts.next().unwrap_or_default();
        ensure!(
            matches!(version, "HTTP/1.1" | "HTTP/1.0") && code == "200",
            "proxy answered {status_line:?}"
        );
        // The server never speaks first, so nothing may follow a 200's head yet (a refusal
        // may carry a body: its status line is the better message, checked first).
        ensure!(
            end + 4 == n,
            "{} unexpected bytes after the response head",
            n - end - 4
        );
        return Ok(());
    }
}

/// Sends `bytes_each` to the sink on each of `streams` connections at once and returns the
/// aggregate rate in MB/s (10^6 bytes), timed from the first sender's first byte until the
/// last sink confirmed its count. Connection setup is not timed.
pub fn bulk(route: &Route, streams: usize, bytes_each: u64) -> Result<f64> {
    let conns = (0..streams)
        .map(|_| route.open())
        .collect::<Result<Vec<_>>>()?;
    let start = Arc::new(Barrier::new(streams));
    let workers: Vec<_> = conns
        .into_iter()
        .map(|s| {
            let start = start.clone();
            thread::spawn(move || send_to_sink(s, bytes_each, &start))
        })
        .collect();
    let mut spans = Vec::with_capacity(streams);
    for w in workers {
        spans.push(
            w.join()
                .map_err(|_| anyhow::anyhow!("bulk sender thread died"))??,
        );
    }
    let secs = span_secs(&spans)?;
    Ok((streams as u64 * bytes_each) as f64 / 1e6 / secs)
}

/// Seconds from the earliest start to the latest end. Each worker times itself: a
/// coordinating thread may not run for a while on a busy machine, and its clock would then
/// miss part of the work.
fn span_secs(spans: &[(Instant, Instant)]) -> Result<f64> {
    let first = spans.iter().map(|s| s.0).min().context("no workers")?;
    let last = spans.iter().map(|s| s.1).max().context("no workers")?;
    Ok(last.duration_since(first).as_secs_f64().max(1e-9))
}

fn send_to_sink(mut s: TcpStream, bytes: u64, start: &Barrier) -> Result<(Instant, Instant)> {
    let chunk: Vec<u8> = (0..WRITE_CHUNK).map(|i| i as u8).collect();
    start.wait();
    let t0 = Instant::now();
    let mut head = [SINK; 1 + SINK_COUNT_LEN];
    head[1..].copy_from_slice(&bytes.to_le_bytes());
    s.write_all(&head)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(WRITE_CHUNK as u64) as usize;
        s.write_all(&chunk[..n]).context("bulk write")?;
        left -= n as u64;
    }
    let mut count = [0u8; 8];
    s.read_exact(&mut count)
        .context("waiting for the sink's byte count")?;
    let t1 = Instant::now();
    let got = u64::from_le_bytes(count);
    ensure!(got == bytes, "sink received {got} of {bytes} bytes");
    Ok((t0, t1))
}

/// `n` round trips of 64 bytes on one connection; returns each round trip's time.
pub fn rtt(route: &Route, n: usize) -> Result<Vec<Duration>> {
    let mut s = route.open()?;
    s.write_all(&[ECHO])?;
    let out = [0x5au8; RTT_PAYLOAD];
    let mut back = [0u8; RTT_PAYLOAD];
    let mut times = Vec::with_capacity(n);
    for i in 0..RTT_WARMUP + n {
        let t = Instant::now();
        s.write_all(&out)?;
        s.read_exact(&mut back).context("echo")?;
        if i >= RTT_WARMUP {
            times.push(t.elapsed());
        }
    }
    ensure!(back == out, "echo returned different bytes");
    Ok(times)
}

/// One short-lived connection: connect (and CONNECT), one 1-byte echo; returns the time to
/// the echoed byte. The server then closes first, and the client waits for that EOF.
fn one_connection(route: &Route) -> Result<Duration> {
    let t = Instant::now();
    let mut s = route.open()?;
    s.write_all(&[ECHO_ONCE, b'x'])?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).context("1-byte echo")?;
    let took = t.elapsed();
    ensure!(b[0] == b'x', "echo returned {:#04x}", b[0]);
    let n = s.read(&mut b).context("waiting for the server to close")?;
    ensure!(n == 0, "unexpected byte after the echo");
    Ok(took)
}

/// `n` sequential new connections; returns the time of each, from connect to echoed byte.
pub fn new_connections(route: &Route, n: usize) -> Result<Vec<Duration>> {
    (0..n).map(|_| one_connection(route)).collect()
}

/// Result of [`conn_rate`].
#[derive(Clone)]
pub struct Rate {
    /// completed connections per second
    pub per_sec: f64,
    /// connections that failed
    pub errors: u64,
    /// the first failure
    pub first_error: Option<String>,
}

/// `workers` threads doing [`one_connection`] back to back for `duration`.
pub fn conn_rate(route: &Route, workers: usize, duration: Duration) -> Result<Rate> {
    let start = Arc::new(Barrier::new(workers));
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (route, start) = (*route, start.clone());
            thread::spawn(move || {
                start.wait();
                let t0 = Instant::now();
                let (mut done, mut errors, mut first) = (0u64, 0u64, None);
                while t0.elapsed() < duration {
                    match one_connection(&route) {
                        Ok(_) => done += 1,
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert_with(|| format!("{e:#}"));
                            // Do not spin on a persistent failure (e.g. out of ports).
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                ((t0, Instant::now()), done, errors, first)
            })
        })
        .collect();
    let (mut spans, mut done, mut errors, mut first_error) = (Vec::new(), 0, 0, None);
    for t in threads {
        let (span, d, e, f) = t
            .join()
            .map_err(|_| anyhow::anyhow!("connection worker died"))?;
        spans.push(span);
        done += d;
        errors += e;
        first_error = first_error.or(f);
    }
    Ok(Rate {
        per_sec: done as f64 / span_secs(&spans)?,
        errors,
        first_error,
    })
}

/// Opens `n` tunnels to the echo server, each having echoed one byte, and keeps them open.
pub fn hold(route: &Route, n: usize) -> Result<Vec<TcpStream>> {
    (0..n)
        .map(|i| held_connection(route).with_context(|| format!("held connection {}", i + 1)))
        .collect()
}

/// Like [`hold`], but stops at the first failure instead of failing: a peer that cannot carry
/// `n` idle connections is measured with as many as it carried. Returns the open connections
/// and the failure, if any. Each echo may take at most `echo_timeout`.
pub fn hold_upto(
    route: &Route,
    n: usize,
    echo_timeout: Duration,
) -> (Vec<TcpStream>, Option<String>) {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let one = route.open_within(echo_timeout).and_then(|mut s| {
            s.write_all(&[ECHO, b'x'])?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            ensure!(b[0] == b'x', "echo returned {:#04x}", b[0]);
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            Ok(s)
        });
        match one {
            Ok(s) => held.push(s),
            Err(e) => return (held, Some(format!("connection {}: {e:#}", i + 1))),
        }
    }
    (held, None)
}

/// One echoed byte through `route`, each step within `timeout`: is the path up?
pub fn probe(route: &Route, timeout: Duration) -> Result<()> {
    let (held, err) = hold_upto(route, 1, timeout);
    drop(held);
    match err {
        None => Ok(()),
        Some(e) => bail!("{e}"),
    }
}

fn held_connection(route: &Route) -> Result<TcpStream> {
    let mut s = route.open()?;
    s.write_all(&[ECHO, b'x'])?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    ensure!(b[0] == b'x', "echo returned {:#04x}", b[0]);
    Ok(s)
}

/// The `p`th percentile (nearest rank) of `times`, which it sorts.
pub fn percentile(times: &mut [Duration], p: f64) -> Result<Duration> {
    if times.is_empty() {
        bail!("no samples");
    }
    times.sort_unstable();
    let rank = ((p / 100.0) * times.len() as f64).ceil() as usize;
    Ok(times[rank.clamp(1, times.len()) - 1])
}
