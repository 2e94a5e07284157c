//! What a client pays per relay it holds: `burrow client URL1 … URLn -R …` against n relays
//! (1, 2, 4, 8): its RSS, PSS and idle CPU (keepalives), read while the sessions are idle.
//!
//! A client that does not hold several relays in one process (before issue 12's multi-relay
//! client landed) binds on the first relay only: the bench sees fewer `bound R` lines than
//! relays and measures n client processes of one URL each instead, which is what n relays
//! cost such a client; the table says which it measured.

use crate::procs::{self, ChildGuard, Relay};
use crate::scale::{DEFAULT_KEEPALIVE, ScaleSizes, Spread, Table, kib};
use crate::usage;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a client may take to bind its `-R` on every relay.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client of n URLs is given to bind on a second relay before the bench decides
/// it holds only one.
const MULTI_TIMEOUT: Duration = Duration::from_secs(5);
/// The keepalive of these relays and clients: short enough to measure the pings' CPU in a
/// window of seconds; the table scales it to the default.
const KEEPALIVE: &str = "1s";
const KEEPALIVE_SECS: f64 = 1.0;

pub fn run(bin: &Path, target: SocketAddr, s: &ScaleSizes, t: &mut Table) -> Result<()> {
    let most = s.relays.iter().copied().max().unwrap_or(1);
    let relays = (0..most)
        .map(|_| procs::relay_with(bin, &["--keepalive".into(), KEEPALIVE.into()], None))
        .collect::<Result<Vec<Relay>>>()?;
    let mut one_process = None;
    for &n in s.relays {
        let urls: Vec<SocketAddr> = relays[..n].iter().map(|r| r.addr).collect();
        let clients = match one_process {
            Some(false) => separate(bin, &urls, target)?,
            _ => match start(bin, &urls, target, n > 1) {
                Ok(c) => {
                    if n > 1 {
                        one_process = Some(true);
                    }
                    vec![c]
                }
                Err(e) if n > 1 && one_process.is_none() => {
                    eprintln!("scale: one client of {n} URLs: {e:#}: n processes instead");
                    one_process = Some(false);
                    separate(bin, &urls, target)?
                }
                Err(e) => return Err(e),
            },
        };
        std::thread::sleep(Duration::from_millis(500));
        let pids: Vec<u32> = clients.iter().map(ChildGuard::pid).collect();
        let (mut rss, mut anon, mut pss) = (0, 0, 0);
        for &p in &pids {
            let m = procs::mem(p)?;
            rss += m.rss_kib;
            anon += m.anon_kib;
            pss += usage::pss_kib(p).unwrap_or(0);
        }
        let mut cpu = Vec::new();
        for _ in 0..s.rounds {
            let c0 = sum_cpu(&pids)?;
            std::thread::sleep(s.idle_window);
            let c1 = sum_cpu(&pids)?;
            // % of a core at the default keepalive
            cpu.push(
                (c1 - c0) / s.idle_window.as_secs_f64() * KEEPALIVE_SECS
                    / DEFAULT_KEEPALIVE.as_secs_f64()
                    * 100.0,
            );
        }
        let how = if clients.len() == 1 {
            "one process".to_string()
        } else {
            format!("{} processes", clients.len())
        };
        t.add(
            format!("client holding {n} relay(s) ({how}): RSS / anon / PSS"),
            format!("{} / {} / {}", kib(rss), kib(anon), kib(pss)),
        );
        t.add(
            format!("client holding {n} relay(s): idle CPU at keepalive 20s"),
            format!(
                "{}% of a core (measured at {KEEPALIVE}, {} × {:?})",
                Spread::of(cpu).show(4),
                s.rounds,
                s.idle_window
            ),
        );
    }
    Ok(())
}

fn sum_cpu(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|&p| usage::thread_cpu_secs(p)).sum()
}

fn separate(bin: &Path, urls: &[SocketAddr], target: SocketAddr) -> Result<Vec<ChildGuard>> {
    urls.iter()
        .map(|&u| start(bin, &[u], target, false))
        .collect()
}

/// `burrow client ws://R1/burrow … -R 127.0.0.1:0:TARGET --keepalive 1s`, once it has printed
/// a `bound R` line per relay (`relay URL: bound R …` with several). `probe`: give up after
/// [`MULTI_TIMEOUT`] (the client may hold only the first relay).
fn start(bin: &Path, urls: &[SocketAddr], target: SocketAddr, probe: bool) -> Result<ChildGuard> {
    let mut cmd = Command::new(bin);
    cmd.arg("client")
        .args(urls.iter().map(|u| format!("ws://{u}/burrow")))
        .arg("-R")
        .arg(format!("127.0.0.1:0:{target}"))
        .args(["--keepalive", KEEPALIVE])
        .env("RUST_LOG", "warn");
    let (tx, rx) = mpsc::channel();
    let on_stdout = move |line: &str| {
        // With several relays a line names its relay first: `relay ws://…: bound R …`.
        let event = line
            .strip_prefix("relay ")
            .and_then(|rest| rest.split_once(": "))
            .map_or(line, |(_, event)| event);
        if event.starts_with("bound R ") {
            // The receiver is gone once the bench has what it needs.
            let _ = tx.send(());
            return true;
        }
        event.starts_with("connect")
    };
    let child = procs::spawn_with(cmd, Box::new(|_| false), Some(Box::new(on_stdout)), false)
        .with_context(|| format!("starting {}", bin.display()))?;
    let limit = if probe { MULTI_TIMEOUT } else { BIND_TIMEOUT };
    let deadline = Instant::now() + limit;
    for got in 0..urls.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            bail!(
                "bound on {got} of {} relays within {limit:?}; stderr: {:?}",
                urls.len(),
                child.stderr_lines().0
            );
        }
    }
    Ok(child)
}
