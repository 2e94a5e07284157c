//! `--scale`, parts (c) and (d): a relay pinned to CPU 0 (`taskset -c 0`, the model of a
//! 1-vCPU VPS) with the bench and its client on CPU 1. (c) short HTTP exchanges through an
//! `-R` port at fixed rates: the relay's CPU and RSS per request; (d) as many requests per
//! second as 16 visitors make, and bulk throughput through the same port.

use crate::client::{self, Route};
use crate::procs::{self, Relay};
use crate::scale::{ScaleSizes, Spread, Table, kib};
use crate::usage;
use crate::visitors::{self, Visits};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// Concurrent visitors of the fixed-rate test (enough that none waits on another).
const RATE_WORKERS: usize = 32;

/// (c) and (d): a relay on CPU 0, the bench and the client on CPU 1.
pub fn run(bin: &Path, server: SocketAddr, s: &ScaleSizes, t: &mut Table) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cpus >= 2 && taskset_available();
    if pin {
        // The bench's threads, and so the client it starts, stay off the relay's CPU.
        set_affinity(std::process::id(), "1")?;
    } else {
        t.add("pinning", "not pinned: needs taskset and 2 CPUs");
    }
    let result = visitors_on(bin, server, s, t, pin.then_some("0"));
    if pin {
        set_affinity(std::process::id(), &format!("0-{}", cpus - 1))?;
    }
    result
}

fn visitors_on(
    bin: &Path,
    server: SocketAddr,
    s: &ScaleSizes,
    t: &mut Table,
    cpu: Option<&str>,
) -> Result<()> {
    let relay: Relay = procs::relay_with(bin, &[], cpu)?;
    let pid = relay.child.pid();
    let client = procs::tunnel_client(bin, relay.addr, &[], server, true)?;
    let cpid = client.child.pid();
    let port = client.remote;
    // (c) fixed rates: CPU and memory per request
    for &rate in s.rates {
        fixed(pid, cpid, port, rate, s, t)?;
    }
    // (d) as fast as the visitors go
    let (mut rps, mut busy, mut p99, mut per_cpu) = (vec![], vec![], vec![], vec![]);
    for _ in 0..s.rounds {
        let r0 = usage::cpu_secs(pid)?;
        let mut v = visitors::closed_loop(port, s.max_workers, s.max_time)?;
        let r1 = usage::cpu_secs(pid)?;
        report_errors(t, "full speed", &v);
        rps.push(v.per_sec());
        busy.push((r1 - r0) / v.wall.as_secs_f64() * 100.0);
        per_cpu.push(v.done as f64 / (r1 - r0).max(0.01));
        p99.push(v.percentile_ms(99.0));
    }
    let pinned = cpu.map_or("not pinned", |_| "relay on 1 CPU");
    t.add(
        format!(
            "max visitor requests/s ({pinned}, {} visitors)",
            s.max_workers
        ),
        Spread::of(rps).show(0),
    );
    t.add(
        "relay CPU busy at max rate",
        format!("{}% of a core", Spread::of(busy).show(0)),
    );
    t.add(
        "requests per relay CPU-second at max rate",
        Spread::of(per_cpu).show(0),
    );
    t.add(
        "visitor request p99 at max rate",
        format!("{} ms", Spread::of(p99).show(1)),
    );
    // throughput through the -R port
    let route = Route {
        entry: port,
        tunnel_to: None,
    };
    for streams in [1, 8] {
        let (mut mbs, mut gb) = (vec![], vec![]);
        for _ in 0..s.rounds {
            let r0 = usage::cpu_secs(pid)?;
            let each = s.bulk / streams as u64;
            mbs.push(client::bulk(&route, streams, each)?);
            let r1 = usage::cpu_secs(pid)?;
            gb.push(usage::per_gb(r1 - r0, each * streams as u64));
        }
        t.add(
            format!("throughput through -R, {streams} stream(s) ({pinned})"),
            format!(
                "{} MB/s, relay {} CPU s/GB",
                Spread::of(mbs).show(0),
                Spread::of(gb).show(2)
            ),
        );
    }
    Ok(())
}

/// (c) at one fixed rate: the relay's and the client's CPU per request, the relay's peak RSS.
fn fixed(
    pid: u32,
    cpid: u32,
    port: SocketAddr,
    rate: f64,
    s: &ScaleSizes,
    t: &mut Table,
) -> Result<()> {
    let m0 = procs::mem(pid)?;
    let (mut per_req, mut per_cpu_s, mut client_per_req, mut lat) =
        (vec![], vec![], vec![], vec![]);
    let (mut peak, mut failed) = (0, 0);
    for _ in 0..s.rounds {
        procs::reset_peak(pid)?;
        let (r0, c0) = (usage::cpu_secs(pid)?, usage::cpu_secs(cpid)?);
        let mut v = visitors::fixed_rate(port, rate, s.rate_time, RATE_WORKERS)?;
        let (r1, c1) = (usage::cpu_secs(pid)?, usage::cpu_secs(cpid)?);
        peak = peak.max(procs::mem(pid)?.peak_kib());
        failed += v.failed;
        report_errors(t, &format!("{rate:.0}/s"), &v);
        let done = v.done.max(1) as f64;
        per_req.push((r1 - r0) / done * 1e6);
        per_cpu_s.push(done / (r1 - r0).max(0.01));
        client_per_req.push((c1 - c0) / done * 1e6);
        lat.push(v.percentile_ms(50.0));
    }
    let at = format!("{rate:.0}/s for {:?}, {} rounds", s.rate_time, s.rounds);
    t.add(
        format!("relay CPU per visitor request ({at})"),
        format!(
            "{} µs = {} requests per CPU-second",
            Spread::of(per_req).show(0),
            Spread::of(per_cpu_s).show(0)
        ),
    );
    t.add(
        format!("client CPU per visitor request ({rate:.0}/s)"),
        format!("{} µs", Spread::of(client_per_req).show(0)),
    );
    t.add(
        format!("visitor request p50 ({rate:.0}/s)"),
        format!("{} ms", Spread::of(lat).show(2)),
    );
    t.add(
        format!("relay RSS before / peak ({rate:.0}/s)"),
        format!(
            "{} / {} (failed requests: {failed})",
            kib(m0.rss_kib),
            kib(peak)
        ),
    );
    Ok(())
}

fn report_errors(t: &mut Table, what: &str, v: &Visits) {
    if v.failed > 0 || v.late > 0 {
        t.add(
            format!("{what}: failed / late requests"),
            format!("{} / {} (first: {:?})", v.failed, v.late, v.first_error),
        );
    }
}

fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `taskset -a -p -c CPUS PID`: every thread of the process.
pub fn set_affinity(pid: u32, cpus: &str) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    anyhow::ensure!(status.success(), "taskset -a -p -c {cpus} {pid}: {status}");
    Ok(())
}
