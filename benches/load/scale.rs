//! `burrow-bench --scale`: what one relay holds, and what a client pays per relay it holds
//! (docs/SCALING.md). Four parts on relays of their own, then the multi-relay cost
//! (`multirelay.rs`):
//!
//! - **sessions**: the relay's RSS with 0 and then N idle sessions (in-process library clients,
//!   a `-R` binding each, keepalive pings on), and the relay's and the clients' CPU for the
//!   pings;
//! - **streams**: the relay's RSS with 10,000 idle streams over a few `burrow client` sessions;
//! - **visitors**: short HTTP exchanges at a fixed rate through an `-R` port, with the relay
//!   pinned to CPU 0 (`taskset -c 0`, the model of a 1-vCPU VPS) and the bench and client on
//!   CPU 1: relay CPU and RSS per request;
//! - **1 vCPU**: the same relay, as many short requests per second as 16 visitors make, and
//!   bulk throughput through the `-R` port.
//!
//! Every count and duration is bounded; everything stays on loopback.

use crate::client::{self, Route};
use crate::procs;
use crate::sessions::Sessions;
use crate::usage;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sizes and counts of one `--scale` run.
pub struct ScaleSizes {
    /// idle sessions for the two readings after the empty one
    pub sessions: [usize; 2],
    /// the keepalive of the sessions part (relay and clients): short, so a window of seconds
    /// holds enough pings to measure; the CPU is scaled to the default 20 s
    pub keepalive: Duration,
    /// one idle-CPU window; there are `rounds` of them
    pub idle_window: Duration,
    /// idle streams, and the sessions (client processes) they are spread over
    pub streams: usize,
    pub stream_sessions: usize,
    /// the fixed visitor rates, per second, and how long each round lasts
    pub rates: &'static [f64],
    pub rate_time: Duration,
    /// visitors at full speed, and how long each round lasts
    pub max_workers: usize,
    pub max_time: Duration,
    /// bytes through the pinned relay's `-R` port, on 1 stream and spread over 8
    pub bulk: u64,
    /// relays one client holds, one reading each
    pub relays: &'static [usize],
    pub rounds: usize,
}

const MIB: u64 = 1 << 20;

pub const SCALE_FULL: ScaleSizes = ScaleSizes {
    sessions: [100, 1000],
    keepalive: Duration::from_secs(1),
    idle_window: Duration::from_secs(10),
    streams: 10_000,
    stream_sessions: 4,
    rates: &[200.0, 1000.0],
    rate_time: Duration::from_secs(10),
    max_workers: 16,
    max_time: Duration::from_secs(5),
    bulk: 256 * MIB,
    relays: &[1, 2, 4, 8],
    rounds: 3,
};

pub const SCALE_QUICK: ScaleSizes = ScaleSizes {
    sessions: [50, 200],
    keepalive: Duration::from_secs(1),
    idle_window: Duration::from_secs(3),
    streams: 1000,
    stream_sessions: 4,
    rates: &[200.0, 1000.0],
    rate_time: Duration::from_secs(3),
    max_workers: 16,
    max_time: Duration::from_secs(2),
    bulk: 32 * MIB,
    relays: &[1, 2, 4],
    rounds: 1,
};

/// The default keepalive of `burrow server` and `burrow client`: the idle CPU is given for it.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(20);
/// How long a held stream's echo may take.
const HOLD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long memory is given to settle after sessions or streams open (their last frames).
const SETTLE: Duration = Duration::from_millis(500);

/// Median, lowest and highest of some samples.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        let pick = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
        Spread {
            median: pick(v.len().saturating_sub(1) / 2),
            min: pick(0),
            max: pick(v.len().saturating_sub(1)),
        }
    }

    /// `median (min–max)` with `prec` decimals; just the value for one sample.
    pub fn show(&self, prec: usize) -> String {
        if self.min == self.max {
            format!("{:.prec$}", self.median)
        } else {
            format!(
                "{:.prec$} ({:.prec$}–{:.prec$})",
                self.median, self.min, self.max
            )
        }
    }
}

/// The report: one `| what | value |` line each, in order.
pub struct Table(pub Vec<(String, String)>);

impl Table {
    pub fn add(&mut self, what: impl Into<String>, value: impl Into<String>) {
        let (what, value) = (what.into(), value.into());
        eprintln!("scale: {what}: {value}");
        self.0.push((what, value));
    }
}

/// Runs every part; `Ok(false)` if one failed (the table says which).
pub fn run(bin: &Path, s: &ScaleSizes) -> Result<bool> {
    crate::reaper::watch_signals();
    let server = crate::server::start().context("starting the sink/echo/HTTP server")?;
    let echo = procs::echo_child().context("starting the echo child")?;
    let mut t = Table(Vec::new());
    let started = Instant::now();
    let load_before = loadavg();
    let mut ok = true;
    let mut part = |t: &mut Table, name: &str, r: Result<()>| {
        if let Err(e) = r {
            t.add(format!("{name}: FAILED"), format!("{e:#}"));
            ok = false;
        }
    };
    let r = sessions(bin, server, s, &mut t);
    part(&mut t, "sessions", r);
    let r = streams(bin, echo.addr, server, s, &mut t);
    part(&mut t, "streams", r);
    let r = crate::onecpu::run(bin, server, s, &mut t);
    part(&mut t, "visitors", r);
    let r = crate::multirelay::run(bin, server, s, &mut t);
    part(&mut t, "multi-relay", r);
    print(s, &t, &load_before, started.elapsed());
    Ok(ok)
}

/// (a) The relay's RSS with 0 and N idle sessions; the pings' CPU, relay and clients.
fn sessions(bin: &Path, server: SocketAddr, s: &ScaleSizes, t: &mut Table) -> Result<()> {
    let most = s.sessions[1];
    let cap = (most * 2).to_string();
    let ka = format!("{}ms", s.keepalive.as_millis());
    let extra = [
        "--max-sessions",
        &cap,
        "--max-sessions-per-token",
        &cap,
        "--max-connections",
        &(most * 4).to_string(),
        "--keepalive",
        &ka,
    ]
    .map(String::from);
    let relay = procs::relay_with(bin, &extra, None)?;
    let pid = relay.child.pid();
    let m0 = procs::mem(pid)?;
    t.add("relay RSS, no session", kib(m0.rss_kib));
    let mut open = Sessions::new();
    let mut readings = vec![(0, m0)];
    let me = std::process::id();
    let mut mine = vec![];
    for &n in &s.sessions {
        open.grow_to(relay.addr, server, n, s.keepalive)?;
        std::thread::sleep(SETTLE);
        let m = procs::mem(pid)?;
        t.add(format!("relay RSS, {n} idle sessions"), kib(m.rss_kib));
        readings.push((n, m));
        mine.push(procs::mem(me)?.rss_kib);
    }
    let ((n1, a), (n2, b)) = (readings[1], readings[2]);
    t.add(
        format!("relay per idle session ({n1}→{n2}; anon)"),
        format!(
            "{:.1} KiB ({:.1} KiB anon)",
            (b.rss_kib as f64 - a.rss_kib as f64) / (n2 - n1) as f64,
            (b.anon_kib as f64 - a.anon_kib as f64) / (n2 - n1) as f64,
        ),
    );
    t.add(
        format!("client side per idle session ({n1}→{n2}; in-process library clients)"),
        format!(
            "{:.1} KiB",
            (mine[1] as f64 - mine[0] as f64) / (n2 - n1) as f64
        ),
    );
    t.add(
        format!("relay per idle session (0→{n2})"),
        format!(
            "{:.1} KiB",
            (b.rss_kib as f64 - m0.rss_kib as f64) / n2 as f64
        ),
    );
    // CPU of the pings: both sides ping every interval; scaled to the default interval.
    let (mut relay_cpu, mut client_cpu) = (Vec::new(), Vec::new());
    for _ in 0..s.rounds {
        let me = std::process::id();
        let (r0, c0) = (usage::thread_cpu_secs(pid)?, usage::thread_cpu_secs(me)?);
        std::thread::sleep(s.idle_window);
        let (r1, c1) = (usage::thread_cpu_secs(pid)?, usage::thread_cpu_secs(me)?);
        let scale = |d: f64| {
            // CPU fraction for 1,000 sessions at the default keepalive, in % of a core
            d / s.idle_window.as_secs_f64()
                * (1000.0 / most as f64)
                * (s.keepalive.as_secs_f64() / DEFAULT_KEEPALIVE.as_secs_f64())
                * 100.0
        };
        relay_cpu.push(scale(r1 - r0));
        client_cpu.push(scale(c1 - c0));
    }
    let per_ping = |sp: &Spread| {
        // µs per session per keepalive interval, from the % of a core for 1,000 sessions
        sp.median / 100.0 * DEFAULT_KEEPALIVE.as_secs_f64() / 1000.0 * 1e6
    };
    let (rc, cc) = (Spread::of(relay_cpu), Spread::of(client_cpu));
    t.add(
        format!(
            "relay idle CPU, 1,000 sessions at keepalive 20s (measured: {most} at {ka}, {} × {:?})",
            s.rounds, s.idle_window
        ),
        format!(
            "{}% of a core (≈{:.0} µs per session per interval)",
            rc.show(3),
            per_ping(&rc)
        ),
    );
    t.add(
        "clients' idle CPU, 1,000 sessions at keepalive 20s (library, one thread)",
        format!(
            "{}% of a core (≈{:.0} µs per session per interval)",
            cc.show(3),
            per_ping(&cc)
        ),
    );
    t.add(
        format!("relay descriptors with {most} sessions"),
        procs::tcp_connections(pid).map_or("?".into(), |n| format!("{n} TCP connections")),
    );
    drop(open);
    Ok(())
}

/// (b) The relay's RSS with idle streams spread over a few client processes.
fn streams(
    bin: &Path,
    echo: SocketAddr,
    server: SocketAddr,
    s: &ScaleSizes,
    t: &mut Table,
) -> Result<()> {
    let relay = procs::relay(bin)?;
    let pid = relay.child.pid();
    let clients = (0..s.stream_sessions)
        .map(|_| procs::tunnel_client(bin, relay.addr, &[echo], server, true))
        .collect::<Result<Vec<_>>>()?;
    std::thread::sleep(SETTLE);
    let m0 = procs::mem(pid)?;
    t.add(
        format!("relay RSS, {} sessions, no stream", s.stream_sessions),
        kib(m0.rss_kib),
    );
    let each = s.streams / s.stream_sessions;
    let mut held = Vec::new();
    for c in &clients {
        let route = Route {
            entry: c.locals[0],
            tunnel_to: None,
        };
        let (streams, err) = client::hold_upto(&route, each, HOLD_TIMEOUT);
        held.extend(streams);
        if let Some(e) = err {
            anyhow::bail!("held {} streams, then: {e}", held.len());
        }
    }
    std::thread::sleep(SETTLE);
    let m = procs::mem(pid)?;
    let n = held.len();
    t.add(
        format!(
            "relay RSS, {n} idle streams over {} sessions",
            clients.len()
        ),
        kib(m.rss_kib),
    );
    t.add(
        "relay per idle stream (anon)",
        format!(
            "{:.2} KiB ({:.2} KiB anon)",
            (m.rss_kib as f64 - m0.rss_kib as f64) / n as f64,
            (m.anon_kib as f64 - m0.anon_kib as f64) / n as f64
        ),
    );
    Ok(())
}

pub fn kib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn print(s: &ScaleSizes, t: &Table, load_before: &str, took: Duration) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n## burrow-bench --scale ({} sizes)\n",
        if s.rounds > 1 { "full" } else { "quick" }
    );
    println!(
        "machine: {cpus} CPUs, {}; load average before {load_before}, after {}; took {took:.0?}\n",
        cpu_model(),
        loadavg()
    );
    println!("| | |\n|---|--:|");
    for (what, value) in &t.0 {
        println!("| {what} | {value} |");
    }
}
