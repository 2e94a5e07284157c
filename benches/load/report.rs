//! The tables: one row per path with ratios to direct, burrow's memory, and the targets.

use crate::client::Rate;
use crate::procs::Mem;
use crate::{CLIENT, RELAY, Sizes, TUNNEL_L, TUNNEL_R};
use std::time::Duration;

/// What one path measured.
#[derive(Clone)]
pub struct Metrics {
    /// MB/s on one stream, and summed over the parallel streams
    pub one: f64,
    pub many: f64,
    pub rtt_p50: Duration,
    pub rtt_p99: Duration,
    pub new_p50: Duration,
    pub cps: Rate,
    /// CPU s/GB of each watched process (the path's `roles`), in the 1-stream and the
    /// parallel bulk test
    pub cpu: Vec<[f64; 2]>,
}

impl Metrics {
    /// Each metric's median over `samples` (the upper one of an even count); `None` if empty.
    pub fn median(samples: Vec<Metrics>) -> Option<Metrics> {
        fn mid<T: Copy>(mut v: Vec<T>, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> T {
            v.sort_by(cmp);
            v[v.len() / 2]
        }
        if samples.is_empty() {
            return None;
        }
        let f = |get: fn(&Metrics) -> f64| {
            mid(samples.iter().map(get).collect(), |a: &f64, b| {
                a.total_cmp(b)
            })
        };
        let d = |get: fn(&Metrics) -> Duration| mid(samples.iter().map(get).collect(), Ord::cmp);
        let (one, many, per_sec) = (f(|m| m.one), f(|m| m.many), f(|m| m.cps.per_sec));
        let (rtt_p50, rtt_p99, new_p50) = (d(|m| m.rtt_p50), d(|m| m.rtt_p99), d(|m| m.new_p50));
        let cpu = (0..samples[0].cpu.len())
            .map(|i| {
                [0, 1].map(|k| {
                    mid(
                        samples
                            .iter()
                            .filter_map(|m| Some(m.cpu.get(i)?[k]))
                            .collect(),
                        |a: &f64, b| a.total_cmp(b),
                    )
                })
            })
            .collect();
        let errors = samples.iter().map(|m| m.cps.errors).sum();
        let first_error = samples.into_iter().find_map(|m| m.cps.first_error);
        Some(Metrics {
            one,
            many,
            rtt_p50,
            rtt_p99,
            new_p50,
            cps: Rate {
                per_sec,
                errors,
                first_error,
            },
            cpu,
        })
    }
}

#[derive(Clone)]
pub enum Outcome {
    Measured(Metrics),
    /// not measured, and that is fine (socat missing)
    Skipped(String),
    /// the bench could not measure this path
    Failed(String),
}

pub struct Row {
    pub name: &'static str,
    /// labels of the processes whose CPU the metrics hold, in order
    pub roles: Vec<&'static str>,
    pub outcome: Outcome,
}

/// One burrow process's memory.
pub struct MemRow {
    pub name: &'static str,
    pub idle: Mem,
    /// while holding the tunnels
    pub held: Mem,
    /// once the held tunnels were closed
    pub after_close: Mem,
    /// peak RSS after all measurements, in KiB
    pub peak: Option<u64>,
    pub notes: Vec<String>,
}

/// The peak RSS of one tunnel process during one path's bulk tests.
#[derive(Clone, Copy, Debug)]
pub struct BulkPeak {
    /// RSS when the bulk tests started, KiB
    pub before_kib: u64,
    /// peak RSS from then until the end of the 8-stream test, KiB
    pub peak_kib: u64,
    /// VmHWM could not be reset: the peak is since the process started
    pub since_start: bool,
}

/// One tunnel process's memory (the relay or the client).
pub struct TunnelMem {
    pub name: &'static str,
    pub idle: Mem,
    /// with each count of idle streams open
    pub held: Vec<(usize, Mem)>,
    /// once the last streams were closed
    pub after_close: Mem,
    /// the highest peak over rounds during each tunnel path's bulk tests
    pub bulk: Vec<(&'static str, BulkPeak)>,
    /// PSS idle, KiB
    pub idle_pss_kib: Option<u64>,
    pub notes: Vec<String>,
}

/// Targets (informational): burrow vs direct, and burrow's footprint.
const MIN_ONE_STREAM: f64 = 0.6;
const MIN_CONN_RATE: f64 = 0.55;
const MAX_IDLE_KIB: u64 = 2 * 1024;
const MAX_HELD_KIB: u64 = 8 * 1024;

/// Tunnel targets (informational), each path vs direct.
const TUNNEL_MIN_ONE_STREAM: f64 = 0.65;
const TUNNEL_MIN_MANY_STREAMS: f64 = 0.6;
/// a new stream's p50 vs direct's new-connection p50
const TUNNEL_MAX_NEW_STREAM: f64 = 2.5;
const TUNNEL_MIN_CONN_RATE: f64 = 0.55;
/// Per tunnel process: idle, with the two counts of idle streams, and peak during bulk.
const TUNNEL_MAX_IDLE_KIB: u64 = 2 * 1024;
const TUNNEL_MAX_HELD_KIB: [(usize, u64); 2] = [(1000, 8 * 1024), (10_000, 48 * 1024)];
const TUNNEL_MAX_BULK_KIB: u64 = 16 * 1024;

pub fn print(
    s: &Sizes,
    idle_streams: &[usize],
    rows: &[Row],
    mems: &[MemRow],
    tunnel_mems: &[TunnelMem],
    warnings: &[String],
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let command: Vec<String> = std::env::args().collect();
    println!("`{}`\n", command.join(" "));
    println!(
        "burrow-bench ({}): 1 stream × {} MiB, {} streams × {} MiB, {} × 64-byte round trips, \
         {} new connections, {} workers × {:?} of connections, {} held tunnels per proxy, {} idle \
         tunnel streams; {}; {cores} CPUs; MB = 10^6 bytes\n",
        s.label,
        s.single >> 20,
        s.streams,
        s.per_stream >> 20,
        s.round_trips,
        s.new_conns,
        s.cps_workers,
        s.cps_time,
        s.held,
        idle_streams
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        match s.rounds {
            1 => "one round".to_string(),
            n => format!("each metric the median of {n} rounds over all paths"),
        },
    );
    println!(
        "| path | 1 stream MB/s | {} streams MB/s | RTT p50 µs | RTT p99 µs | new conn p50 µs | conn/s |",
        s.streams
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    let direct = rows.iter().find_map(|r| match &r.outcome {
        Outcome::Measured(m) if r.name == "direct" => Some(m),
        _ => None,
    });
    let mut notes: Vec<String> = warnings.to_vec();
    for r in rows {
        match &r.outcome {
            Outcome::Measured(m) => {
                let base = direct.filter(|_| r.name != "direct");
                let ratio = |v: f64, d: fn(&Metrics) -> f64| match base {
                    Some(b) if d(b) > 0.0 => format!("{v:.0} ({:.2}×)", v / d(b)),
                    _ => format!("{v:.0}"),
                };
                let new_conn = match base {
                    Some(b) if b.new_p50 > Duration::ZERO => format!(
                        "{} ({:.1}×)",
                        m.new_p50.as_micros(),
                        m.new_p50.as_secs_f64() / b.new_p50.as_secs_f64()
                    ),
                    _ => m.new_p50.as_micros().to_string(),
                };
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    r.name,
                    ratio(m.one, |m| m.one),
                    ratio(m.many, |m| m.many),
                    m.rtt_p50.as_micros(),
                    m.rtt_p99.as_micros(),
                    new_conn,
                    ratio(m.cps.per_sec, |m| m.cps.per_sec),
                );
                if m.cps.errors > 0 {
                    notes.push(format!(
                        "{}: {} connections failed in the conn/s test, first: {}",
                        r.name,
                        m.cps.errors,
                        m.cps.first_error.as_deref().unwrap_or("?")
                    ));
                }
            }
            Outcome::Skipped(why) => println!("| {} | skipped: {why} | | | | | |", r.name),
            Outcome::Failed(why) => {
                println!("| {} | failed (see notes) | | | | | |", r.name);
                notes.push(format!("{} failed: {why}", r.name));
            }
        }
    }

    println!(
        "\n| burrow process | RSS idle | RSS, {} held tunnels | per tunnel | RSS after closing them | peak (VmHWM) | threads |",
        s.held
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for m in mems {
        let peak = m.peak.map_or_else(|| "?".to_string(), mib);
        let per_tunnel =
            m.held.rss_kib.saturating_sub(m.idle.rss_kib) as f64 / s.held.max(1) as f64;
        println!(
            "| {} | {} | {} | {per_tunnel:.1} KiB | {} | {peak} | {} |",
            m.name,
            with_anon(&m.idle),
            with_anon(&m.held),
            with_anon(&m.after_close),
            m.held.threads,
        );
        notes.extend(m.notes.iter().cloned());
    }
    println!(
        "\n(RSS includes the resident pages of the binary and shared libraries; \"anon\" is the \
         process's own heap and stacks.)"
    );

    if !tunnel_mems.is_empty() {
        print_tunnel_mems(tunnel_mems, idle_streams, s.streams);
        for m in tunnel_mems {
            notes.extend(m.notes.iter().cloned());
        }
    }

    println!("\n{}", targets(rows, direct, mems, s));
    for path in [TUNNEL_L, TUNNEL_R] {
        println!("{}", tunnel_targets(rows, direct, path, s.streams));
    }
    for m in tunnel_mems {
        println!("{}", tunnel_mem_targets(m));
    }
    if !notes.is_empty() {
        println!("\nnotes:");
        for n in notes {
            println!("- {n}");
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn with_anon(m: &Mem) -> String {
    format!(
        "{} ({:.1} anon)",
        mib(m.rss_kib),
        m.anon_kib as f64 / 1024.0
    )
}

/// The target line for the one-hop burrow row.
fn targets(rows: &[Row], direct: Option<&Metrics>, mems: &[MemRow], s: &Sizes) -> String {
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let burrow = rows.iter().find_map(|r| match &r.outcome {
        Outcome::Measured(m) if r.name == "burrow" => Some(m),
        _ => None,
    });
    let mut out = vec![];
    match (burrow, direct) {
        (Some(b), Some(d)) if d.one > 0.0 && d.cps.per_sec > 0.0 => {
            let one = b.one / d.one;
            let cps = b.cps.per_sec / d.cps.per_sec;
            out.push(format!(
                "1 stream ≥ {MIN_ONE_STREAM}× direct: {} ({one:.2}×)",
                verdict(one >= MIN_ONE_STREAM)
            ));
            out.push(format!(
                "conn/s ≥ {MIN_CONN_RATE}× direct: {} ({cps:.2}×)",
                verdict(cps >= MIN_CONN_RATE)
            ));
        }
        _ => out.push("throughput and conn/s targets: not measured".into()),
    }
    match mems.iter().find(|m| m.name == "burrow") {
        Some(m) => {
            out.push(format!(
                "RSS idle ≤ {}: {} ({})",
                mib(MAX_IDLE_KIB),
                verdict(m.idle.rss_kib <= MAX_IDLE_KIB),
                mib(m.idle.rss_kib)
            ));
            out.push(format!(
                "RSS {} idle tunnels ≤ {}: {} ({})",
                s.held,
                mib(MAX_HELD_KIB),
                verdict(m.held.rss_kib <= MAX_HELD_KIB),
                mib(m.held.rss_kib)
            ));
        }
        None => out.push("memory targets: not measured".into()),
    }
    format!("targets (burrow, 1 hop): {}", out.join(" · "))
}

/// The tunnel processes' memory table.
fn print_tunnel_mems(tunnel_mems: &[TunnelMem], idle_streams: &[usize], streams: usize) {
    let counts: Vec<String> = idle_streams
        .iter()
        .map(|n| format!(" RSS, {n} idle streams |"))
        .collect();
    let last = idle_streams.last().copied().unwrap_or(0);
    println!(
        "\n| tunnel process | RSS idle |{} per stream ({last}) | RSS after closing them | \
         peak during bulk, {TUNNEL_L} | peak during bulk, {TUNNEL_R} | threads |",
        counts.concat()
    );
    println!(
        "|---|--:|{}--:|--:|--:|--:|--:|",
        "--:|".repeat(idle_streams.len())
    );
    for m in tunnel_mems {
        let held: Vec<String> = m
            .held
            .iter()
            .map(|(_, mem)| format!(" {} |", with_anon(mem)))
            .collect();
        let per_stream = m.held.last().map_or(0.0, |(n, mem)| {
            mem.rss_kib.saturating_sub(m.idle.rss_kib) as f64 / (*n).max(1) as f64
        });
        // The off pair's paths (`--resume-both`) are named after these, with a suffix.
        let bulk = |path: &str| match m.bulk.iter().find(|(p, _)| p.starts_with(path)) {
            Some((_, b)) => format!(
                "{} (from {}){}",
                mib(b.peak_kib),
                mib(b.before_kib),
                if b.since_start { ", since start" } else { "" }
            ),
            None => "?".into(),
        };
        println!(
            "| {} | {} |{} {per_stream:.1} KiB | {} | {} | {} | {} |",
            m.name,
            with_anon(&m.idle),
            held.concat(),
            with_anon(&m.after_close),
            bulk(TUNNEL_L),
            bulk(TUNNEL_R),
            m.held.last().map_or(m.idle.threads, |(_, mem)| mem.threads),
        );
    }
    println!(
        "\n(Idle streams go through the client's -L to an echo server in a child process. \
         \"Peak during bulk\" is on a second relay and client, started with the same command \
         lines after the idle-stream test (whose heap stays grown, see \"after closing\"), \
         and the pair the table above measured: VmHWM after the 1- and {n}-stream bulk tests, \
         reset to the RSS in brackets just before them; highest over rounds. For the tunnel \
         rows above, \"new conn\" is a new stream over the open session: connect to the \
         -L/-R port and the first 1-byte echo.)",
        n = streams
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// The target line for one tunnel path.
fn tunnel_targets(rows: &[Row], direct: Option<&Metrics>, path: &str, streams: usize) -> String {
    let tunnel = rows.iter().find_map(|r| match &r.outcome {
        Outcome::Measured(m) if r.name == path => Some(m),
        _ => None,
    });
    let out = match (tunnel, direct) {
        (Some(t), Some(d))
            if d.one > 0.0 && d.many > 0.0 && d.cps.per_sec > 0.0 && !d.new_p50.is_zero() =>
        {
            let one = t.one / d.one;
            let many = t.many / d.many;
            let new = t.new_p50.as_secs_f64() / d.new_p50.as_secs_f64();
            let cps = t.cps.per_sec / d.cps.per_sec;
            [
                format!(
                    "1 stream ≥ {TUNNEL_MIN_ONE_STREAM}× direct: {} ({one:.2}×)",
                    verdict(one >= TUNNEL_MIN_ONE_STREAM)
                ),
                format!(
                    "{} streams ≥ {TUNNEL_MIN_MANY_STREAMS}×: {} ({many:.2}×)",
                    streams,
                    verdict(many >= TUNNEL_MIN_MANY_STREAMS)
                ),
                format!(
                    "new stream p50 ≤ {TUNNEL_MAX_NEW_STREAM}× direct new conn: {} ({new:.1}×)",
                    verdict(new <= TUNNEL_MAX_NEW_STREAM)
                ),
                format!(
                    "conn/s ≥ {TUNNEL_MIN_CONN_RATE}×: {} ({cps:.2}×)",
                    verdict(cps >= TUNNEL_MIN_CONN_RATE)
                ),
            ]
            .join(" · ")
        }
        _ => "not measured".into(),
    };
    format!("targets ({path}): {out}")
}

/// The memory target line for one tunnel process. A count other than the target's (quick
/// mode, or a low descriptor limit) is compared all the same, and says so.
fn tunnel_mem_targets(m: &TunnelMem) -> String {
    let mut out = vec![format!(
        "RSS idle ≤ {}: {} ({})",
        mib(TUNNEL_MAX_IDLE_KIB),
        verdict(m.idle.rss_kib <= TUNNEL_MAX_IDLE_KIB),
        mib(m.idle.rss_kib)
    )];
    for (&(want, max), (n, mem)) in TUNNEL_MAX_HELD_KIB.iter().zip(&m.held) {
        let caveat = if *n == want {
            String::new()
        } else {
            format!(", target set for {want}")
        };
        out.push(format!(
            "{n} idle streams ≤ {}: {} ({}{caveat})",
            mib(max),
            verdict(mem.rss_kib <= max),
            mib(mem.rss_kib)
        ));
    }
    match m.bulk.iter().map(|(_, b)| b.peak_kib).max() {
        Some(peak) => out.push(format!(
            "peak during bulk ≤ {}: {} ({})",
            mib(TUNNEL_MAX_BULK_KIB),
            verdict(peak <= TUNNEL_MAX_BULK_KIB),
            mib(peak)
        )),
        None => out.push("peak during bulk: not measured".into()),
    }
    let side = match m.name {
        RELAY => "tunnel relay",
        CLIENT => "tunnel client",
        other => other,
    };
    format!("targets ({side}): {}", out.join(" · "))
}
