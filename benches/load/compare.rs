//! burrow against its peers: CPU per byte, footprints, ratios, and one line per target of
//! issue 9. A report, not a test: every line is printed, nothing fails the run.

use crate::client::Route;
use crate::footprint::{self, Footprint};
use crate::peers::{self, Peer, PeerRun};
use crate::procs;
use crate::report::{Metrics, Outcome, Row, TunnelMem};
use crate::{CLIENT, RELAY, Sizes, TUNNEL_L, TUNNEL_R};
use std::net::SocketAddr;
use std::path::Path;

/// Issue 9's targets.
/// CPU s/GB of relay + client, each tunnel path, 1 and 8 streams (wstunnel measured 1.1–1.3).
const MAX_TUNNEL_CPU_PER_GB: f64 = 1.2;
/// Tunnel bulk against bore's in the same run.
const MIN_TUNNEL_BULK_VS_BORE: f64 = 1.0;
/// Tunnel RTT p50 against the best peer tunnel's.
const MAX_TUNNEL_RTT_VS_PEERS: f64 = 1.0;
/// `burrow proxy` conn/s against tinyproxy's.
const MIN_PROXY_CPS_VS_TINYPROXY: f64 = 1.2;
/// Idle RSS of every role, KiB (below tinyproxy's 2.8 MiB).
const MAX_IDLE_RSS_KIB: u64 = 2560;
/// Idle PSS of every role, KiB.
const MAX_IDLE_PSS_KIB: u64 = 512;
/// The release binary, with TLS, bytes.
const MAX_BINARY_BYTES: u64 = 3 << 20;
/// RSS per side with 1,000 idle streams, KiB.
const MAX_1K_STREAMS_KIB: u64 = 6 << 10;

type PeerRuns = Vec<(Peer, Result<PeerRun, Outcome>)>;

/// burrow proxy's footprint (an instance of its own, CONNECT to the echo child) and each
/// peer's, and the peers started for the rounds (or why not).
pub fn footprints(
    burrow: &Path,
    peers_bin: &Path,
    server: SocketAddr,
    echo: Option<SocketAddr>,
    counts: &[usize],
) -> (Vec<Footprint>, PeerRuns) {
    let mut rows = vec![];
    match (echo, procs::burrow(burrow, None)) {
        (Some(echo), Ok(p)) => {
            let route = Route {
                entry: p.addr,
                tunnel_to: Some(echo),
            };
            match footprint::measure(&[("burrow", p.child.pid())], &route, counts) {
                Ok(r) => rows.extend(r),
                Err(e) => eprintln!("burrow proxy footprint: failed: {e:#}"),
            }
        }
        (None, _) => eprintln!("burrow proxy footprint: no echo child"),
        (_, Err(e)) => eprintln!("burrow proxy footprint: failed: {e:#}"),
    }
    let mut runs = vec![];
    for peer in peers::ALL {
        let bin = match peer.find(peers_bin) {
            Ok(b) => b,
            Err(why) => {
                eprintln!("{}: skipped: {why}", peer.name());
                runs.push((peer, Err(Outcome::Skipped(why))));
                continue;
            }
        };
        let (f, run) = footprint::peer(peer, &bin, server, echo, counts);
        rows.extend(f);
        let run = run.map_err(|e| {
            eprintln!("{}: failed: {e:#}", peer.name());
            Outcome::Failed(format!("{e:#}"))
        });
        runs.push((peer, run));
    }
    (rows, runs)
}

fn measured<'a>(rows: &'a [Row], name: &str) -> Option<(&'a Row, &'a Metrics)> {
    rows.iter().find_map(|r| match &r.outcome {
        Outcome::Measured(m) if r.name == name => Some((r, m)),
        _ => None,
    })
}

/// Sum of the path's processes' CPU s/GB in test `k` (0: 1 stream, 1: parallel).
fn cpu_sum(m: &Metrics, k: usize) -> Option<f64> {
    (!m.cpu.is_empty()).then(|| m.cpu.iter().map(|c| c[k]).sum())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

pub fn print(
    s: &Sizes,
    burrow_bin: &Path,
    rows: &[Row],
    tunnel_mems: &[TunnelMem],
    footprints: &mut Vec<Footprint>,
    counts: &[usize],
) {
    // The tunnel's relay and client as footprint rows, first.
    let tunnel: Vec<Footprint> = tunnel_mems
        .iter()
        .map(|t| Footprint {
            name: t.name,
            idle: t.idle,
            pss_idle_kib: t.idle_pss_kib,
            held: t
                .held
                .iter()
                .map(|&(n, mem)| footprint::Held {
                    wanted: n,
                    carried: n,
                    mem: Some(mem),
                })
                .collect(),
            peak_bulk_kib: t.bulk.iter().map(|(_, b)| b.peak_kib).max(),
            notes: vec![],
        })
        .collect();
    footprints.splice(0..0, tunnel);

    println!(
        "\n| path | CPU s/GB, 1 stream | CPU s/GB, {} streams | processes |",
        s.streams
    );
    println!("|---|--:|--:|---|");
    for r in rows {
        let Outcome::Measured(m) = &r.outcome else {
            continue;
        };
        let Some(one) = cpu_sum(m, 0) else { continue };
        let parts = |k: usize| {
            let p: Vec<String> = m.cpu.iter().map(|c| format!("{:.2}", c[k])).collect();
            if p.len() > 1 {
                format!("{} = ", p.join(" + "))
            } else {
                String::new()
            }
        };
        println!(
            "| {} | {}{one:.2} | {}{:.2} | {} |",
            r.name,
            parts(0),
            parts(1),
            cpu_sum(m, 1).unwrap_or(0.0),
            r.roles.join(" + ")
        );
    }
    println!(
        "\n(CPU: utime+stime of each process, its live children and its reaped ones, from \
         /proc during that bulk test, per 10^9 bytes; the bench's own load and sink are not \
         counted.)"
    );

    let heads: String = counts
        .iter()
        .map(|n| format!(" RSS, {n} idle streams |"))
        .collect();
    println!("\n| process | RSS idle MiB | PSS idle MiB |{heads} peak in bulk MiB |");
    println!("|---|--:|--:|{}--:|", "--:|".repeat(counts.len()));
    for f in footprints.iter() {
        let held: String = f
            .held
            .iter()
            .map(|h| match h.mem {
                Some(m) if h.carried == h.wanted => format!(" {} |", mib(m.rss_kib)),
                Some(m) => format!(" {} (carried {}) |", mib(m.rss_kib), h.carried),
                None => format!(" – (carried {}) |", h.carried),
            })
            .collect();
        println!(
            "| {} | {} | {} |{held} {} |",
            display(f.name),
            mib(f.idle.rss_kib),
            f.pss_idle_kib.map_or("?".into(), mib),
            f.peak_bulk_kib.map_or("?".into(), mib),
        );
    }
    println!(
        "\n(Idle streams: echo connections through the path to the bench's echo child, on an \
         instance of its own; bore and rathole carry each stream on a TCP connection of its \
         own. Peak in bulk: VmHWM during the measured rounds' bulk tests.)"
    );

    print_ratios(rows, s.streams);
    print_targets(rows, s.streams, burrow_bin, footprints);
    for f in footprints.iter() {
        for n in &f.notes {
            println!("- {n}");
        }
    }
}

/// One row per peer: burrow ÷ peer for each metric.
fn print_ratios(rows: &[Row], streams: usize) {
    println!(
        "\n| burrow ÷ peer | 1 stream | {streams} streams | RTT p50 | new conn p50 | conn/s | \
         CPU s/GB 1 stream | CPU s/GB {streams} streams |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    for peer in peers::ALL {
        let Some((_, p)) = measured(rows, peer.name()) else {
            continue;
        };
        let ours: &[&str] = if peer.is_tunnel() {
            &[TUNNEL_L, TUNNEL_R]
        } else {
            &["burrow"]
        };
        for &path in ours {
            let Some((_, b)) = measured(rows, path) else {
                continue;
            };
            let r = |x: f64, y: f64| {
                if y > 0.0 {
                    format!("{:.2}×", x / y)
                } else {
                    "?".into()
                }
            };
            let cpu = |k| match (cpu_sum(b, k), cpu_sum(p, k)) {
                (Some(x), Some(y)) => r(x, y),
                _ => "?".into(),
            };
            println!(
                "| {path} ÷ {} | {} | {} | {} | {} | {} | {} | {} |",
                peer.name(),
                r(b.one, p.one),
                r(b.many, p.many),
                r(b.rtt_p50.as_secs_f64(), p.rtt_p50.as_secs_f64()),
                r(b.new_p50.as_secs_f64(), p.new_p50.as_secs_f64()),
                r(b.cps.per_sec, p.cps.per_sec),
                cpu(0),
                cpu(1),
            );
        }
    }
    println!(
        "\n(Higher is better for MB/s and conn/s, lower for times and CPU. bore and rathole are \
         reverse tunnels over plain TCP, compared with both tunnel paths; tinyproxy and squid \
         with burrow proxy.)"
    );
}

/// One line per target of issue 9.
fn print_targets(rows: &[Row], streams: usize, burrow_bin: &Path, footprints: &[Footprint]) {
    println!("\nissue 9 targets (a report; nothing here fails the run):");
    let peer_tunnels: Vec<(&str, &Metrics)> = [Peer::Bore, Peer::Rathole]
        .iter()
        .filter_map(|p| Some((p.name(), measured(rows, p.name())?.1)))
        .collect();
    for path in [TUNNEL_L, TUNNEL_R] {
        let Some((_, t)) = measured(rows, path) else {
            println!("- {path}: not measured");
            continue;
        };
        for (k, what) in [
            (0, "1 stream".to_string()),
            (1, format!("{streams} streams")),
        ] {
            match cpu_sum(t, k) {
                Some(c) => println!(
                    "- {path} CPU s/GB relay+client, {what}: {c:.2} (target ≤ \
                     {MAX_TUNNEL_CPU_PER_GB}): {}",
                    verdict(c <= MAX_TUNNEL_CPU_PER_GB)
                ),
                None => println!("- {path} CPU s/GB, {what}: not measured"),
            }
        }
        match measured(rows, "bore") {
            Some((_, b)) if b.one > 0.0 && b.many > 0.0 => {
                let (one, many) = (t.one / b.one, t.many / b.many);
                println!(
                    "- {path} bulk vs bore: 1 stream {one:.2}×, parallel {many:.2}× (target ≥ \
                     {MIN_TUNNEL_BULK_VS_BORE}×): {}",
                    verdict(one.min(many) >= MIN_TUNNEL_BULK_VS_BORE)
                );
            }
            _ => println!("- {path} bulk vs bore: bore not measured"),
        }
        match peer_tunnels.iter().min_by_key(|(_, m)| m.rtt_p50) {
            Some((name, m)) if !m.rtt_p50.is_zero() => {
                let x = t.rtt_p50.as_secs_f64() / m.rtt_p50.as_secs_f64();
                println!(
                    "- {path} RTT p50 {} µs vs {name}'s {} µs: {x:.2}× (target ≤ \
                     {MAX_TUNNEL_RTT_VS_PEERS}×): {}",
                    t.rtt_p50.as_micros(),
                    m.rtt_p50.as_micros(),
                    verdict(x <= MAX_TUNNEL_RTT_VS_PEERS)
                );
            }
            _ => println!("- {path} RTT p50 vs peers: no peer tunnel measured"),
        }
    }
    match (measured(rows, "burrow"), measured(rows, "tinyproxy")) {
        (Some((_, b)), Some((_, t))) if t.cps.per_sec > 0.0 => {
            let x = b.cps.per_sec / t.cps.per_sec;
            println!(
                "- proxy conn/s {x:.2}× tinyproxy (target ≥ {MIN_PROXY_CPS_VS_TINYPROXY}×): {}",
                verdict(x >= MIN_PROXY_CPS_VS_TINYPROXY)
            );
        }
        _ => println!("- proxy conn/s vs tinyproxy: not measured"),
    }
    if let Some((_, b)) = measured(rows, "burrow") {
        for peer in [Peer::Tinyproxy, Peer::Squid] {
            let Some((_, p)) = measured(rows, peer.name()) else {
                continue;
            };
            let bulk = b.one / p.one.max(1e-9);
            let cpu = match (cpu_sum(b, 0), cpu_sum(p, 0)) {
                (Some(x), Some(y)) if y > 0.0 => x / y,
                _ => f64::NAN,
            };
            println!(
                "- proxy lead over {}: 1 stream {bulk:.2}×, CPU s/GB {cpu:.2}× (target: keep \
                 bulk ≥ 1× and CPU ≤ 1×): {}",
                peer.name(),
                verdict(bulk >= 1.0 && cpu <= 1.0)
            );
        }
    }
    let ours = |f: &&Footprint| f.name == RELAY || f.name == CLIENT || f.name == "burrow";
    let list = |get: &dyn Fn(&Footprint) -> Option<u64>| -> String {
        let parts: Vec<String> = footprints
            .iter()
            .filter(ours)
            .map(|f| match get(f) {
                Some(k) => format!("{} {} MiB", role(f.name), mib(k)),
                None => format!("{} ?", role(f.name)),
            })
            .collect();
        parts.join(", ")
    };
    let all_within = |get: &dyn Fn(&Footprint) -> Option<u64>, max: u64| {
        let mine: Vec<&Footprint> = footprints.iter().filter(ours).collect();
        !mine.is_empty() && mine.iter().all(|f| get(f).is_some_and(|k| k <= max))
    };
    let idle = |f: &Footprint| Some(f.idle.rss_kib);
    let pss = |f: &Footprint| f.pss_idle_kib;
    // The first count is 1,000 in a full run (fewer with --quick: compared all the same).
    let first_count = footprints
        .iter()
        .find_map(|f| f.held.first())
        .map(|h| h.wanted);
    let first_k = |f: &Footprint| {
        let h = f.held.first()?;
        (h.carried == h.wanted).then_some(h.mem?.rss_kib)
    };
    println!(
        "- idle RSS: {} (target ≤ {} MiB): {}",
        list(&idle),
        mib(MAX_IDLE_RSS_KIB),
        verdict(all_within(&idle, MAX_IDLE_RSS_KIB))
    );
    println!(
        "- idle PSS: {} (target ≤ {} MiB): {}",
        list(&pss),
        mib(MAX_IDLE_PSS_KIB),
        verdict(all_within(&pss, MAX_IDLE_PSS_KIB))
    );
    println!(
        "- {} idle streams: {} (target for 1,000: ≤ {} MiB per side): {}",
        first_count.unwrap_or(0),
        list(&first_k),
        mib(MAX_1K_STREAMS_KIB),
        verdict(all_within(&first_k, MAX_1K_STREAMS_KIB))
    );
    match std::fs::metadata(burrow_bin) {
        Ok(m) => println!(
            "- release binary {} MiB (target ≤ {} MiB): {}",
            mib(m.len() / 1024),
            mib(MAX_BINARY_BYTES / 1024),
            verdict(m.len() <= MAX_BINARY_BYTES)
        ),
        Err(e) => println!("- release binary: cannot read its size: {e}"),
    }
}

/// A process label in the footprint table: burrow's roles say they are burrow's.
fn display(label: &str) -> String {
    match label {
        "burrow" => "burrow proxy".into(),
        RELAY | CLIENT => format!("burrow {label}"),
        // the off pair of `--resume-both`
        other if other.starts_with(RELAY) || other.starts_with(CLIENT) => {
            format!("burrow {other}")
        }
        other => other.into(),
    }
}

/// The role's name in the target lines.
fn role(label: &str) -> &str {
    match label {
        "burrow" => "proxy",
        other => other,
    }
}
