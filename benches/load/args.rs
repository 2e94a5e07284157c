//! The bench's command line: sizes, the burrow binary, the peers, idle-stream counts and
//! whether the tunnel clients resume.

use crate::resume::Mode;
use crate::{FULL, QUICK, Sizes};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// Most idle tunnel streams `--idle-streams` accepts (the bench stays bounded).
const MAX_IDLE_STREAMS: usize = 50_000;
pub struct Options {
    pub sizes: &'static Sizes,
    pub burrow: PathBuf,
    /// `--idle-streams A,B`: the tunnel memory test's counts instead of the sizes'
    pub idle_streams: Option<[usize; 2]>,
    /// where bore and rathole are (`--peers DIR`; default: target/peers/bin)
    pub peers_bin: PathBuf,
    /// the tunnel clients with resumption on, off, or a pair of each
    pub resume: Mode,
    /// `--scale`: only the scale measurements (docs/SCALING.md), not the comparison
    pub scale: bool,
    /// `--udp`: only the UDP part (datagrams per second and loss, direct and `-L udp:`)
    pub udp: bool,
}

pub const USAGE: &str = "usage: burrow-bench [--quick] [--burrow PATH] [--peers DIR] \
                     [--idle-streams A,B] [--no-resume | --resume-both] [--scale | --udp]";

pub fn parse_args() -> Result<Option<Options>> {
    let mut sizes = &FULL;
    let mut burrow = std::env::var_os("BURROW_BIN").map(PathBuf::from);
    let mut idle_streams = None;
    let mut peers_bin = None;
    let mut resume = Mode::On;
    let mut scale = false;
    let mut udp = false;
    let mut set_resume = |m: Mode| -> Result<()> {
        if resume != Mode::On && resume != m {
            bail!("--no-resume and --resume-both exclude each other");
        }
        resume = m;
        Ok(())
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => sizes = &QUICK,
            "--scale" => scale = true,
            "--udp" => udp = true,
            "--no-resume" => set_resume(Mode::Off)?,
            "--resume-both" => set_resume(Mode::Both)?,
            "--burrow" => burrow = Some(args.next().context("--burrow needs a PATH")?.into()),
            "--peers" => peers_bin = Some(args.next().context("--peers needs a DIR")?.into()),
            "--idle-streams" => {
                let v = args.next().context("--idle-streams needs A,B")?;
                idle_streams = Some(parse_counts(&v)?);
            }
            "-h" | "--help" => {
                println!(
                    "{USAGE}\n\n\
                     --quick              small sizes and counts: a sanity check in seconds\n\
                     --burrow PATH        the burrow binary (default: $BURROW_BIN, else \
                     target/release/burrow)\n\
                     --peers DIR          where bore and rathole are (default: target/peers/bin, \
                     as `just bench-peers` installs them)\n\
                     --idle-streams A,B   idle tunnel streams for the two memory readings \
                     (default 1000,10000; --quick 100,500)\n\
                     --no-resume          start every `burrow client` with --no-resume \
                     (resumption off; it is on by default)\n\
                     --resume-both        measure the tunnel with resumption on and off in the \
                     same rounds\n                     \
                     (rows \"tunnel -L, no resume\" …) and print on ÷ off: CPU s/GB, MB/s, \
                     RSS idle,\n                     \
                     with idle streams and peak during bulk\n\
                     --scale              only what one relay holds (idle sessions, idle \
                     streams, visitors, 1 vCPU)\n                     \
                     and what a client pays per relay (docs/SCALING.md); with --quick: \
                     small counts\n\
                     --udp                only the UDP part: datagrams/s and loss at 20,000/s \
                     of 512 B,\n                     \
                     direct and through -L udp: (1 s each with --quick, else 3 s)"
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
    let peers_bin = peers_bin.unwrap_or_else(|| PathBuf::from("target/peers/bin"));
    Ok(Some(Options {
        sizes,
        burrow,
        idle_streams,
        peers_bin,
        resume,
        scale,
        udp,
    }))
}

/// `A,B`: two stream counts, each at least 1 and at most [`MAX_IDLE_STREAMS`].
fn parse_counts(v: &str) -> Result<[usize; 2]> {
    let parse = |x: &str| -> Result<usize> {
        let n: usize = x
            .trim()
            .parse()
            .with_context(|| format!("--idle-streams: bad count {x:?}"))?;
        if !(1..=MAX_IDLE_STREAMS).contains(&n) {
            bail!("--idle-streams: {n} is not in 1..={MAX_IDLE_STREAMS}");
        }
        Ok(n)
    };
    match v.split_once(',') {
        Some((a, b)) => Ok([parse(a)?, parse(b)?]),
        None => bail!("--idle-streams: expected A,B, got {v:?}"),
    }
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
