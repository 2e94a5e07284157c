//! The tables: one row per path with ratios to direct, burrow's memory, and the targets.

use crate::Sizes;
use crate::client::Rate;
use crate::procs::Mem;
use std::time::Duration;

/// What one path measured.
pub struct Metrics {
    /// MB/s on one stream, and summed over the parallel streams
    pub one: f64,
    pub many: f64,
    pub rtt_p50: Duration,
    pub rtt_p99: Duration,
    pub new_p50: Duration,
    pub cps: Rate,
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
        })
    }
}

pub enum Outcome {
    Measured(Metrics),
    /// not measured, and that is fine (socat missing)
    Skipped(String),
    /// the bench could not measure this path
    Failed(String),
}

pub struct Row {
    pub name: &'static str,
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

/// Targets (informational): burrow vs direct, and burrow's footprint.
const MIN_ONE_STREAM: f64 = 0.6;
const MIN_CONN_RATE: f64 = 0.55;
const MAX_IDLE_KIB: u64 = 2 * 1024;
const MAX_HELD_KIB: u64 = 8 * 1024;

pub fn print(s: &Sizes, rows: &[Row], mems: &[MemRow], warnings: &[String]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let command: Vec<String> = std::env::args().collect();
    println!("`{}`\n", command.join(" "));
    println!(
        "burrow-bench ({}): 1 stream × {} MiB, {} streams × {} MiB, {} × 64-byte round trips, \
         {} new connections, {} workers × {:?} of connections, {} held tunnels; {}; {cores} CPUs; \
         MB = 10^6 bytes\n",
        s.label,
        s.single >> 20,
        s.streams,
        s.per_stream >> 20,
        s.round_trips,
        s.new_conns,
        s.cps_workers,
        s.cps_time,
        s.held,
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

    println!("\n{}", targets(rows, direct, mems, s));
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
