//! The command line: argh structs for every role, and the parsers for the values users type
//! (durations, addresses, `host:port`). Parsers return messages, never panic.

use argh::FromArgs;
use std::net::SocketAddr;
use std::time::Duration;

/// burrow: a small, fast, dependable HTTP tunnel.
#[derive(FromArgs, Debug)]
pub struct Args {
    /// the role to run
    #[argh(subcommand)]
    pub command: Command,
}

/// The roles.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    /// `burrow proxy`
    Proxy(ProxyArgs),
    /// `burrow connect`
    Connect(ConnectArgs),
    /// `burrow server`
    Server(ServerArgs),
    /// `burrow client`
    Client(ClientArgs),
    /// `burrow demo`
    Demo(DemoArgs),
    /// `burrow run`
    Run(RunArgs),
    /// `burrow check`
    Check(CheckArgs),
}

/// Run every role a config file declares ([proxy], [relay], [[client]]) in one process;
/// SIGHUP or a change of the file applies the new configuration live.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// the config file (TOML; see docs/CONFIG.md)
    #[argh(positional)]
    pub file: std::path::PathBuf,
}

/// Check a config file without starting anything: every error with FILE:LINE:COLUMN, exit 2.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct CheckArgs {
    /// the config file (TOML; see docs/CONFIG.md)
    #[argh(positional)]
    pub file: std::path::PathBuf,
}

/// The relay: tunnel clients connect here over WebSocket; it binds their -R ports and dials
/// their -L targets.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "server")]
pub struct ServerArgs {
    /// read the [relay] section of this config file; flags given here override it
    #[argh(option)]
    pub config: Option<std::path::PathBuf>,
    /// address to listen on (default 0.0.0.0:8080)
    #[argh(option, default = "SocketAddr::from(([0, 0, 0, 0], 8080))")]
    pub listen: SocketAddr,
    /// token clients must present (or set BURROW_TOKEN); without one, a token is generated
    /// and printed
    #[argh(option)]
    pub token: Option<String>,
    /// accept clients without a token
    #[argh(switch)]
    pub no_auth: bool,
    /// ports clients may bind with -R, N or N-M (default 1024-65535)
    #[argh(option, default = "(1024, 65535)", from_str_fn(parse_port_range))]
    pub allow_ports: (u16, u16),
    /// allow -L targets matching RULE only (IP, CIDR, host, *.suffix or *, with :PORTS)
    #[argh(option)]
    pub allow: Vec<String>,
    /// refuse -L targets matching RULE (deny wins)
    #[argh(option)]
    pub deny: Vec<String>,
    /// websocket ping interval; a peer silent for 3 intervals is dead (default 20s)
    #[argh(option, default = "secs(20)", from_str_fn(parse_duration))]
    pub keepalive: Duration,
    /// on SIGINT/SIGTERM, let streams finish for this long (default 10s)
    #[argh(option, default = "secs(10)", from_str_fn(parse_duration))]
    pub drain_timeout: Duration,
    /// most streams per session (default 10000)
    #[argh(option, default = "10000")]
    pub max_streams: usize,
    /// on SIGTERM, answer /readyz 503 but keep serving for this long (for load balancers to
    /// notice), then drain (default 5s)
    #[argh(option, default = "secs(5)", from_str_fn(parse_duration))]
    pub lame_duck: Duration,
    /// how long a disconnected client's session (its streams and -R ports) is held for it
    /// (default 60s)
    #[argh(option, default = "secs(60)", from_str_fn(parse_duration))]
    pub grace: Duration,
    /// do not resume sessions: a client's streams are reset when its connection drops (its -R
    /// ports are still held for --grace)
    #[argh(switch)]
    pub no_resume: bool,
    /// limit for dialing a -L target (default 10s)
    #[argh(option, default = "secs(10)", from_str_fn(parse_duration))]
    pub connect_timeout: Duration,
    /// drop a UDP flow (-L udp:, -R udp:) with no datagram either way for this long
    /// (default 60s)
    #[argh(option, default = "secs(60)", from_str_fn(parse_duration))]
    pub udp_idle_timeout: Duration,
    /// serve wss:// with this certificate chain (PEM); SIGHUP reloads it
    #[argh(option)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// the private key (PEM) for --tls-cert
    #[argh(option)]
    pub tls_key: Option<std::path::PathBuf>,
    /// most connections at the public port, tunnels included; a quarter of them may be not
    /// yet upgraded; more get 503 (default 1024)
    #[argh(option, default = "relay_limits().max_connections")]
    pub max_connections: usize,
    /// most tunnel sessions at once; more get 503 (default 32)
    #[argh(option, default = "relay_limits().max_sessions")]
    pub max_sessions: usize,
    /// most sessions with one token (with --no-auth: from one client address) (default 32)
    #[argh(option, default = "relay_limits().max_sessions_per_token")]
    pub max_sessions_per_token: usize,
    /// most streams of all sessions at once (default 8192)
    #[argh(option, default = "relay_limits().max_streams_total")]
    pub max_streams_total: usize,
    /// most -L targets being dialed at once; more OPENs are refused (default 256)
    #[argh(option, default = "relay_limits().max_dials")]
    pub max_dials: usize,
    /// serve /healthz and /metrics without a token on ADDR (loopback, e.g. 127.0.0.1:9090)
    #[argh(option)]
    pub admin: Option<SocketAddr>,
    /// allow --admin on a non-loopback address (its /metrics needs no token)
    #[argh(switch)]
    pub open_admin: bool,
    /// bearer token for /status, /status.json, /config and /metrics on a non-loopback
    /// --admin (or set BURROW_ADMIN_TOKEN)
    #[argh(option)]
    pub admin_token: Option<String>,
}

fn relay_limits() -> crate::relay::limits::RelayLimits {
    crate::relay::limits::RelayLimits::default()
}

/// The tunnel client: dials the relay and keeps one multiplexed session alive.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "client")]
pub struct ClientArgs {
    /// relay URL, ws://HOST:PORT[/burrow]; several for one session to each relay (or
    /// `relays` in the --config file)
    #[argh(positional)]
    pub url: Vec<String>,
    /// read the [[client]] section (the only one) of this config file; flags given here override it
    #[argh(option)]
    pub config: Option<std::path::PathBuf>,
    /// local forward: [BIND:]PORT:HOST:PORT, stdio:HOST:PORT, [BIND:]PORT:proxy, or
    /// udp:[BIND:]PORT:HOST:PORT
    #[argh(option, short = 'L', long = "local")]
    pub local: Vec<String>,
    /// remote forward on the relay: [BIND:]PORT:HOST:PORT, [BIND:]PORT:proxy, or
    /// udp:[BIND:]PORT:HOST:PORT (PORT 0: any)
    #[argh(option, short = 'R', long = "remote")]
    pub remote: Vec<String>,
    /// token for the relay (or set BURROW_TOKEN)
    #[argh(option)]
    pub token: Option<String>,
    /// websocket ping interval; a relay silent for 3 intervals is dead (default 20s)
    #[argh(option, default = "secs(20)", from_str_fn(parse_duration))]
    pub keepalive: Duration,
    /// proxy on the way to the relay, http://[user:pass@]host:port or
    /// socks5://[user:pass@]host:port; repeat for a chain; `env` reads HTTPS_PROXY (else
    /// ALL_PROXY) and NO_PROXY
    #[argh(option)]
    pub via: Vec<String>,
    /// what -R ...:proxy visitors may reach: allow only targets matching RULE
    #[argh(option)]
    pub allow: Vec<String>,
    /// what -R ...:proxy visitors may reach: refuse targets matching RULE
    #[argh(option)]
    pub deny: Vec<String>,
    /// credentials USER:PASS that visitors of -R ...:proxy and -L ...:proxy must present
    /// (answered 407 otherwise); or set BURROW_PROXY_AUTH
    #[argh(option)]
    pub proxy_auth: Option<String>,
    /// allow a -R ...:proxy on the relay's public address, or a -L ...:proxy on a
    /// non-loopback address, without --proxy-auth (and, for -R, without --allow)
    #[argh(switch)]
    pub open: bool,
    /// most streams on the session (default 10000)
    #[argh(option, default = "10000")]
    pub max_streams: usize,
    /// limit for reaching the relay or a target (default 10s)
    #[argh(option, default = "secs(10)", from_str_fn(parse_duration))]
    pub connect_timeout: Duration,
    /// drop a UDP flow (-L udp:, -R udp:) with no datagram either way for this long
    /// (default 60s)
    #[argh(option, default = "secs(60)", from_str_fn(parse_duration))]
    pub udp_idle_timeout: Duration,
    /// on SIGINT/SIGTERM, let streams finish for this long (default 10s)
    #[argh(option, default = "secs(10)", from_str_fn(parse_duration))]
    pub drain_timeout: Duration,
    /// trust this CA (PEM) for wss://, on top of the system store
    #[argh(option)]
    pub ca: Option<std::path::PathBuf>,
    /// do not verify the relay's certificate (prints a warning)
    #[argh(switch)]
    pub insecure: bool,
    /// serve /readyz, /healthz and /metrics on ADDR (readyz: 200 once connected and every -R
    /// is bound)
    #[argh(option)]
    pub status: Option<SocketAddr>,
    /// do not resume the session after a dropped connection: every stream in flight is reset
    /// on a reconnect (the behaviour of relays and clients without resumption)
    #[argh(switch)]
    pub no_resume: bool,
    /// share each -R port with the other clients of this token and pool NAME: the relay
    /// spreads visitors over them (every -R needs an explicit port)
    #[argh(option)]
    pub pool: Option<String>,
    /// when /readyz is 200: `all` relays (default) or `any` relay connected with every -R
    /// bound
    #[argh(option, default = "crate::client::ReadyWhen::All")]
    pub ready: crate::client::ReadyWhen,
}

/// HTTP/1.1 forward proxy: CONNECT and absolute-form requests, upstream chains, auth, rules.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "proxy")]
pub struct ProxyArgs {
    /// read the [proxy] section of this config file; flags given here override it
    #[argh(option)]
    pub config: Option<std::path::PathBuf>,
    /// address to listen on (default 127.0.0.1:3128)
    #[argh(option, default = "default_proxy_listen()")]
    pub listen: SocketAddr,
    /// upstream proxy URL http://[user:pass@]host:port or socks5://[user:pass@]host:port;
    /// repeat for a chain, in order; `env` takes HTTPS_PROXY (else ALL_PROXY) and NO_PROXY
    #[argh(option)]
    pub upstream: Vec<String>,
    /// require Basic credentials USER:PASS (or set BURROW_PROXY_AUTH)
    #[argh(option)]
    pub auth: Option<String>,
    /// allow only targets matching RULE (IP, CIDR, host, *.suffix or *, with :PORT or :N-M)
    #[argh(option)]
    pub allow: Vec<String>,
    /// refuse targets matching RULE (deny wins over allow)
    #[argh(option)]
    pub deny: Vec<String>,
    /// limit for reaching a target (default 10s)
    #[argh(option, default = "secs(10)", from_str_fn(parse_duration))]
    pub connect_timeout: Duration,
    /// close tunnels and keep-alive connections idle this long (default 5m)
    #[argh(option, default = "secs(300)", from_str_fn(parse_duration))]
    pub idle_timeout: Duration,
    /// the whole request head must arrive within this (default 10s)
    #[argh(option, default = "secs(10)", from_str_fn(parse_duration))]
    pub head_timeout: Duration,
    /// most connections served at once; more get 503 (default 4096)
    #[argh(option, default = "4096")]
    pub max_connections: usize,
    /// on SIGINT/SIGTERM, let open connections finish for this long (default 10s)
    #[argh(option, default = "secs(10)", from_str_fn(parse_duration))]
    pub drain_timeout: Duration,
    /// allow listening on a non-loopback address without --auth or --allow
    #[argh(switch)]
    pub open: bool,
    /// through --upstream, resolve target names here and check --allow/--deny on every
    /// address (by default a name must be allowed by a name rule: the chain resolves it)
    #[argh(switch)]
    pub resolve_names: bool,
}

/// Join stdin/stdout to HOST:PORT through a proxy chain (for ssh -o ProxyCommand).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "connect")]
pub struct ConnectArgs {
    /// proxy URL http://[user:pass@]host:port or socks5://[user:pass@]host:port to go
    /// through; repeat for a chain; `env` reads HTTPS_PROXY (else ALL_PROXY) and NO_PROXY
    #[argh(option)]
    pub via: Vec<String>,
    /// limit for reaching the target through the chain (default 10s)
    #[argh(option, default = "secs(10)", from_str_fn(parse_duration))]
    pub connect_timeout: Duration,
    /// HOST:PORT, or HOST PORT
    #[argh(positional, greedy)]
    pub target: Vec<String>,
}

/// Run everything on loopback in one process and print what to try.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "demo")]
pub struct DemoArgs {}

fn default_proxy_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3128))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Parses `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected a number with ms, s, m or h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or("duration too long")?,
        "h" => n
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or("duration too long")?,
        _ => return Err(format!("bad duration {s:?}: unit must be ms, s, m or h")),
    };
    Ok(d)
}

/// Parses a port range `N` or `N-M` (1..=65535, N <= M).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("bad port range {s:?}: expected N or N-M within 1-65535");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parses the target of `burrow connect`: `HOST:PORT`, `[V6]:PORT`, or `HOST PORT`.
pub fn parse_target(args: &[String]) -> Result<(String, u16), String> {
    let usage = || "expected HOST:PORT or HOST PORT".to_string();
    match args {
        [one] => crate::dial::split_host_port(one, 0)
            .filter(|(_, p)| *p != 0)
            .ok_or_else(usage),
        [host, port] => {
            let port: u16 = port
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("bad port {port:?}"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(usage());
            }
            Ok((host.to_string(), port))
        }
        _ => Err(usage()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("30s", secs(30)),
            ("30", secs(30)),
            ("5m", secs(300)),
            ("1h", secs(3600)),
            ("0s", secs(0)),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for bad in ["", "s", "5x", "-1s", "1.5s", "99999999999999999999h", "1 h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("1024-65535"), Ok((1024, 65535)));
        assert_eq!(parse_port_range("8080"), Ok((8080, 8080)));
        for bad in ["", "0-10", "10-5", "1-70000", "a-b", "-5"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connect_targets() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_target(&v(&["example.com:22"])),
            Ok(("example.com".into(), 22))
        );
        assert_eq!(
            parse_target(&v(&["example.com", "22"])),
            Ok(("example.com".into(), 22))
        );
        assert_eq!(parse_target(&v(&["[::1]:22"])), Ok(("::1".into(), 22)));
        assert_eq!(parse_target(&v(&["::1", "22"])), Ok(("::1".into(), 22)));
        for bad in [
            &["example.com"][..],
            &["a:0"],
            &["a", "x"],
            &[],
            &["a", "1", "2"],
            &[":22"],
        ] {
            assert!(parse_target(&v(bad)).is_err(), "{bad:?}");
        }
    }
}
