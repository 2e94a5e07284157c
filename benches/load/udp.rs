//! UDP through the tunnel (issue 13): datagrams per second and loss at a fixed offered rate,
//! direct to a UDP echo server and through `burrow client -L udp:` (relay and client as child
//! processes, on loopback). The sender paces its datagrams in 1 ms batches; each echoed one
//! is counted on its way back, so loss is that of the round trip (both directions). Also the
//! relay's and the client's peak RSS after the run: bounded queues keep them flat under a
//! flood.

use crate::procs::{self, ChildGuard};
use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Offered rate, datagrams per second.
pub const RATE: u64 = 20_000;
/// Payload of each datagram.
pub const SIZE: usize = 512;
/// How long stragglers may take to come back after the last datagram was sent.
const DRAIN: Duration = Duration::from_secs(1);

/// One measured path.
pub struct UdpRow {
    pub name: &'static str,
    pub sent: u64,
    pub back: u64,
    pub secs: f64,
    /// (label, peak RSS KiB) of the burrow processes on the path
    pub peaks: Vec<(&'static str, u64)>,
}

/// Measures direct and `-L udp:` for `secs` each at [`RATE`].
pub fn run(bin: &Path, secs: u64) -> Result<Vec<UdpRow>> {
    let stop = Arc::new(AtomicBool::new(false));
    let echo = echo_server(stop.clone())?;
    let mut rows = vec![measure("udp direct", echo, secs)?];
    let relay = procs::relay(bin).context("udp: starting the relay")?;
    let (client, local) = udp_client(bin, relay.addr, echo)?;
    let mut row = measure("udp -L udp:", local, secs)?;
    for (label, child) in [("relay", &relay.child), ("client", &client)] {
        row.peaks.push((label, procs::mem(child.pid())?.peak_kib()));
    }
    rows.push(row);
    stop.store(true, Relaxed);
    Ok(rows)
}

/// Prints the rows, one line each.
pub fn print(rows: &[UdpRow]) {
    println!("\nUDP: {RATE} datagrams/s offered, {SIZE} B each, echoed back");
    for r in rows {
        let loss = 100.0 * (r.sent - r.back.min(r.sent)) as f64 / r.sent.max(1) as f64;
        let peaks: Vec<String> = (r.peaks.iter())
            .map(|(l, kib)| format!("{l} peak {:.1} MiB", *kib as f64 / 1024.0))
            .collect();
        let peaks = match peaks.is_empty() {
            true => String::new(),
            false => format!("; {}", peaks.join(", ")),
        };
        println!(
            "{:<14} {:>7} sent {:>7} back  {:>6.2}% loss  {:>7.0} datagrams/s back{peaks}",
            r.name,
            r.sent,
            r.back,
            loss,
            r.back as f64 / r.secs
        );
    }
}

/// A UDP echo server on its own thread until `stop`.
fn echo_server(stop: Arc<AtomicBool>) -> Result<SocketAddr> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let addr = s.local_addr()?;
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                // A full buffer drops the echo: that is the loss being measured.
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    Ok(addr)
}

/// Sends [`RATE`] datagrams a second to `to` for `secs`, counting the echoes.
fn measure(name: &'static str, to: SocketAddr, secs: u64) -> Result<UdpRow> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.connect(to)?;
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    let back = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let last_back = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let receiver = {
        let (r, back, done, last) = (
            s.try_clone()?,
            back.clone(),
            done.clone(),
            last_back.clone(),
        );
        thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !done.load(Relaxed) {
                if let Ok(n) = r.recv(&mut buf) {
                    if n == SIZE {
                        back.fetch_add(1, Relaxed);
                        last.store(start.elapsed().as_millis() as u64, Relaxed);
                    }
                }
            }
        })
    };
    let payload = vec![0x5a; SIZE];
    let total = RATE * secs;
    let per_ms = RATE / 1000;
    let mut sent = 0u64;
    while sent < total {
        let due = start + Duration::from_micros(sent * 1_000_000 / RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        for _ in 0..per_ms.min(total - sent) {
            // A full send buffer is loss too.
            if s.send(&payload).is_ok() {
                sent += 1;
            }
        }
    }
    let sent_for = start.elapsed();
    let deadline = Instant::now() + DRAIN;
    while back.load(Relaxed) < sent && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    done.store(true, Relaxed);
    receiver.join().ok();
    Ok(UdpRow {
        name,
        sent,
        back: back.load(Relaxed),
        secs: sent_for.as_secs_f64(),
        peaks: Vec::new(),
    })
}

/// `burrow client ws://RELAY/burrow -L udp:127.0.0.1:0:TARGET`, once it listens and is
/// connected; its local UDP address.
fn udp_client(
    bin: &Path,
    relay: SocketAddr,
    target: SocketAddr,
) -> Result<(ChildGuard, SocketAddr)> {
    let mut cmd = Command::new(bin);
    cmd.arg("client")
        .arg(format!("ws://{relay}/burrow"))
        .arg("-L")
        .arg(format!("udp:127.0.0.1:0:{target}"))
        .env("RUST_LOG", "warn");
    let (tx, rx) = mpsc::channel::<String>();
    let on_stdout = move |line: &str| {
        // The receiver is gone once the bench has what it needs: nothing to tell.
        let _ = tx.send(line.to_string());
        true
    };
    let child = procs::spawn_with(cmd, Box::new(|_| false), Some(Box::new(on_stdout)), false)?;
    let (mut local, mut connected) = (None, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while local.is_none() || !connected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            bail!("burrow client -L udp: did not listen and connect within 10 s");
        };
        if let Some(rest) = line.strip_prefix("listening L ") {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            local = Some(addr.parse().context("listening line")?);
        }
        connected |= line == "connected";
    }
    Ok((child, local.context("no -L udp address")?))
}
