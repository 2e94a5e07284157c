//! `just bench`: a load generator for burrow. Not a test: it prints numbers.
//!
//! In one run it starts a sink/echo server on 127.0.0.1:0 and measures four paths to it:
//! direct, through socat (a plain relay, the baseline for "any relay at all"), through one
//! `burrow proxy`, and through a chain of two. For each path: bulk throughput on 1 and 8
//! streams, 64-byte round-trip latency, new-connection latency, connections per second; for
//! burrow, the proxy's memory idle and with 1,000 held tunnels. Everything stays on loopback,
//! every count and duration is bounded, and child processes die with the bench.
//!
//! Usage: `burrow-bench [--quick] [--burrow PATH]` (or `BURROW_BIN=PATH`).

#[path = "load/client.rs"]
mod client;
#[path = "load/procs.rs"]
mod procs;
#[path = "load/report.rs"]
mod report;
#[path = "load/server.rs"]
mod server;

use anyhow::{Context, Result, bail};
use client::Route;
use procs::{Mem, Relay};
use report::{MemRow, Metrics, Outcome, Row};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Below this many descriptors the held-connections test (2 per tunnel per process) may fail.
const WANT_NOFILE: u64 = 4096;
/// How long burrow may take to close its side of the held tunnels after the clients closed.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sizes and counts of one run.
pub struct Sizes {
    pub label: &'static str,
    /// bytes on the single bulk stream
    pub single: u64,
    /// parallel bulk streams, and bytes on each
    pub streams: usize,
    pub per_stream: u64,
    /// measured 64-byte round trips
    pub round_trips: usize,
    /// sequential new connections
    pub new_conns: usize,
    /// connections-per-second workers, and for how long they run
    pub cps_workers: usize,
    pub cps_time: Duration,
    /// tunnels held open for the memory reading
    pub held: usize,
}

const MIB: u64 = 1 << 20;

const FULL: Sizes = Sizes {
    label: "full",
    single: 512 * MIB,
    streams: 8,
    per_stream: 64 * MIB,
    round_trips: 5000,
    new_conns: 500,
    cps_workers: 4,
    cps_time: Duration::from_secs(3),
    held: 1000,
};

const QUICK: Sizes = Sizes {
    label: "quick",
    single: 32 * MIB,
    streams: 8,
    per_stream: 4 * MIB,
    round_trips: 500,
    new_conns: 50,
    cps_workers: 4,
    cps_time: Duration::from_millis(300),
    held: 1000,
};

struct Options {
    sizes: &'static Sizes,
    burrow: PathBuf,
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("burrow-bench: {e:#}\nusage: burrow-bench [--quick] [--burrow PATH]");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("burrow-bench: some paths could not be measured (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("burrow-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Option<Options>> {
    let mut sizes = &FULL;
    let mut burrow = std::env::var_os("BURROW_BIN").map(PathBuf::from);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => sizes = &QUICK,
            "--burrow" => burrow = Some(args.next().context("--burrow needs a PATH")?.into()),
            "-h" | "--help" => {
                println!(
                    "usage: burrow-bench [--quick] [--burrow PATH]\n\n\
                     --quick        small sizes and counts: a sanity check in seconds\n\
                     --burrow PATH  the burrow binary (default: $BURROW_BIN, else \
                     target/release/burrow)"
                );
                return Ok(None);
            }
            other => match other.strip_prefix("--burrow=") {
                Some(p) => burrow = Some(p.into()),
                None => bail!("unknown argument {other:?}"),
            },
        }
    }
    let burrow = burrow.unwrap_or_else(default_burrow);
    Ok(Some(Options { sizes, burrow }))
}

/// `target/release/burrow`, or else the `burrow` next to this binary (both are built into
/// the same directory).
fn default_burrow() -> PathBuf {
    let local = PathBuf::from("target/release/burrow");
    if local.exists() {
        return local;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("burrow")))
        .filter(|p| p.exists())
        .unwrap_or(local)
}

/// Runs every path; `Ok(false)` if some path failed (the table says which).
fn run(opts: &Options) -> Result<bool> {
    let s = opts.sizes;
    if !opts.burrow.exists() {
        bail!(
            "no burrow binary at {} (build it: cargo build --release --bins, or pass --burrow)",
            opts.burrow.display()
        );
    }
    let mut notes = Vec::new();
    match procs::nofile_soft_limit() {
        Some(n) if n < WANT_NOFILE => notes.push(format!(
            "open-file limit is {n} (< {WANT_NOFILE}): the {} held connections may fail; \
             raise it with `ulimit -n {WANT_NOFILE}`",
            s.held
        )),
        Some(_) => {}
        None => notes.push("cannot read the open-file limit from /proc/self/limits".into()),
    }
    for n in &notes {
        eprintln!("warning: {n}");
    }
    let server = server::start().context("starting the sink/echo server")?;
    eprintln!("server on {server}; burrow: {}", opts.burrow.display());

    let mut rows = Vec::new();
    let mut mems = Vec::new();

    let direct = Route {
        entry: server,
        tunnel_to: None,
    };
    rows.push(row("direct", measure("direct", &direct, s)));

    let socat = if procs::socat_available() {
        let r = procs::socat(server).and_then(|relay| {
            let route = Route {
                entry: relay.addr,
                tunnel_to: None,
            };
            measure("socat", &route, s)
        });
        row("socat", r)
    } else {
        Row {
            name: "socat",
            outcome: Outcome::Skipped("socat not found".into()),
        }
    };
    rows.push(socat);

    let one = procs::burrow(&opts.burrow, None)
        .and_then(|p| measure_burrow("burrow", &[("burrow", &p)], server, s, &mut mems));
    rows.push(row("burrow", one));

    let two = procs::burrow(&opts.burrow, None).and_then(|second| {
        let first = procs::burrow(&opts.burrow, Some(second.addr))?;
        let hops = [
            ("burrow 2-hop, hop 1", &first),
            ("burrow 2-hop, hop 2", &second),
        ];
        measure_burrow("burrow 2-hop", &hops, server, s, &mut mems)
    });
    rows.push(row("burrow 2-hop", two));

    let ok = rows
        .iter()
        .all(|r| !matches!(r.outcome, Outcome::Failed(_)));
    report::print(s, &rows, &mems, &notes);
    Ok(ok)
}

fn row(name: &'static str, r: Result<Metrics>) -> Row {
    let outcome = match r {
        Ok(m) => Outcome::Measured(m),
        Err(e) => {
            eprintln!("{name}: failed: {e:#}");
            Outcome::Failed(format!("{e:#}"))
        }
    };
    Row { name, outcome }
}

/// The five measurements on one path.
fn measure(name: &str, route: &Route, s: &Sizes) -> Result<Metrics> {
    let one = client::bulk(route, 1, s.single).context("1-stream bulk")?;
    eprintln!("{name}: 1 stream {one:.0} MB/s");
    let many = client::bulk(route, s.streams, s.per_stream).context("parallel bulk")?;
    eprintln!("{name}: {} streams {many:.0} MB/s", s.streams);
    let mut rtts = client::rtt(route, s.round_trips).context("round trips")?;
    let rtt_p50 = client::percentile(&mut rtts, 50.0)?;
    let rtt_p99 = client::percentile(&mut rtts, 99.0)?;
    eprintln!("{name}: RTT p50 {rtt_p50:?} p99 {rtt_p99:?}");
    let mut fresh = client::new_connections(route, s.new_conns).context("new connections")?;
    let new_p50 = client::percentile(&mut fresh, 50.0)?;
    eprintln!("{name}: new connection p50 {new_p50:?}");
    let cps = client::conn_rate(route, s.cps_workers, s.cps_time).context("conn/s")?;
    eprintln!("{name}: {:.0} conn/s ({} failed)", cps.per_sec, cps.errors);
    Ok(Metrics {
        one,
        many,
        rtt_p50,
        rtt_p99,
        new_p50,
        cps,
    })
}

/// Memory of the proxies (idle, holding tunnels, after closing them), then [`measure`]
/// through the first, then each proxy's peak. `proxies` is in chain order; the memory rows
/// are pushed before measuring so they are reported even if a measurement fails.
fn measure_burrow(
    name: &'static str,
    proxies: &[(&'static str, &Relay)],
    server: SocketAddr,
    s: &Sizes,
    mems: &mut Vec<MemRow>,
) -> Result<Metrics> {
    let Some((_, entry)) = proxies.first() else {
        bail!("no proxy to measure");
    };
    let route = Route {
        entry: entry.addr,
        tunnel_to: Some(server),
    };
    let pids: Vec<u32> = proxies.iter().map(|(_, p)| p.child.pid()).collect();
    let idle = pids
        .iter()
        .map(|&p| procs::mem(p))
        .collect::<Result<Vec<_>>>()?;
    let fds = pids
        .iter()
        .map(|&p| procs::open_fds(p))
        .collect::<Result<Vec<_>>>()?;

    let tunnels = client::hold(&route, s.held)?;
    let held = pids
        .iter()
        .map(|&p| procs::mem(p))
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "{name}: RSS idle {} KiB, with {} tunnels {} KiB",
        idle[0].rss_kib, s.held, held[0].rss_kib
    );
    drop(tunnels);
    let first = mems.len();
    for (i, &(label, _)) in proxies.iter().enumerate() {
        let pid = pids[i];
        let left = procs::wait_fds_at_most(pid, fds[i], RELEASE_TIMEOUT)?;
        let mut notes = Vec::new();
        if left > fds[i] {
            notes.push(format!(
                "{label}: {left} descriptors open {RELEASE_TIMEOUT:?} after the clients closed \
                 {} tunnels ({} when idle)",
                s.held, fds[i]
            ));
        }
        mems.push(MemRow {
            name: label,
            idle: idle[i],
            held: held[i],
            after_close: procs::mem(pid)?,
            peak: None,
            notes,
        });
    }

    let metrics = measure(name, &route, s);
    for (row, &(label, proxy)) in mems[first..].iter_mut().zip(proxies) {
        row.peak = procs::mem(proxy.child.pid())
            .ok()
            .map(|m: Mem| m.peak_kib());
        let (lines, total) = proxy.child.stderr_lines();
        if total > 0 {
            row.notes.push(format!(
                "{label} logged {total} lines on stderr (RUST_LOG=warn), first: {lines:?}"
            ));
        }
    }
    metrics
}
