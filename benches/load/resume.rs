//! The tunnel under test with resumption on or off (`burrow client --no-resume`), and with
//! `--resume-both` the table that sets the two side by side.
//!
//! Resumption (issue 10) keeps every frame a side sent until the peer acknowledges it, so it
//! costs CPU per byte and memory while data is in flight; this is where the bench shows how
//! much, on the same build, in the same run.

use crate::procs::{self, ChildGuard, Relay};
use crate::report::{Metrics, Outcome, Row, TunnelMem};
use crate::{CLIENT, RELAY, TUNNEL_L, TUNNEL_R};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;

/// Which tunnel clients the bench starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// the default: resumption on
    On,
    /// `--no-resume`: every `burrow client` runs with `--no-resume`; rows keep their names
    Off,
    /// `--resume-both`: one tunnel pair of each kind, the off pair's rows and processes
    /// named with ", no resume", and the on ÷ off table
    Both,
}

impl Mode {
    /// The pairs to start, in order: `true` for resumption on.
    pub fn pairs(self) -> &'static [bool] {
        match self {
            Mode::On => &[true],
            Mode::Off => &[false],
            Mode::Both => &[true, false],
        }
    }
}

/// The off pair's names under `--resume-both`: the usual ones and ", no resume" (report.rs
/// and compare.rs find them by the usual names' prefix).
const TUNNEL_L_OFF: &str = "tunnel -L, no resume";
const TUNNEL_R_OFF: &str = "tunnel -R, no resume";
const RELAY_OFF: &str = "relay, no resume";
const CLIENT_OFF: &str = "client, no resume";

/// Row and process names of one tunnel pair.
#[derive(Clone, Copy)]
pub struct Labels {
    pub relay: &'static str,
    pub client: &'static str,
    pub local: &'static str,
    pub remote: &'static str,
}

impl Labels {
    /// The usual names, except for the off pair when both pairs run.
    pub fn of(mode: Mode, resume: bool) -> Labels {
        if mode == Mode::Both && !resume {
            Labels {
                relay: RELAY_OFF,
                client: CLIENT_OFF,
                local: TUNNEL_L_OFF,
                remote: TUNNEL_R_OFF,
            }
        } else {
            Labels {
                relay: RELAY,
                client: CLIENT,
                local: TUNNEL_L,
                remote: TUNNEL_R,
            }
        }
    }
}

/// The tunnel under test: a relay, and a client connected to it with `-L` and `-R` to the
/// sink/echo server (and [`ECHO_LISTENERS`] more `-L` to the echo child, if there is one).
pub struct Tunnel {
    pub relay: Relay,
    pub client: procs::TunnelClient,
    pub labels: Labels,
}

/// `-L` listeners to the echo child: one serves at most 4,096 connections, and the idle-stream
/// test holds up to 10,000.
const ECHO_LISTENERS: usize = 3;

impl Tunnel {
    pub fn start(
        bin: &Path,
        server: SocketAddr,
        echo: Option<SocketAddr>,
        resume: bool,
        labels: Labels,
    ) -> Result<Self> {
        let relay = procs::relay(bin).context("relay")?;
        let echoes = echo.into_iter().flat_map(|e| [e; ECHO_LISTENERS]);
        let targets: Vec<SocketAddr> = std::iter::once(server).chain(echoes).collect();
        let client =
            procs::tunnel_client(bin, relay.addr, &targets, server, resume).context("client")?;
        eprintln!(
            "tunnel ({}): relay on {}, client pid {}: -L {:?}, -R {}",
            if resume { "resume on" } else { "--no-resume" },
            relay.addr,
            client.child.pid(),
            client.locals,
            client.remote
        );
        Ok(Tunnel {
            relay,
            client,
            labels,
        })
    }

    pub fn children(&self) -> [(&'static str, &ChildGuard); 2] {
        [
            (self.labels.relay, &self.relay.child),
            (self.labels.client, &self.client.child),
        ]
    }

    pub fn watched(&self) -> Vec<(&'static str, u32)> {
        self.children().map(|(l, c)| (l, c.pid())).to_vec()
    }
}

fn measured<'a>(rows: &'a [Row], name: &str) -> Option<&'a Metrics> {
    rows.iter().find_map(|r| match &r.outcome {
        Outcome::Measured(m) if r.name == name => Some(m),
        _ => None,
    })
}

fn mem<'a>(mems: &'a [TunnelMem], name: &str) -> Option<&'a TunnelMem> {
    mems.iter().find(|m| m.name == name)
}

/// One line of the table: on, off, on ÷ off (`decimals` for the two values).
fn line(what: &str, on: Option<f64>, off: Option<f64>, decimals: usize) {
    let show = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.decimals$}"));
    let ratio = match (on, off) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "?".into(),
    };
    println!("| {what} | {} | {} | {ratio} |", show(on), show(off));
}

const KIB_PER_MIB: f64 = 1024.0;

/// The on ÷ off table of a `--resume-both` run: CPU s/GB (relay + client), MB/s and RTT of
/// both tunnel paths; each side's RSS idle, with each count of idle streams, per idle stream,
/// and its peak during bulk.
pub fn print(rows: &[Row], mems: &[TunnelMem], streams: usize) {
    println!("\n| resumption: on vs off (`--no-resume`) | on | off | on ÷ off |");
    println!("|---|--:|--:|--:|");
    for (on, off) in [(TUNNEL_L, TUNNEL_L_OFF), (TUNNEL_R, TUNNEL_R_OFF)] {
        let (a, b) = (measured(rows, on), measured(rows, off));
        let get = |m: Option<&Metrics>, f: &dyn Fn(&Metrics) -> Option<f64>| m.and_then(f);
        let count = |n: usize| {
            if n == 1 {
                "1 stream".into()
            } else {
                format!("{n} streams")
            }
        };
        for (k, n) in [(0, 1), (1, streams)] {
            let cpu = |m: &Metrics| Some(m.cpu.iter().map(|c| c[k]).sum::<f64>());
            line(
                &format!("{on}: CPU s/GB relay+client, {}", count(n)),
                get(a, &cpu),
                get(b, &cpu),
                2,
            );
        }
        for (k, n) in [(0, 1), (1, streams)] {
            let rate = |m: &Metrics| Some(if k == 0 { m.one } else { m.many });
            line(
                &format!("{on}: MB/s, {}", count(n)),
                get(a, &rate),
                get(b, &rate),
                0,
            );
        }
        let rtt = |m: &Metrics| Some(m.rtt_p50.as_secs_f64() * 1e6);
        line(&format!("{on}: RTT p50 µs"), get(a, &rtt), get(b, &rtt), 0);
    }
    for (on, off) in [(RELAY, RELAY_OFF), (CLIENT, CLIENT_OFF)] {
        let (a, b) = (mem(mems, on), mem(mems, off));
        let get = |m: Option<&TunnelMem>, f: &dyn Fn(&TunnelMem) -> Option<f64>| m.and_then(f);
        let idle = |m: &TunnelMem| Some(m.idle.rss_kib as f64 / KIB_PER_MIB);
        line(
            &format!("{on}: RSS idle MiB"),
            get(a, &idle),
            get(b, &idle),
            1,
        );
        let counts: Vec<usize> = a.map_or(vec![], |m| m.held.iter().map(|h| h.0).collect());
        for (i, n) in counts.iter().enumerate() {
            let held = |m: &TunnelMem| Some(m.held.get(i)?.1.rss_kib as f64 / KIB_PER_MIB);
            line(
                &format!("{on}: RSS with {n} idle streams MiB"),
                get(a, &held),
                get(b, &held),
                1,
            );
        }
        let per = |m: &TunnelMem| {
            let (n, h) = m.held.last()?;
            Some(h.rss_kib.saturating_sub(m.idle.rss_kib) as f64 / (*n).max(1) as f64)
        };
        if let Some(n) = counts.last() {
            line(
                &format!("{on}: KiB per idle stream ({n})"),
                get(a, &per),
                get(b, &per),
                2,
            );
        }
        for path in [TUNNEL_L, TUNNEL_R] {
            let peak = |m: &TunnelMem| {
                let (_, p) = m.bulk.iter().find(|(p, _)| p.starts_with(path))?;
                Some(p.peak_kib as f64 / KIB_PER_MIB)
            };
            line(
                &format!("{on}: peak RSS during bulk, {path}, MiB"),
                get(a, &peak),
                get(b, &peak),
                1,
            );
        }
    }
    println!(
        "\n(Both pairs run the same binary in the same rounds; \"off\" is `burrow client \
         --no-resume`. CPU: relay + client, median over rounds. Idle streams: each pair's own \
         idle-stream instance.)"
    );
}
