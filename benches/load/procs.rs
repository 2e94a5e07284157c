//! The relays under test as child processes (burrow, socat), and what /proc says about them.
//!
//! Every child lives in a [`ChildGuard`], which kills it when dropped, so an error anywhere
//! in the bench still ends them. The release profile aborts on panic (no drops), so the bench
//! returns errors instead of panicking. Ctrl-C in a terminal reaches the children directly:
//! they are in the bench's foreground process group.

use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
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
/// The same for `burrow server` (also main.rs, `info`).
const RELAY_LISTENING: &str = "relay listening on ";
/// `warn` for everything, except `info` for the binary's own module (`burrow`, where the
/// listening lines come from). `burrow::` covers the library, whose per-connection `info`
/// lines would cost time under load; env_logger's longest matching prefix wins.
const LOG_FILTER: &str = "warn,burrow=info,burrow::=warn";

/// burrow's caps on streams and connections for the bench's processes: above the 10,000 idle
/// streams the footprint holds (the defaults, 4,096 proxy connections and 8,192 relay
/// streams, would refuse part of them). Caps, not sizes: nothing is allocated up front.
const MAX_HELD: &str = "12000";

/// A child process that is killed (and reaped) when this is dropped.
pub struct ChildGuard {
    child: Child,
    /// The child's stderr lines after startup: kept ones and a total count.
    stderr: Lines,
    /// The same for stdout, when it is captured.
    stdout: Lines,
    /// The write end of the child's stdin, when it is a pipe: it closes when the bench
    /// exits, however it exits.
    _stdin: Option<ChildStdin>,
}

/// Kept lines of one output stream, and how many lines there were in all.
type Lines = Arc<Mutex<(Vec<String>, usize)>>;

/// A line handler: `true` if it consumed the line, which is then not kept.
pub type OnLine = Box<dyn FnMut(&str) -> bool + Send>;

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines the child wrote to stderr after it started (warnings, errors), and how many in all.
    pub fn stderr_lines(&self) -> (Vec<String>, usize) {
        snapshot(&self.stderr)
    }

    /// Lines on stdout that no handler consumed, and how many in all.
    pub fn stdout_lines(&self) -> (Vec<String>, usize) {
        snapshot(&self.stdout)
    }

    /// `Some(status)` if the child has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown status ({e})")),
        }
    }
}

fn snapshot(lines: &Lines) -> (Vec<String>, usize) {
    match lines.lock() {
        Ok(g) => g.clone(),
        Err(_) => (Vec::new(), 0),
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Unregistered before it is reaped: its pid may be reused after the wait.
        crate::reaper::unregister(self.child.id());
        // Both fail only if the child already exited and was reaped: nothing left to do.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` with stderr captured. Every stderr line is passed to `on_line` first; lines it
/// does not consume are kept for the report.
pub fn spawn_captured(
    cmd: Command,
    on_line: impl FnMut(&str) -> bool + Send + 'static,
) -> Result<ChildGuard> {
    spawn_with(cmd, Box::new(on_line), None, false)
}

/// Spawns `cmd` with stderr, and if `on_stdout` is given stdout, read line by line for the
/// child's whole life (so it never blocks on a full pipe); with `stdin_pipe`, its stdin is a
/// pipe the bench holds open (else /dev/null).
pub fn spawn_with(
    mut cmd: Command,
    on_stderr: OnLine,
    on_stdout: Option<OnLine>,
    stdin_pipe: bool,
) -> Result<ChildGuard> {
    cmd.stdin(if stdin_pipe {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(if on_stdout.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    crate::reaper::register(child.id());
    let (stderr, stdout, stdin) = (child.stderr.take(), child.stdout.take(), child.stdin.take());
    let guard = ChildGuard {
        child,
        stderr: Arc::default(),
        stdout: Arc::default(),
        _stdin: stdin,
    };
    if let Some(pipe) = stderr {
        drain_lines(pipe, on_stderr, guard.stderr.clone());
    }
    if let (Some(pipe), Some(on_line)) = (stdout, on_stdout) {
        drain_lines(pipe, on_line, guard.stdout.clone());
    }
    Ok(guard)
}

fn drain_lines(pipe: impl Read + Send + 'static, mut on_line: OnLine, kept: Lines) {
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

/// A running relay: the child and the address clients connect to.
pub struct Relay {
    pub child: ChildGuard,
    pub addr: SocketAddr,
}

/// Starts `burrow proxy --listen 127.0.0.1:0 [--upstream http://UPSTREAM]` and waits for its
/// "proxy listening on ADDR" line.
pub fn burrow(bin: &Path, upstream: Option<SocketAddr>) -> Result<Relay> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        MAX_HELD,
    ])
    .env("RUST_LOG", LOG_FILTER);
    if let Some(up) = upstream {
        cmd.arg("--upstream").arg(format!("http://{up}"));
    }
    logged_listener(bin, cmd, LISTENING)
}

/// Starts the tunnel relay, `burrow server --listen 127.0.0.1:0 --no-auth`, and waits for its
/// "relay listening on ADDR" line.
pub fn relay(bin: &Path) -> Result<Relay> {
    relay_with(bin, &[], None)
}

/// [`relay`] with `extra` arguments after the bench's own (a later flag wins), run as
/// `taskset -c CPUS burrow …` when `cpus` is given (taskset execs burrow: same pid).
pub fn relay_with(bin: &Path, extra: &[String], cpus: Option<&str>) -> Result<Relay> {
    let mut cmd = match cpus {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", c]).arg(bin);
            t
        }
        None => Command::new(bin),
    };
    cmd.args(["server", "--listen", "127.0.0.1:0", "--no-auth"])
        .args(["--max-streams", MAX_HELD, "--max-streams-total", MAX_HELD])
        .args(extra)
        .env("RUST_LOG", LOG_FILTER);
    logged_listener(bin, cmd, RELAY_LISTENING)
}

/// Spawns burrow and waits for the log line `marker ADDR`.
fn logged_listener(bin: &Path, cmd: Command, marker: &'static str) -> Result<Relay> {
    let (tx, rx) = mpsc::channel();
    let mut tx = Some(tx);
    let child = spawn_captured(cmd, move |line| {
        let Some(rest) = line.split(marker).nth(1) else {
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
    let (child, addr) = wait_ready(child, &rx, "burrow", &format!("log {marker:?}"))?;
    let addr = addr.map_err(|line| anyhow!("cannot read the address in burrow's line {line:?}"))?;
    Ok(Relay { child, addr })
}

/// Waits for the first message a child's line handler sends; explains a timeout or an
/// early exit with the child's stderr.
fn wait_ready<T>(
    mut child: ChildGuard,
    rx: &mpsc::Receiver<T>,
    what: &str,
    ready: &str,
) -> Result<(ChildGuard, T)> {
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(v) => Ok((child, v)),
        Err(mpsc::RecvTimeoutError::Timeout) => bail!(
            "{what} did not {ready} within {READY_TIMEOUT:?}; stderr: {:?}",
            child.stderr_lines().0
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The pipe closed: the process is exiting; give it a moment to be reaped.
            let deadline = Instant::now() + READY_TIMEOUT;
            let status = loop {
                match child.exited() {
                    Some(s) => break s,
                    None if Instant::now() > deadline => break "still running".into(),
                    None => thread::sleep(POLL),
                }
            };
            bail!(
                "{what} closed its output before it could {ready} ({status}); stderr: {:?}",
                child.stderr_lines().0
            )
        }
    }
}

/// A running tunnel client and the ports it opened.
pub struct TunnelClient {
    pub child: ChildGuard,
    /// its `-L` listeners, in the order of the targets given to [`tunnel_client`]
    pub locals: Vec<SocketAddr>,
    /// the relay's public port for its `-R` binding
    pub remote: SocketAddr,
}

/// A state line of `burrow client` on stdout, as far as the bench needs it.
enum ClientLine {
    /// `listening L ADDR (TARGET)`
    Local(String, SocketAddr),
    /// `bound R ADDR -> TARGET`
    Remote(String, SocketAddr),
    /// `bind refused R -> …`, or a line whose address does not parse
    Bad(String),
}

fn client_line(line: &str) -> Option<ClientLine> {
    let bad = || ClientLine::Bad(line.to_string());
    if let Some(rest) = line.strip_prefix("listening L ") {
        let (addr, target) = rest.split_once(' ')?;
        let target = target.strip_prefix('(')?.strip_suffix(')')?;
        return Some(match addr.parse() {
            Ok(a) => ClientLine::Local(target.to_string(), a),
            Err(_) => bad(),
        });
    }
    if let Some(rest) = line.strip_prefix("bound R ") {
        let (addr, target) = rest.split_once(" -> ")?;
        return Some(match addr.parse() {
            Ok(a) => ClientLine::Remote(target.to_string(), a),
            Err(_) => bad(),
        });
    }
    line.starts_with("bind refused").then(bad)
}

/// Starts `burrow client ws://RELAY/burrow` with `-L 127.0.0.1:0:T` for each of `forward_to`
/// and `-R 127.0.0.1:0:R` for `reverse_to`, and waits until every listener is up and the
/// relay has bound the `-R` port (so the session is connected). State lines go to stdout,
/// whatever `RUST_LOG` says; later ones other than (re)connecting are kept for the report.
/// Without `resume`, the client runs with `--no-resume` (streams reset on a reconnect, no
/// frames kept for a replay).
pub fn tunnel_client(
    bin: &Path,
    relay: SocketAddr,
    forward_to: &[SocketAddr],
    reverse_to: SocketAddr,
    resume: bool,
) -> Result<TunnelClient> {
    let mut cmd = Command::new(bin);
    cmd.arg("client")
        .arg(format!("ws://{relay}/burrow"))
        .args(["--max-streams", MAX_HELD])
        .env("RUST_LOG", "warn");
    if !resume {
        cmd.arg("--no-resume");
    }
    for t in forward_to {
        cmd.arg("-L").arg(format!("127.0.0.1:0:{t}"));
    }
    cmd.arg("-R").arg(format!("127.0.0.1:0:{reverse_to}"));
    let (tx, rx) = mpsc::channel();
    let on_stdout = move |line: &str| match client_line(line) {
        Some(l) => {
            // The receiver is gone once the bench has what it needs: nothing to tell.
            let _ = tx.send(l);
            true
        }
        None => matches!(line, "connecting" | "connected"),
    };
    let mut child = spawn_with(cmd, Box::new(|_| false), Some(Box::new(on_stdout)), false)
        .with_context(|| format!("{} (build it: cargo build --release --bins)", bin.display()))?;
    let mut locals: Vec<Option<SocketAddr>> = vec![None; forward_to.len()];
    let mut remote = None;
    let deadline = Instant::now() + READY_TIMEOUT;
    while locals.iter().any(Option::is_none) || remote.is_none() {
        let line;
        (child, line) = wait_ready(child, &rx, "burrow client", "listen and bind its ports")?;
        match line {
            ClientLine::Local(target, addr) => {
                for (t, slot) in forward_to.iter().zip(&mut locals) {
                    if slot.is_none() && t.to_string() == target {
                        *slot = Some(addr);
                        break;
                    }
                }
            }
            ClientLine::Remote(target, addr) if target == reverse_to.to_string() => {
                remote = Some(addr);
            }
            ClientLine::Remote(..) => {}
            ClientLine::Bad(line) => bail!("burrow client: {line}"),
        }
        if Instant::now() > deadline {
            bail!("burrow client did not listen and bind its ports within {READY_TIMEOUT:?}");
        }
    }
    Ok(TunnelClient {
        child,
        locals: locals.into_iter().flatten().collect(),
        remote: remote.context("no -R port")?,
    })
}

/// Starts this binary as `burrow-bench --echo-server` (see `server::echo_child`) and waits for
/// its address. Its stdin is a pipe from the bench: it exits when the bench does.
pub fn echo_child() -> Result<Relay> {
    let exe = std::env::current_exe().context("cannot find the bench's own binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg(crate::ECHO_SERVER_FLAG);
    let (tx, rx) = mpsc::channel();
    let mut tx = Some(tx);
    let on_stdout = move |line: &str| {
        let Some(addr) = line.strip_prefix(crate::server::ECHO_CHILD_READY) else {
            return false;
        };
        if let Some(tx) = tx.take() {
            // The receiver is gone only if the bench stopped waiting: nothing to tell.
            let _ = tx.send(
                addr.trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| line.to_string()),
            );
        }
        true
    };
    let child = spawn_with(cmd, Box::new(|_| false), Some(Box::new(on_stdout)), true)?;
    let (child, addr) = wait_ready(child, &rx, "the echo server child", "print its address")?;
    let addr = addr.map_err(|line| anyhow!("cannot read the echo server's address in {line:?}"))?;
    Ok(Relay { child, addr })
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
    wait_connections(pid, 0, limit)
}

/// Waits until `pid` has at most `keep` TCP connections open (a tunnel process keeps its
/// session's); returns how many it has then.
pub fn wait_connections(pid: u32, keep: usize, limit: Duration) -> Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let n = tcp_connections(pid)?;
        if n <= keep || Instant::now() > deadline {
            return Ok(n);
        }
        thread::sleep(POLL);
    }
}

/// Resets the process's VmHWM to its current RSS (`echo 5 > /proc/PID/clear_refs`, Linux
/// 4.0+), so a later [`mem`] reads the peak since now.
pub fn reset_peak(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("writing 5 to {path}"))
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
