//! The measurement phases on one path or set of processes: bulk, RTT, new connections and
//! conn/s with CPU and peak RSS ([`measure`]); burrow proxies' memory with held tunnels
//! ([`memory`]); the tunnel's idle streams ([`tunnel_memory`]); and the checks after them
//! ([`finish`]).

use crate::client::{self, Route};
use crate::procs::{self, ChildGuard, Relay};
use crate::report::{BulkPeak, MemRow, Metrics, TunnelMem};
use crate::{Sizes, usage};
use anyhow::{Context, Result};
use std::time::Duration;

/// How long burrow may take to close its connections after the clients closed theirs.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The five measurements on one path, and the peak RSS of the `watched` processes during the
/// two bulk tests.
pub fn measure(
    name: &str,
    route: &Route,
    s: &Sizes,
    watched: &[(&'static str, u32)],
) -> Result<(Metrics, Vec<BulkPeak>)> {
    let mut peaks = Vec::with_capacity(watched.len());
    for &(label, pid) in watched {
        let reset = procs::reset_peak(pid);
        if let Err(e) = &reset {
            eprintln!("{name}: {label}: cannot reset the peak RSS: {e:#}");
        }
        peaks.push(BulkPeak {
            before_kib: procs::mem(pid)?.rss_kib,
            peak_kib: 0,
            since_start: reset.is_err(),
        });
    }
    let cpu_now = || {
        watched
            .iter()
            .map(|&(_, pid)| usage::cpu_secs(pid))
            .collect::<Result<Vec<f64>>>()
    };
    let c0 = cpu_now()?;
    let one = client::bulk(route, 1, s.single).context("1-stream bulk")?;
    eprintln!("{name}: 1 stream {one:.0} MB/s");
    let c1 = cpu_now()?;
    let many = client::bulk(route, s.streams, s.per_stream).context("parallel bulk")?;
    eprintln!("{name}: {} streams {many:.0} MB/s", s.streams);
    let c2 = cpu_now()?;
    let many_bytes = s.per_stream * s.streams as u64;
    let cpu: Vec<[f64; 2]> = (0..watched.len())
        .map(|i| {
            [
                usage::per_gb(c1[i] - c0[i], s.single),
                usage::per_gb(c2[i] - c1[i], many_bytes),
            ]
        })
        .collect();
    for (&(label, _), c) in watched.iter().zip(&cpu) {
        eprintln!("{name}: {label}: CPU {:.2} / {:.2} s/GB", c[0], c[1]);
    }
    for (p, &(label, pid)) in peaks.iter_mut().zip(watched) {
        p.peak_kib = procs::mem(pid)?.peak_kib();
        eprintln!(
            "{name}: {label}: RSS {} KiB before bulk, peak {} KiB",
            p.before_kib, p.peak_kib
        );
    }
    let mut rtts = client::rtt(route, s.round_trips).context("round trips")?;
    let rtt_p50 = client::percentile(&mut rtts, 50.0)?;
    let rtt_p99 = client::percentile(&mut rtts, 99.0)?;
    eprintln!("{name}: RTT p50 {rtt_p50:?} p99 {rtt_p99:?}");
    let mut fresh = client::new_connections(route, s.new_conns).context("new connections")?;
    let new_p50 = client::percentile(&mut fresh, 50.0)?;
    eprintln!("{name}: new connection p50 {new_p50:?}");
    let cps = client::conn_rate(route, s.cps_workers, s.cps_time).context("conn/s")?;
    eprintln!("{name}: {:.0} conn/s ({} failed)", cps.per_sec, cps.errors);
    let m = Metrics {
        one,
        many,
        rtt_p50,
        rtt_p99,
        new_p50,
        cps,
        cpu,
    };
    Ok((m, peaks))
}

/// Memory of the proxies on one path (chain order): idle, while `s.held` tunnels through
/// them are open, and after those are closed and burrow has closed its side.
pub fn memory(
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

/// After the measurements: a burrow process's peak RSS in KiB, and notes on connections
/// it did not close (beyond the `keep` it holds for itself) and on what it logged.
pub fn finish(label: &str, child: &ChildGuard, keep: usize) -> Result<(u64, Vec<String>)> {
    let pid = child.pid();
    let mut notes = Vec::new();
    let left = procs::wait_connections(pid, keep, RELEASE_TIMEOUT)?;
    if left > keep {
        notes.push(format!(
            "{label}: {} TCP connections still open {RELEASE_TIMEOUT:?} after the last \
             measurement",
            left - keep
        ));
    }
    let peak = procs::mem(pid)?.peak_kib();
    let (lines, total) = child.stderr_lines();
    if total > 0 {
        notes.push(format!(
            "{label} logged {total} lines on stderr (RUST_LOG=warn), first: {lines:?}"
        ));
    }
    let (lines, total) = child.stdout_lines();
    if total > 0 {
        notes.push(format!(
            "{label} printed {total} unexpected state lines, first: {lines:?}"
        ));
    }
    Ok((peak, notes))
}

/// Memory of the tunnel's processes: idle, then with each count of idle streams open through
/// `route` (the client's `-L` to the echo child; each stream has echoed one byte), closing
/// them and waiting for both processes to close theirs between counts.
pub fn tunnel_memory(
    watched: &[(&'static str, u32)],
    routes: &[Route],
    counts: &[usize],
) -> Result<Vec<TunnelMem>> {
    let read_all = || {
        watched
            .iter()
            .map(|&(_, p)| procs::mem(p))
            .collect::<Result<Vec<_>>>()
    };
    let idle = read_all()?;
    let pss: Vec<Option<u64>> = watched
        .iter()
        .map(|&(_, p)| usage::pss_kib(p).ok())
        .collect();
    let mut held = Vec::new();
    let mut notes = vec![Vec::new(); watched.len()];
    for &n in counts {
        let t = std::time::Instant::now();
        // Spread over the client's -L listeners: each serves at most 4,096 connections
        // (`MAX_LOCAL_CONNECTIONS` in src/client/serve.rs).
        let mut streams = Vec::with_capacity(n);
        for (i, route) in routes.iter().enumerate() {
            let share = (n - streams.len()).div_ceil(routes.len() - i);
            streams.extend(client::hold(route, share)?);
        }
        let opened = t.elapsed();
        let reading = read_all()?;
        drop(streams);
        let t = std::time::Instant::now();
        for (i, &(label, pid)) in watched.iter().enumerate() {
            // The session's own connection stays.
            let left = procs::wait_connections(pid, 1, RELEASE_TIMEOUT)?;
            if left > 1 {
                notes[i].push(format!(
                    "{label}: {} TCP connections still open {RELEASE_TIMEOUT:?} after the bench \
                     closed {n} idle streams",
                    left - 1
                ));
            }
            eprintln!(
                "tunnel: {label}: RSS idle {} KiB, with {n} streams {} KiB",
                idle[i].rss_kib, reading[i].rss_kib
            );
        }
        eprintln!(
            "tunnel: {n} streams opened in {opened:.2?} ({:.0} µs each), closed in {:.2?}",
            opened.as_secs_f64() * 1e6 / n.max(1) as f64,
            t.elapsed()
        );
        held.push((n, reading));
    }
    let after = read_all()?;
    Ok(watched
        .iter()
        .enumerate()
        .map(|(i, &(name, _))| TunnelMem {
            name,
            idle: idle[i],
            held: held.iter().map(|(n, r)| (*n, r[i])).collect(),
            after_close: after[i],
            bulk: vec![],
            idle_pss_kib: pss[i],
            notes: std::mem::take(&mut notes[i]),
        })
        .collect())
}
