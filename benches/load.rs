//! `just bench`: a load generator for burrow. Not a test: it prints numbers.
//!
//! In one run it starts a sink/echo server on 127.0.0.1:0 and measures six paths to it:
//! direct, through socat (a plain relay, the baseline for "any relay at all"), through one
//! `burrow proxy`, through a chain of two, and through the WebSocket tunnel both ways: one
//! `burrow server` (the relay) and one `burrow client` with `-L` and `-R` to the server, so
//! "tunnel -L" is client's local port → session → the relay dials, and "tunnel -R" is the
//! relay's public port → session → the client dials. For each path: bulk throughput on 1 and
//! 8 streams, 64-byte round-trip latency, new-connection latency (on the tunnel: a new stream
//! over the open session), connections per second. Memory: each proxy idle and with 1,000
//! held tunnels; the relay and the client idle and with 1,000 and 10,000 idle streams (on a
//! first relay/client pair, with the echo end in a child process), and their peak during bulk
//! (on the measured pair). Everything stays on loopback, every count and duration is bounded,
//! and child processes die with the bench.
//!
//! Resumption (issue 10) is on by default in `burrow client`: `--no-resume` runs every tunnel
//! client of the bench with `--no-resume`, and `--resume-both` measures the tunnel twice in
//! the same run and rounds (one pair of each kind, the off pair's rows end in ", no resume")
//! and prints a table of on ÷ off (see `resume::print`).
//!
//! `--scale` runs only what one relay holds and what a client pays per relay (`scale.rs`,
//! docs/SCALING.md) instead. At the end, the UDP part (`udp.rs`): datagrams per second and
//! loss at 20,000 datagrams/s of 512 B, direct and through `-L udp:`; `--udp` runs only that.
//!
//! Usage: `burrow-bench [--quick] [--burrow PATH] [--idle-streams A,B]
//! [--no-resume | --resume-both] [--scale | --udp]` (or `BURROW_BIN=PATH`).
//! `burrow-bench --echo-server` is the bench's own child process (see `server::echo_child`).

#[path = "load/args.rs"]
mod args;
#[path = "load/client.rs"]
mod client;
#[path = "load/compare.rs"]
mod compare;
#[path = "load/footprint.rs"]
mod footprint;
#[path = "load/multirelay.rs"]
mod multirelay;
#[path = "load/onecpu.rs"]
mod onecpu;
#[path = "load/peers.rs"]
mod peers;
#[path = "load/phases.rs"]
mod phases;
#[path = "load/procs.rs"]
mod procs;
#[path = "load/reaper.rs"]
mod reaper;
#[path = "load/report.rs"]
mod report;
#[path = "load/resume.rs"]
mod resume;
#[path = "load/scale.rs"]
mod scale;
#[path = "load/server.rs"]
mod server;
#[path = "load/sessions.rs"]
mod sessions;
#[path = "load/udp.rs"]
mod udp;
#[path = "load/usage.rs"]
mod usage;
#[path = "load/visitors.rs"]
mod visitors;

use anyhow::{Context, Result, bail};
use args::{Options, USAGE, parse_args};
use client::Route;
use phases::{finish, measure, memory, tunnel_memory};
use procs::Relay;
use report::{BulkPeak, Metrics, Outcome, Row};
use resume::{Labels, Mode, Tunnel};
use std::process::ExitCode;
use std::time::Duration;

/// Below this many descriptors the held-connections test (2 per tunnel per process) may fail.
const WANT_NOFILE: u64 = 4096;
/// Descriptors the bench keeps for itself besides the held streams (server, pipes, probes).
const FD_MARGIN: u64 = 256;
pub const ECHO_SERVER_FLAG: &str = "--echo-server";

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
    /// tunnels held open through each proxy for the memory reading
    pub held: usize,
    /// idle streams held open through the tunnel, one reading per count
    pub idle_streams: [usize; 2],
    /// rounds over all paths; each metric is the median over rounds
    pub rounds: usize,
}

const MIB: u64 = 1 << 20;

pub const FULL: Sizes = Sizes {
    label: "full",
    single: 512 * MIB,
    streams: 8,
    per_stream: 64 * MIB,
    round_trips: 5000,
    new_conns: 500,
    cps_workers: 4,
    cps_time: Duration::from_secs(2),
    held: 1000,
    idle_streams: [1000, 10_000],
    rounds: 3,
};

pub const QUICK: Sizes = Sizes {
    label: "quick",
    single: 32 * MIB,
    streams: 8,
    per_stream: 4 * MIB,
    round_trips: 500,
    new_conns: 50,
    cps_workers: 4,
    cps_time: Duration::from_millis(300),
    held: 1000,
    idle_streams: [100, 500],
    rounds: 1,
};

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(ECHO_SERVER_FLAG) {
        return match server::echo_child() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("burrow-bench {ECHO_SERVER_FLAG}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("burrow-bench: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = if opts.udp {
        run_udp(&opts)
    } else if opts.scale {
        let sizes = if opts.sizes.label == QUICK.label {
            &scale::SCALE_QUICK
        } else {
            &scale::SCALE_FULL
        };
        scale::run(&opts.burrow, sizes)
    } else {
        run(&opts)
    };
    match result {
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

/// One path under test.
struct Path<'a> {
    name: &'static str,
    /// how the client reaches the server; `Err`: why this path is not measured
    route: Result<Route, Outcome>,
    /// the burrow processes on this path, in chain order, with their labels
    proxies: Vec<(&'static str, &'a Relay)>,
    /// processes whose peak RSS during bulk is measured (label, pid)
    watched: Vec<(&'static str, u32)>,
    /// one per completed round
    samples: Vec<Metrics>,
    /// per completed round, one per watched process
    peaks: Vec<Vec<BulkPeak>>,
}

impl<'a> Path<'a> {
    fn new(name: &'static str, route: Result<Route, Outcome>) -> Path<'a> {
        Path {
            name,
            route,
            proxies: vec![],
            watched: vec![],
            samples: vec![],
            peaks: vec![],
        }
    }
}

/// Runs every path; `Ok(false)` if some path failed (the table says which).
fn run(opts: &Options) -> Result<bool> {
    reaper::watch_signals();
    let s = opts.sizes;
    if !opts.burrow.exists() {
        bail!(
            "no burrow binary at {} (build it: cargo build --release --bins, or pass --burrow)",
            opts.burrow.display()
        );
    }
    let mut notes = Vec::new();
    let mut idle_streams = opts.idle_streams.unwrap_or(s.idle_streams);
    match procs::nofile_soft_limit() {
        Some(n) => {
            if n < WANT_NOFILE {
                notes.push(format!(
                    "open-file limit is {n} (< {WANT_NOFILE}): the {} held connections may \
                     fail; raise it with `ulimit -n {WANT_NOFILE}`",
                    s.held
                ));
            }
            // Each idle stream is one descriptor in the bench, the relay, the client and
            // the echo child (every process inherits this limit).
            let budget = n.saturating_sub(FD_MARGIN).min(usize::MAX as u64) as usize;
            for c in &mut idle_streams {
                if *c > budget {
                    notes.push(format!(
                        "open-file limit is {n}: holding {budget} idle tunnel streams instead \
                         of {c} (raise it with `ulimit -n {}`)",
                        *c as u64 + FD_MARGIN
                    ));
                    *c = budget;
                }
            }
        }
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
    // The echo server for the tunnel's idle streams, in a child process (descriptors).
    let echo = procs::echo_child();

    let tunnel = |relay: &Relay| Route {
        entry: relay.addr,
        tunnel_to: Some(server),
    };
    let plain = |entry| Route {
        entry,
        tunnel_to: None,
    };
    let mut paths = vec![Path::new("direct", Ok(plain(server)))];
    paths.push(Path::new(
        "socat",
        match &socat {
            None => Err(Outcome::Skipped("socat not found".into())),
            Some(Err(e)) => Err(failed("socat", e)),
            Some(Ok(relay)) => Ok(plain(relay.addr)),
        },
    ));
    if let (Some(path), Some(Ok(relay))) = (paths.last_mut(), &socat) {
        path.watched = vec![("socat", relay.child.pid())];
    }
    paths.push(match &one {
        Ok(p) => Path {
            proxies: vec![("burrow", p)],
            watched: vec![("burrow", p.child.pid())],
            ..Path::new("burrow", Ok(tunnel(p)))
        },
        Err(e) => failed_path("burrow", e),
    });
    paths.push(match (&first, &second) {
        (Ok(hop1), Ok(hop2)) => Path {
            proxies: vec![("burrow 2-hop, hop 1", hop1), ("burrow 2-hop, hop 2", hop2)],
            watched: vec![
                ("burrow 2-hop, hop 1", hop1.child.pid()),
                ("burrow 2-hop, hop 2", hop2.child.pid()),
            ],
            ..Path::new("burrow 2-hop", Ok(tunnel(hop1)))
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

    // The tunnel's memory on a pair of its own: 10,000 streams leave the heap larger than a
    // bulk transfer needs, which would hide the peak during bulk on the measured pair.
    // With --resume-both, one such pair per mode, one after the other.
    let mut tunnel_mems = Vec::new();
    for &resume in opts.resume.pairs() {
        let labels = Labels::of(opts.resume, resume);
        let mem_pair = match &echo {
            Ok(e) => Tunnel::start(&opts.burrow, server, Some(e.addr), resume, labels),
            Err(e) => Err(anyhow::anyhow!("no echo child: {e:#}")),
        };
        match &mem_pair {
            Ok(t) => {
                let echo_routes: Vec<Route> =
                    t.client.locals[1..].iter().map(|&a| plain(a)).collect();
                match tunnel_memory(&t.watched(), &echo_routes, &idle_streams) {
                    Ok(rows) => tunnel_mems.extend(rows),
                    Err(e) => {
                        notes.push(format!("tunnel memory ({}): failed: {e:#}", labels.relay))
                    }
                }
                for (label, child) in t.children() {
                    let (_, proc_notes) = finish(&format!("{label} (idle-stream pair)"), child, 1)?;
                    match tunnel_mems.iter_mut().find(|m| m.name == label) {
                        Some(row) => row.notes.extend(proc_notes),
                        None => notes.extend(proc_notes),
                    }
                }
            }
            Err(e) => notes.push(format!("tunnel memory ({}): failed: {e:#}", labels.relay)),
        }
    }
    if let Ok(e) = &echo {
        if let Ok(n) = procs::tcp_connections(e.child.pid()) {
            if n > 0 {
                notes.push(format!(
                    "echo child: {n} TCP connections still open after the idle streams"
                ));
            }
        }
        let (lines, total) = e.child.stderr_lines();
        if total > 0 {
            notes.push(format!(
                "echo child logged {total} lines on stderr, first: {lines:?}"
            ));
        }
    }

    // burrow proxy's and the peers' footprints, each on an instance of its own to the echo
    // child; the peers then start afresh to the server for the rounds.
    let echo_addr = echo.as_ref().ok().map(|e| e.addr);
    let (mut footprints, peer_runs) = compare::footprints(
        &opts.burrow,
        &opts.peers_bin,
        server,
        echo_addr,
        &idle_streams,
    );
    for (peer, run) in &peer_runs {
        paths.push(match run {
            Ok(r) => Path {
                watched: r.watched(),
                ..Path::new(peer.name(), Ok(r.route))
            },
            Err(o) => Path::new(peer.name(), Err(o.clone())),
        });
    }
    paths.push(Path::new(
        peers::WSTUNNEL.0,
        Err(Outcome::Skipped(peers::WSTUNNEL.1.into())),
    ));

    // The measured pair(s): same command lines, fresh processes.
    let pairs: Vec<Result<Tunnel>> = opts
        .resume
        .pairs()
        .iter()
        .map(|&resume| {
            let labels = Labels::of(opts.resume, resume);
            let echo_addr = echo.as_ref().ok().map(|e| e.addr);
            Tunnel::start(&opts.burrow, server, echo_addr, resume, labels)
        })
        .collect();
    for (pair, &resume) in pairs.iter().zip(opts.resume.pairs()) {
        let labels = Labels::of(opts.resume, resume);
        match pair {
            Ok(t) => {
                for (name, entry) in [
                    (labels.local, t.client.locals[0]),
                    (labels.remote, t.client.remote),
                ] {
                    paths.push(Path {
                        watched: t.watched(),
                        ..Path::new(name, Ok(plain(entry)))
                    });
                }
            }
            Err(e) => {
                paths.push(failed_path(labels.local, e));
                paths.push(failed_path(labels.remote, e));
            }
        }
    }

    for round in 1..=s.rounds {
        for path in &mut paths {
            let Ok(route) = path.route else { continue };
            let name = format!("{} (round {round}/{})", path.name, s.rounds);
            match measure(&name, &route, s, &path.watched) {
                Ok((m, peaks)) => {
                    path.samples.push(m);
                    path.peaks.push(peaks);
                }
                Err(e) => path.route = Err(failed(path.name, &e)),
            }
        }
    }

    // Every connection the bench opened is closed: so must burrow's be, soon.
    for path in &paths {
        for &(label, proxy) in &path.proxies {
            let (peak, proxy_notes) = finish(label, &proxy.child, 0)?;
            match mems.iter_mut().find(|m| m.name == label) {
                Some(row) => {
                    row.peak = Some(peak);
                    row.notes.extend(proxy_notes);
                }
                None => notes.extend(proxy_notes),
            }
        }
    }
    // The tunnel processes keep their session's connection.
    for (label, child) in pairs.iter().flatten().flat_map(Tunnel::children) {
        let (_, proc_notes) = finish(label, child, 1)?;
        match tunnel_mems.iter_mut().find(|m| m.name == label) {
            Some(row) => row.notes.extend(proc_notes),
            None => notes.extend(proc_notes),
        }
    }
    for path in &paths {
        for (i, &(label, _)) in path.watched.iter().enumerate() {
            let Some(best) = path
                .peaks
                .iter()
                .filter_map(|round| round.get(i).copied())
                .max_by_key(|p| p.peak_kib)
            else {
                continue;
            };
            if let Some(row) = tunnel_mems.iter_mut().find(|m| m.name == label) {
                row.bulk.push((path.name, best));
            }
            for f in footprints.iter_mut().filter(|f| f.name == label) {
                f.peak_bulk_kib = f.peak_bulk_kib.max(Some(best.peak_kib));
            }
        }
    }

    let rows: Vec<Row> = paths
        .into_iter()
        .map(|p| Row {
            name: p.name,
            roles: p.watched.iter().map(|w| w.0).collect(),
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
    report::print(s, &idle_streams, &rows, &mems, &tunnel_mems, &notes);
    compare::print(
        s,
        &opts.burrow,
        &rows,
        &tunnel_mems,
        &mut footprints,
        &idle_streams,
    );
    if opts.resume == Mode::Both {
        resume::print(&rows, &tunnel_mems, s.streams);
    }
    drop(peer_runs);
    Ok(ok && run_udp(opts)?)
}

/// The UDP part: direct and through `-L udp:` at a fixed rate (1 s each with `--quick`, 3 s
/// otherwise); `Ok(false)` if it could not be measured.
fn run_udp(opts: &Options) -> Result<bool> {
    let secs = if opts.sizes.label == QUICK.label {
        1
    } else {
        3
    };
    match udp::run(&opts.burrow, secs) {
        Ok(rows) => {
            udp::print(&rows);
            Ok(true)
        }
        Err(e) => {
            eprintln!("udp: failed: {e:#}");
            Ok(false)
        }
    }
}

/// Row and process names of the tunnel.
pub const TUNNEL_L: &str = "tunnel -L";
pub const TUNNEL_R: &str = "tunnel -R";
pub const RELAY: &str = "relay";
pub const CLIENT: &str = "client";

fn failed(name: &str, e: &anyhow::Error) -> Outcome {
    eprintln!("{name}: failed: {e:#}");
    Outcome::Failed(format!("{e:#}"))
}

fn failed_path<'a>(name: &'static str, e: &anyhow::Error) -> Path<'a> {
    Path::new(name, Err(failed(name, e)))
}
