//! The peers burrow is measured against, as child processes: bore and rathole (reverse
//! tunnels, plain TCP, installed by `just bench-peers` under target/peers), tinyproxy and squid
//! (CONNECT proxies from Debian). Each runs from a minimal config in a temporary directory,
//! on 127.0.0.1, as the current user, and dies with the bench ([`ChildGuard`]).

use crate::client::{self, Route};
use crate::procs::{self, ChildGuard};
use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a peer may take to carry its first echoed byte.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// One readiness probe's connect and echo.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// bore's control port: fixed in bore (`CONTROL_PORT`), so one bore server at a time.
const BORE_CONTROL_PORT: u16 = 7835;
/// Connections tinyproxy and squid may hold: the 10,000 idle streams and some slack.
const PROXY_MAX_CLIENTS: usize = 12_000;
/// Descriptors squid may use (it caps itself below the limit it inherits otherwise).
const SQUID_MAX_FDS: usize = 32_768;

/// The peers, in the order of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Bore,
    Rathole,
    Tinyproxy,
    Squid,
}

/// Every peer the bench knows how to run.
pub const ALL: [Peer; 4] = [Peer::Bore, Peer::Rathole, Peer::Tinyproxy, Peer::Squid];

/// A row for the peer the bench cannot run here, with why.
pub const WSTUNNEL: (&str, &str) = (
    "wstunnel",
    "not installable on this machine (issue 9's wstunnel rows come from an earlier run)",
);

impl Peer {
    /// The row name.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Bore => "bore",
            Peer::Rathole => "rathole",
            Peer::Tinyproxy => "tinyproxy",
            Peer::Squid => "squid",
        }
    }

    /// A reverse tunnel (compared with burrow's `-R`), else a CONNECT proxy.
    pub fn is_tunnel(self) -> bool {
        matches!(self, Peer::Bore | Peer::Rathole)
    }

    /// Labels of its processes, in the order [`start`] returns them.
    pub fn roles(self) -> &'static [&'static str] {
        match self {
            Peer::Bore => &["bore server", "bore local"],
            Peer::Rathole => &["rathole server", "rathole client"],
            Peer::Tinyproxy => &["tinyproxy"],
            Peer::Squid => &["squid"],
        }
    }

    /// Where its binary is: bore and rathole under `peers_bin`, the others on PATH or in
    /// /usr/sbin (squid's Debian home, often not on a user's PATH).
    pub fn find(self, peers_bin: &Path) -> Result<PathBuf, String> {
        let (file, how) = match self {
            Peer::Bore => ("bore", "just bench-peers (cargo install bore-cli)"),
            Peer::Rathole => ("rathole", "just bench-peers (cargo install rathole)"),
            Peer::Tinyproxy => ("tinyproxy", "apt-get install tinyproxy"),
            Peer::Squid => ("squid", "apt-get install squid"),
        };
        let mut dirs = vec![peers_bin.to_path_buf()];
        if !self.is_tunnel() {
            dirs.extend(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            ));
            dirs.extend(["/usr/sbin", "/usr/bin"].map(PathBuf::from));
        }
        dirs.iter()
            .map(|d| d.join(file))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                let place = if self.is_tunnel() {
                    peers_bin.display().to_string()
                } else {
                    "PATH or /usr/sbin".to_string()
                };
                format!("{file} not in {place} (install: {how})")
            })
    }
}

/// A running peer: its processes (labelled), the route through it, and its config directory.
pub struct PeerRun {
    pub children: Vec<(&'static str, ChildGuard)>,
    pub route: Route,
    /// Removed when the run is dropped (after the children, which are declared first).
    _dir: TempDir,
}

impl PeerRun {
    /// (label, pid) of each process.
    pub fn watched(&self) -> Vec<(&'static str, u32)> {
        self.children.iter().map(|(l, c)| (*l, c.pid())).collect()
    }
}

/// Starts `peer` (binary `bin`) carrying streams to `target` (the sink/echo server or the
/// echo child), and waits until one byte has been echoed through it.
pub fn start(peer: Peer, bin: &Path, target: SocketAddr) -> Result<PeerRun> {
    let dir = TempDir::new(peer.name())?;
    let roles = peer.roles();
    let (children, route) = match peer {
        Peer::Bore => {
            if TcpStream::connect(("127.0.0.1", BORE_CONTROL_PORT)).is_ok() {
                bail!("port {BORE_CONTROL_PORT} (bore's fixed control port) is already taken");
            }
            let mut server = Command::new(bin);
            server.args(["server", "--bind-addr", "127.0.0.1", "--min-port", "1024"]);
            let mut server = spawn(server)?;
            wait_listening(
                SocketAddr::from(([127, 0, 0, 1], BORE_CONTROL_PORT)),
                &mut server,
            )?;
            let public = free_port()?;
            let mut local = Command::new(bin);
            local
                .args(["local", &target.port().to_string(), "--local-host"])
                .arg(target.ip().to_string())
                .args(["--to", "127.0.0.1", "--port", &public.port().to_string()]);
            let local = spawn(local)?;
            (vec![(roles[0], server), (roles[1], local)], plain(public))
        }
        Peer::Rathole => {
            let (control, public) = (free_port()?, free_port()?);
            let server_toml = dir.write(
                "server.toml",
                &format!(
                    "[server]\nbind_addr = \"{control}\"\n\n[server.services.bench]\n\
                     token = \"bench\"\nbind_addr = \"{public}\"\n"
                ),
            )?;
            let client_toml = dir.write(
                "client.toml",
                &format!(
                    "[client]\nremote_addr = \"{control}\"\n\n[client.services.bench]\n\
                     token = \"bench\"\nlocal_addr = \"{target}\"\n"
                ),
            )?;
            let mut server = Command::new(bin);
            server.arg("--server").arg(&server_toml);
            let mut server = spawn(server)?;
            wait_listening(control, &mut server)?;
            let mut client = Command::new(bin);
            client.arg("--client").arg(&client_toml);
            let client = spawn(client)?;
            (vec![(roles[0], server), (roles[1], client)], plain(public))
        }
        Peer::Tinyproxy => {
            let addr = free_port()?;
            let conf = dir.write(
                "tinyproxy.conf",
                &format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients {PROXY_MAX_CLIENTS}\n\
                     Allow 127.0.0.1\nLogLevel Error\nLogFile \"{log}\"\n",
                    port = addr.port(),
                    log = dir.path.join("tinyproxy.log").display(),
                ),
            )?;
            let mut cmd = Command::new(bin);
            cmd.arg("-d").arg("-c").arg(&conf);
            (vec![(roles[0], spawn(cmd)?)], connect_via(addr, target))
        }
        Peer::Squid => {
            let addr = free_port()?;
            let d = dir.path.display();
            let conf = dir.write(
                "squid.conf",
                &format!(
                    "http_port {addr}\nacl bench src 127.0.0.1\nhttp_access allow bench\n\
                     http_access deny all\ncache deny all\ncache_mem 0 MB\naccess_log none\n\
                     cache_store_log none\ncache_log {d}/cache.log\npid_filename {d}/squid.pid\n\
                     coredump_dir {d}\nmax_filedescriptors {SQUID_MAX_FDS}\n\
                     shutdown_lifetime 0 seconds\n"
                ),
            )?;
            let mut cmd = Command::new(bin);
            cmd.arg("-N").arg("-f").arg(&conf);
            (vec![(roles[0], spawn(cmd)?)], connect_via(addr, target))
        }
    };
    let mut run = PeerRun {
        children,
        route,
        _dir: dir,
    };
    wait_ready(peer, &mut run)?;
    Ok(run)
}

fn plain(entry: SocketAddr) -> Route {
    Route {
        entry,
        tunnel_to: None,
    }
}

fn connect_via(proxy: SocketAddr, target: SocketAddr) -> Route {
    Route {
        entry: proxy,
        tunnel_to: Some(target),
    }
}

/// A peer with its output captured and `RUST_LOG=warn` (bore and rathole log every
/// connection at `info`, which would cost them time under load).
fn spawn(mut cmd: Command) -> Result<ChildGuard> {
    cmd.env("RUST_LOG", "warn").env("NO_COLOR", "1");
    procs::spawn_captured(cmd, |_| false)
}

/// Polls until `addr` accepts a connection; fails early if `child` exits.
fn wait_listening(addr: SocketAddr, child: &mut ChildGuard) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.exited() {
            bail!("exited ({status}): {:?}", child.stderr_lines().0);
        }
        if Instant::now() > deadline {
            bail!("did not listen on {addr} within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
}

/// Polls until a byte is echoed through the peer; explains a timeout with its stderr.
fn wait_ready(peer: Peer, run: &mut PeerRun) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let err = match client::probe(&run.route, PROBE_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        for (label, c) in &mut run.children {
            if let Some(status) = c.exited() {
                bail!("{label} exited ({status}): {:?}", c.stderr_lines().0);
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<_> = run
                .children
                .iter()
                .map(|(_, c)| c.stderr_lines().0)
                .collect();
            bail!(
                "{} carried no byte within {READY_TIMEOUT:?} ({err:#}); stderr: {logs:?}",
                peer.name()
            );
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
}

/// A free loopback port: bind :0, read it, release it (the peers cannot report a port they
/// picked; socat's start-up does the same).
fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A directory for one peer's config and logs, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(name: &str) -> Result<TempDir> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "burrow-bench-{}-{name}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        // squid started by root switches to its `proxy` user and must still write its log.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
        Ok(TempDir { path })
    }

    fn write(&self, file: &str, text: &str) -> Result<PathBuf> {
        let p = self.path.join(file);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in /tmp is harmless.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
