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
use procs::Relay;
use report::{MemRow, Metrics, Outcome, Row};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Below this many descriptors the held-connections test (2 per tunnel per process) may fail.
const WANT_NOFILE: u64 = 4096;
/// How long burrow may take to close its connections after the clients closed theirs.
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
    /// rounds over all paths; each metric is the median over rounds
    pub rounds: usize,
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
    cps_time: Duration::from_secs(2),
    held: 1000,
    rounds: 3,
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
    rounds: 1,
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

/// One path under test.
struct Path<'a> {
    name: &'static str,
    /// how the client reaches the server; `Err`: why this path is not measured
    route: Result<Route, Outcome>,
    /// the burrow processes on this path, in chain order, with their labels
    proxies: Vec<(&'static str, &'a Relay)>,
    /// one per completed round
    samples: Vec<Metrics>,
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

    // Every relay runs for the whole bench, so the rounds can interleave the paths: a
    // machine that gets busier half-way then slows every path alike, not just the last one.
    let socat = procs::socat_available().then(|| procs::socat(server));
    let one = procs::burrow(&opts.burrow, None);
    let second = procs::burrow(&opts.burrow, None);
    let first = match &second {
        Ok(hop2) => procs::burrow(&opts.burrow, Some(hop2.addr)),
        Err(e) => Err(anyhow::anyhow!("second hop: {e:#}")),
    };

    let tunnel = |relay: &Relay| Route {
        entry: relay.addr,
        tunnel_to: Some(server),
    };
    let mut paths = vec![Path {
        name: "direct",
        route: Ok(Route {
            entry: server,
            tunnel_to: None,
        }),
        proxies: vec![],
        samples: vec![],
    }];
    paths.push(Path {
        name: "socat",
        route: match &socat {
            None => Err(Outcome::Skipped("socat not found".into())),
            Some(Err(e)) => Err(failed("socat", e)),
            Some(Ok(relay)) => Ok(Route {
                entry: relay.addr,
                tunnel_to: None,
            }),
        },
        proxies: vec![],
        samples: vec![],
    });
    paths.push(match &one {
        Ok(p) => Path {
            name: "burrow",
            route: Ok(tunnel(p)),
            proxies: vec![("burrow", p)],
            samples: vec![],
        },
        Err(e) => failed_path("burrow", e),
    });
    paths.push(match (&first, &second) {
        (Ok(hop1), Ok(hop2)) => Path {
            name: "burrow 2-hop",
            route: Ok(tunnel(hop1)),
            proxies: vec![("burrow 2-hop, hop 1", hop1), ("burrow 2-hop, hop 2", hop2)],
            samples: vec![],
        },
        (Err(e), _) | (_, Err(e)) => failed_path("burrow 2-hop", e),
    });

    // Memory first, while the proxies have served nothing else.
    let mut mems = Vec::new();
    for path in &mut paths {
        let Ok(route) = path.route else { continue };
        if path.proxies.is_empty() {
            continue;
        }
        match memory(path.name, &path.proxies, &route, s) {
            Ok(rows) => mems.extend(rows),
            Err(e) => path.route = Err(failed(path.name, &e)),
        }
    }

    for round in 1..=s.rounds {
        for path in &mut paths {
            let Ok(route) = path.route else { continue };
            let name = format!("{} (round {round}/{})", path.name, s.rounds);
            match measure(&name, &route, s) {
                Ok(m) => path.samples.push(m),
                Err(e) => path.route = Err(failed(path.name, &e)),
            }
        }
    }

    // Every connection the bench opened is closed: so must burrow's be, soon.
    for path in &paths {
        for &(label, proxy) in &path.proxies {
            let (peak, proxy_notes) = finish(label, proxy)?;
            match mems.iter_mut().find(|m| m.name == label) {
                Some(row) => {
                    row.peak = Some(peak);
                    row.notes.extend(proxy_notes);
                }
                None => notes.extend(proxy_notes),
            }
        }
    }

    let rows: Vec<Row> = paths
        .into_iter()
        .map(|p| Row {
            name: p.name,
            outcome: match p.route {
                Err(o) => o,
                Ok(_) => match Metrics::median(p.samples) {
                    Some(m) => Outcome::Measured(m),
                    None => Outcome::Failed("no samples".into()),
                },
            },
        })
        .collect();
    let ok = rows
        .iter()
        .all(|r| !matches!(r.outcome, Outcome::Failed(_)));
    report::print(s, &rows, &mems, &notes);
    Ok(ok)
}

fn failed(name: &str, e: &anyhow::Error) -> Outcome {
    eprintln!("{name}: failed: {e:#}");
    Outcome::Failed(format!("{e:#}"))
}

fn failed_path<'a>(name: &'static str, e: &anyhow::Error) -> Path<'a> {
    Path {
        name,
        route: Err(failed(name, e)),
        proxies: vec![],
        samples: vec![],
    }
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

/// Memory of the proxies on one path (chain order): idle, while `s.held` tunnels through
/// them are open, and after those are closed and burrow has closed its side.
fn memory(
    name: &str,
    proxies: &[(&'static str, &Relay)],
    route: &Route,
    s: &Sizes,
) -> Result<Vec<MemRow>> {
    let pids: Vec<u32> = proxies.iter().map(|(_, p)| p.child.pid()).collect();
    let idle = pids
        .iter()
        .map(|&p| procs::mem(p))
        .collect::<Result<Vec<_>>>()?;
    let tunnels = client::hold(route, s.held)?;
    let held = pids
        .iter()
        .map(|&p| procs::mem(p))
        .collect::<Result<Vec<_>>>()?;
    drop(tunnels);
    let mut rows = Vec::new();
    for (i, &(label, _)) in proxies.iter().enumerate() {
        let pid = pids[i];
        let left = procs::wait_no_connections(pid, RELEASE_TIMEOUT)?;
        let mut notes = Vec::new();
        if left > 0 {
            notes.push(format!(
                "{label}: {left} TCP connections still open {RELEASE_TIMEOUT:?} after the \
                 clients closed {} held tunnels",
                s.held
            ));
        }
        eprintln!(
            "{name}: {label}: RSS idle {} KiB, with {} tunnels {} KiB",
            idle[i].rss_kib, s.held, held[i].rss_kib
        );
        rows.push(MemRow {
            name: label,
            idle: idle[i],
            held: held[i],
            after_close: procs::mem(pid)?,
            peak: None,
            notes,
        });
    }
    Ok(rows)
}

/// After the measurements: the proxy's peak RSS in KiB, and notes on connections it did not
/// close and on what it logged.
fn finish(label: &str, proxy: &Relay) -> Result<(u64, Vec<String>)> {
    let pid = proxy.child.pid();
    let mut notes = Vec::new();
    let left = procs::wait_no_connections(pid, RELEASE_TIMEOUT)?;
    if left > 0 {
        notes.push(format!(
            "{label}: {left} TCP connections still open {RELEASE_TIMEOUT:?} after the last \
             measurement"
        ));
    }
    let peak = procs::mem(pid)?.peak_kib();
    let (lines, total) = proxy.child.stderr_lines();
    if total > 0 {
        notes.push(format!(
            "{label} logged {total} lines on stderr (RUST_LOG=warn), first: {lines:?}"
        ));
    }
    Ok((peak, notes))
}
