//! The relays under test as child processes (burrow, socat), and what /proc says about them.
//!
//! Every child lives in a [`ChildGuard`], which kills it when dropped, so an error anywhere
//! in the bench still ends them. The release profile aborts on panic (no drops), so the bench
//! returns errors instead of panicking. Ctrl-C in a terminal reaches the children directly:
//! they are in the bench's foreground process group.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a child may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while waiting for socat to accept, or for connections to be closed.
const POLL: Duration = Duration::from_millis(10);
/// Lines of a child's stderr kept for the report (the rest are counted).
const KEPT_LINES: usize = 20;
/// The line burrow logs once its listener is bound (main.rs, `info` level).
const LISTENING: &str = "proxy listening on ";
/// `warn` for everything, except `info` for the binary's own module (`burrow`, where the
/// listening line comes from). `burrow::` covers the library, whose per-connection `info`
/// lines would cost time under load; env_logger's longest matching prefix wins.
const LOG_FILTER: &str = "warn,burrow=info,burrow::=warn";

/// A child process that is killed (and reaped) when this is dropped.
pub struct ChildGuard {
    child: Child,
    /// The child's stderr lines after startup: kept ones and a total count.
    stderr: Arc<Mutex<(Vec<String>, usize)>>,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines the child wrote to stderr after it started (warnings, errors), and how many in all.
    pub fn stderr_lines(&self) -> (Vec<String>, usize) {
        match self.stderr.lock() {
            Ok(g) => g.clone(),
            Err(_) => (Vec::new(), 0),
        }
    }

    /// `Some(status)` if the child has exited.
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown status ({e})")),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Both fail only if the child already exited and was reaped: nothing left to do.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` with stderr captured. Every stderr line is passed to `on_line` first; lines it
/// does not consume are kept for the report.
fn spawn_captured(
    mut cmd: Command,
    mut on_line: impl FnMut(&str) -> bool + Send + 'static,
) -> Result<ChildGuard> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let stderr = child.stderr.take();
    let guard = ChildGuard {
        child,
        stderr: Arc::new(Mutex::new((Vec::new(), 0))),
    };
    if let Some(pipe) = stderr {
        let kept = guard.stderr.clone();
        // Keeps draining the pipe for the child's whole life, so it never blocks on stderr.
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if on_line(&line) {
                    continue;
                }
                if let Ok(mut k) = kept.lock() {
                    k.1 += 1;
                    if k.0.len() < KEPT_LINES {
                        k.0.push(line);
                    }
                }
            }
        });
    }
    Ok(guard)
}

/// A running relay: the child and the address clients connect to.
pub struct Relay {
    pub child: ChildGuard,
    pub addr: SocketAddr,
}

/// Starts `burrow proxy --listen 127.0.0.1:0 [--upstream http://UPSTREAM]` and waits for its
/// "proxy listening on ADDR" line.
pub fn burrow(bin: &Path, upstream: Option<SocketAddr>) -> Result<Relay> {
    let mut cmd = Command::new(bin);
    cmd.args(["proxy", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", LOG_FILTER);
    if let Some(up) = upstream {
        cmd.arg("--upstream").arg(format!("http://{up}"));
    }
    let (tx, rx) = mpsc::channel();
    let mut tx = Some(tx);
    let mut child = spawn_captured(cmd, move |line| {
        let Some(rest) = line.split(LISTENING).nth(1) else {
            return false;
        };
        let addr = rest.split_whitespace().next().unwrap_or_default();
        if let Some(tx) = tx.take() {
            // The receiver is gone only if the bench stopped waiting: nothing to tell.
            let _ = tx.send(addr.parse::<SocketAddr>().map_err(|_| line.to_string()));
        }
        true
    })
    .with_context(|| format!("{} (build it: cargo build --release --bins)", bin.display()))?;
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(addr)) => Ok(Relay { child, addr }),
        Ok(Err(line)) => bail!("cannot read the address in burrow's line {line:?}"),
        Err(mpsc::RecvTimeoutError::Timeout) => bail!(
            "burrow did not log {LISTENING:?} within {READY_TIMEOUT:?}; stderr: {:?}",
            child.stderr_lines().0
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // stderr closed: the process is exiting; give it a moment to be reaped.
            let deadline = Instant::now() + READY_TIMEOUT;
            let status = loop {
                match child.exited() {
                    Some(s) => break s,
                    None if Instant::now() > deadline => break "still running".into(),
                    None => thread::sleep(POLL),
                }
            };
            bail!(
                "burrow closed stderr before listening ({status}); stderr: {:?}",
                child.stderr_lines().0
            )
        }
    }
}

/// Whether `socat` can be run at all.
pub fn socat_available() -> bool {
    Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `socat TCP-LISTEN:PORT,fork,reuseaddr TCP:TARGET` on a free loopback port and waits
/// until it accepts connections.
pub fn socat(target: SocketAddr) -> Result<Relay> {
    // socat cannot report a port it picked, so pick one here: bind :0, read it, release it.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new("socat");
    cmd.arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
        .arg(format!("TCP:{target}"));
    let mut child = spawn_captured(cmd, |_| false)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(mut probe) = TcpStream::connect(addr) {
            // socat forks a relay child for the probe; read until it closes after our
            // write-shutdown so no half-open probe lingers into the measurements.
            probe.shutdown(std::net::Shutdown::Write)?;
            probe.set_read_timeout(Some(READY_TIMEOUT))?;
            // Only waiting for EOF; an error here is harmless for the probe.
            let _ = probe.read_to_end(&mut Vec::new());
            return Ok(Relay { child, addr });
        }
        if let Some(status) = child.exited() {
            bail!("socat exited ({status}): {:?}", child.stderr_lines().0);
        }
        if Instant::now() > deadline {
            bail!("socat did not accept on {addr} within {READY_TIMEOUT:?}");
        }
        thread::sleep(POLL);
    }
}

/// Memory of a process in KiB, and its thread count, from /proc/PID/status.
#[derive(Clone, Copy, Debug)]
pub struct Mem {
    /// resident set now (VmRSS)
    pub rss_kib: u64,
    /// the anonymous part of it (heap, stacks): VmRSS less the binary's and shared
    /// libraries' resident pages, which other processes share
    pub anon_kib: u64,
    /// peak resident set (VmHWM). The kernel updates it lazily (when pages are unmapped),
    /// so it can lag VmRSS: use [`Mem::peak_kib`].
    pub hwm_kib: u64,
    pub threads: u64,
}

impl Mem {
    /// The larger of VmHWM and VmRSS.
    pub fn peak_kib(&self) -> u64 {
        self.hwm_kib.max(self.rss_kib)
    }
}

pub fn mem(pid: u32) -> Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Mem {
        rss_kib: field("VmRSS:")?,
        anon_kib: field("RssAnon:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

/// TCP connections (not listeners) a process has open: its socket descriptors matched with
/// /proc/PID/net/tcp{,6}. Unlike a plain descriptor count this ignores the eventfds, timers
/// and socket pairs a runtime may create lazily after start-up.
pub fn tcp_connections(pid: u32) -> Result<usize> {
    let mut inodes = std::collections::HashSet::new();
    let dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        // A descriptor closed between listing and reading is simply gone.
        let Ok(link) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(&state), Some(&inode)) = (f.get(3), f.get(9)) {
                if state != TCP_LISTEN && inodes.contains(inode) {
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

/// The LISTEN state in /proc/net/tcp.
const TCP_LISTEN: &str = "0A";

/// Waits until `pid` has no TCP connections open; returns how many it still has then.
pub fn wait_no_connections(pid: u32, limit: Duration) -> Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let n = tcp_connections(pid)?;
        if n == 0 || Instant::now() > deadline {
            return Ok(n);
        }
        thread::sleep(POLL);
    }
}

/// The soft limit on open files of this process (children inherit it), if /proc says.
pub fn nofile_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}
