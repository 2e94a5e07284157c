//! Memory of one set of processes (a burrow role or a peer): idle, with each count of idle
//! streams held through it, and (filled in after the rounds) the peak during bulk.

use crate::client::{self, Route};
use crate::peers::{self, Peer, PeerRun};
use crate::procs::{self, Mem};
use crate::usage;
use anyhow::Result;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Longest one held stream's echo may take: a peer out of descriptors or threads often
/// accepts and then never answers, and the bench should not wait 30 s to learn that.
const HOLD_ECHO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a process may take to close its side after the bench closed the held streams.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// One reading with `wanted` idle streams, of which the path `carried` that many.
#[derive(Clone, Copy, Debug)]
pub struct Held {
    pub wanted: usize,
    pub carried: usize,
    /// `None`: the process was gone by then
    pub mem: Option<Mem>,
}

/// One process's footprint.
pub struct Footprint {
    /// the process label (a role: "relay", "bore server", ...)
    pub name: &'static str,
    pub idle: Mem,
    pub pss_idle_kib: Option<u64>,
    pub held: Vec<Held>,
    /// highest VmHWM over the rounds' bulk tests, KiB
    pub peak_bulk_kib: Option<u64>,
    pub notes: Vec<String>,
}

/// Reads `procs` idle, then holds each of `counts` idle streams through `route` (echo mode),
/// reading them with the streams open and waiting for them to close their side after.
pub fn measure(
    procs_: &[(&'static str, u32)],
    route: &Route,
    counts: &[usize],
) -> Result<Vec<Footprint>> {
    let mut out = Vec::with_capacity(procs_.len());
    let mut keep = Vec::with_capacity(procs_.len());
    for &(name, pid) in procs_ {
        keep.push(procs::tcp_connections(pid)?);
        out.push(Footprint {
            name,
            idle: procs::mem(pid)?,
            pss_idle_kib: usage::pss_kib(pid).ok(),
            held: vec![],
            peak_bulk_kib: None,
            notes: vec![],
        });
    }
    let mut ceiling = usize::MAX;
    for &n in counts {
        if n > ceiling {
            // It could not carry fewer: no need to find out again, slowly.
            for f in &mut out {
                f.held.push(Held {
                    wanted: n,
                    carried: ceiling,
                    mem: None,
                });
            }
            continue;
        }
        let t = std::time::Instant::now();
        let (streams, err) = client::hold_upto(route, n, HOLD_ECHO_TIMEOUT);
        let carried = streams.len();
        eprintln!(
            "footprint: {carried} of {n} idle streams through {:?} in {:.2?}",
            procs_.iter().map(|p| p.0).collect::<Vec<_>>(),
            t.elapsed()
        );
        if let Some(e) = &err {
            ceiling = carried;
            if let Some(f) = out.first_mut() {
                f.notes.push(format!(
                    "{}: carried {carried} of {n} idle streams: {e}",
                    f.name
                ));
            }
        }
        for (f, &(_, pid)) in out.iter_mut().zip(procs_) {
            f.held.push(Held {
                wanted: n,
                carried,
                mem: procs::mem(pid).ok(),
            });
        }
        drop(streams);
        for ((f, &(label, pid)), &k) in out.iter_mut().zip(procs_).zip(&keep) {
            let Ok(left) = procs::wait_connections(pid, k, RELEASE_TIMEOUT) else {
                f.notes
                    .push(format!("{label}: exited after {n} idle streams"));
                continue;
            };
            if left > k {
                f.notes.push(format!(
                    "{label}: {} TCP connections still open {RELEASE_TIMEOUT:?} after the bench \
                     closed {n} idle streams",
                    left - k
                ));
            }
        }
    }
    Ok(out)
}

/// A peer's footprint on an instance of its own to `echo` (the echo child), then a fresh
/// instance to `server` for the measured rounds, so the idle streams' grown heap does not
/// hide the peak during bulk (as for burrow's tunnel).
pub fn peer(
    peer: Peer,
    bin: &Path,
    server: SocketAddr,
    echo: Option<SocketAddr>,
    counts: &[usize],
) -> (Vec<Footprint>, Result<PeerRun>) {
    let mut rows = vec![];
    match echo {
        None => eprintln!("{}: no echo child, no footprint", peer.name()),
        Some(echo) => match peers::start(peer, bin, echo) {
            Ok(mut run) => {
                match measure(&run.watched(), &run.route, counts) {
                    Ok(r) => rows = r,
                    Err(e) => eprintln!("{}: footprint failed: {e:#}", peer.name()),
                }
                // A process that died under the idle streams says so in the notes.
                for (f, (_, child)) in rows.iter_mut().zip(&mut run.children) {
                    if let Some(status) = child.exited() {
                        f.notes.push(format!("{}: exited ({status})", f.name));
                    }
                }
            }
            Err(e) => eprintln!("{}: footprint instance failed: {e:#}", peer.name()),
        },
    }
    (rows, peers::start(peer, bin, server))
}
