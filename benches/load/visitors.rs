//! Visitors for `--scale`: short HTTP exchanges (one `GET`, a 1 KiB answer, the server closes)
//! through a relay's `-R` port, at a fixed rate or as fast as a few workers go. Blocking
//! sockets and plain threads, as in `client.rs`; every socket has timeouts.

use crate::server::HTTP_BODY;
use anyhow::{Context, Result, ensure};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a visitor's connect, read or write may take before it counts as failed.
const VISITOR_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of an answer read: the head and the 1 KiB body, with room to spare.
const MAX_ANSWER: usize = 16 * 1024;
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: burrow-bench\r\n\r\n";

/// What a run of visitors did.
#[derive(Debug, Default)]
pub struct Visits {
    pub done: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// each completed request's time, connect to the answer's last byte
    pub times: Vec<Duration>,
    /// from the first request's start to the last one's end
    pub wall: Duration,
    /// requests that started more than 10 ms after their slot (the fixed rate fell behind)
    pub late: u64,
}

impl Visits {
    pub fn per_sec(&self) -> f64 {
        self.done as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The `p`th percentile of the request times, in ms (0 without samples).
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        crate::client::percentile(&mut self.times, p).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }

    fn merge(&mut self, o: Visits) {
        self.done += o.done;
        self.failed += o.failed;
        self.late += o.late;
        self.first_error = self.first_error.take().or(o.first_error);
        self.times.extend(o.times);
    }
}

/// One visitor: connect, send a `GET`, read the answer to EOF and check it.
fn visit(addr: SocketAddr) -> Result<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, VISITOR_TIMEOUT)
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(VISITOR_TIMEOUT))?;
    s.set_write_timeout(Some(VISITOR_TIMEOUT))?;
    s.write_all(REQUEST)?;
    let mut answer = Vec::with_capacity(2048);
    (&mut s)
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut answer)
        .context("reading the answer")?;
    let took = t.elapsed();
    ensure!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "answer starts {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(40)])
    );
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|end| answer.len() - end - 4);
    ensure!(
        body == Some(HTTP_BODY),
        "body of {body:?} bytes, not {HTTP_BODY}"
    );
    Ok(took)
}

/// `rate` requests per second for `duration`, started on schedule (request `i` at `i / rate`)
/// by `workers` threads; a request whose worker was busy starts late, and is counted.
pub fn fixed_rate(
    addr: SocketAddr,
    rate: f64,
    duration: Duration,
    workers: usize,
) -> Result<Visits> {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    run_workers(workers, move || {
        let mut v = Visits::default();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= total {
                return v;
            }
            let due = t0 + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            } else if now - due > Duration::from_millis(10) {
                v.late += 1;
            }
            record(&mut v, visit(addr));
        }
    })
}

/// `workers` threads visiting back to back for `duration`: the most the path serves.
pub fn closed_loop(addr: SocketAddr, workers: usize, duration: Duration) -> Result<Visits> {
    run_workers(workers, move || {
        let mut v = Visits::default();
        let t0 = Instant::now();
        while t0.elapsed() < duration {
            record(&mut v, visit(addr));
        }
        v
    })
}

fn record(v: &mut Visits, r: Result<Duration>) {
    match r {
        Ok(t) => {
            v.done += 1;
            v.times.push(t);
        }
        Err(e) => {
            v.failed += 1;
            v.first_error.get_or_insert_with(|| format!("{e:#}"));
            // Do not spin on a persistent failure (out of ports, relay gone).
            thread::sleep(Duration::from_millis(1));
        }
    }
}

fn run_workers(
    workers: usize,
    work: impl Fn() -> Visits + Send + Sync + Clone + 'static,
) -> Result<Visits> {
    let t0 = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let work = work.clone();
            thread::spawn(work)
        })
        .collect();
    let mut all = Visits::default();
    for t in threads {
        all.merge(
            t.join()
                .map_err(|_| anyhow::anyhow!("visitor thread died"))?,
        );
    }
    all.wall = t0.elapsed();
    Ok(all)
}
