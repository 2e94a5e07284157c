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
    /// `burrow demo`
    Demo(DemoArgs),
}

/// HTTP/1.1 forward proxy: CONNECT and absolute-form requests, upstream chains, auth, rules.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "proxy")]
pub struct ProxyArgs {
    /// address to listen on (default 127.0.0.1:3128)
    #[argh(option, default = "default_proxy_listen()")]
    pub listen: SocketAddr,
    /// upstream proxy URL http://[user:pass@]host:port; repeat for a chain, in order; `env`
    /// takes HTTPS_PROXY and NO_PROXY
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
}

/// Join stdin/stdout to HOST:PORT through a CONNECT chain (for ssh -o ProxyCommand).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "connect")]
pub struct ConnectArgs {
    /// proxy URL http://[user:pass@]host:port to go through; repeat for a chain; `env` reads
    /// HTTPS_PROXY and NO_PROXY
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

/// Parses the target of `burrow connect`: `HOST:PORT`, `[V6]:PORT`, or `HOST PORT`.
pub fn parse_target(args: &[String]) -> Result<(String, u16), String> {
    let usage = || "expected HOST:PORT or HOST PORT".to_string();
    match args {
        [one] => crate::proxy::chain::split_host_port(one, 0)
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
