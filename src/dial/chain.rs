//! Upstream proxy chains: reach a target through HTTP CONNECT and SOCKS5 proxies, hop by hop;
//! each hop is asked for the next hop (or the target) in its own protocol.

pub use super::hop::{Hop, HopError, HopKind};
use super::rules::{NameVerdict, Rule, Rules};
use super::{DialError, host_port};
use crate::http::front::{self, ReadError};
use crate::socks::Addr;
use crate::socks::client::{self as socks, ClientError};
use futures_lite::io::{AsyncWriteExt, BufReader};
use smol::net::TcpStream;
use std::time::Duration;

/// How targets are reached: directly, or through an ordered chain of hops.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    /// the hops, first = the one we dial
    pub hops: Vec<Hop>,
    /// targets that bypass the chain (from `NO_PROXY` with `--upstream env`)
    pub no_proxy: Vec<Rule>,
}

impl Upstream {
    /// Builds a chain from `--upstream` values; `env` takes its hop from `HTTPS_PROXY` (or
    /// `https_proxy`), else from `ALL_PROXY` (or `all_proxy`), curl's order; either may be a
    /// `socks5://` URL. Its bypass list comes from `NO_PROXY` (or `no_proxy`).
    pub fn from_args(args: &[String]) -> Result<Self, HopError> {
        Self::from_args_with_env(args, |k| std::env::var(k).ok())
    }

    /// [`Upstream::from_args`] with an explicit environment (for tests).
    pub fn from_args_with_env(
        args: &[String],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, HopError> {
        let mut up = Upstream::default();
        let first = |a: &str, b: &str| env(a).or_else(|| env(b)).filter(|v| !v.is_empty());
        for arg in args {
            if arg == "env" {
                let url =
                    first("HTTPS_PROXY", "https_proxy").or_else(|| first("ALL_PROXY", "all_proxy"));
                match url {
                    Some(url) => up.hops.push(url.parse()?),
                    // No proxy in the environment: go direct, like every other client.
                    None => continue,
                }
                if let Some(list) = first("NO_PROXY", "no_proxy") {
                    up.no_proxy = parse_no_proxy(&list);
                }
            } else {
                up.hops.push(arg.parse()?);
            }
        }
        Ok(up)
    }

    /// True when `host:port` goes through the chain.
    pub fn uses_chain(&self, host: &str, port: u16) -> bool {
        !self.hops.is_empty() && !self.no_proxy.iter().any(|r| r.matches_name(host, port))
    }

    /// Opens a stream to `host:port`. Directly: `rules` are checked on the name and on every
    /// resolved address. Through the chain: the name must be allowed by itself
    /// ([`Rules::judge_name`]); `names` says whether a name that only its addresses could
    /// decide is refused or resolved here and checked. Returns the stream and any bytes that
    /// arrived behind the last hop's `200` (a SOCKS5 hop's reply is read exactly: none).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        rules: &Rules,
        names: ChainNames,
        timeout: Duration,
    ) -> Result<(TcpStream, Vec<u8>), DialError> {
        if !self.uses_chain(host, port) {
            return Ok((super::dial(host, port, rules, timeout).await?, Vec::new()));
        }
        let check = check_for_chain(host, port, rules, names);
        crate::time::with_timeout(timeout, check, || DialError::Timeout {
            target: host_port(host, port),
        })
        .await?;
        let first = &self.hops[0];
        let stream = super::dial(&first.host, first.port, &Rules::default(), timeout)
            .await
            .map_err(|e| DialError::HopFailed {
                hop: 1,
                proxy: first.to_string(),
                timeout: matches!(e, DialError::Timeout { .. }),
                why: e.to_string(),
            })?;
        let mut leftover = Vec::new();
        for (i, hop) in self.hops.iter().enumerate() {
            let (next_host, next_port) = match self.hops.get(i + 1) {
                Some(next) => (next.host.as_str(), next.port),
                None => (host, port),
            };
            leftover = ask_hop(&stream, i + 1, hop, next_host, next_port, timeout).await?;
            if !leftover.is_empty() && i + 1 < self.hops.len() {
                return Err(hop_failed(
                    i + 1,
                    hop,
                    "sent data before the next hop answered".into(),
                ));
            }
        }
        Ok((stream, leftover))
    }
}

/// How target rules treat a name that an upstream chain resolves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChainNames {
    /// The name alone must be allowed (a name rule); a name only address rules could decide
    /// is refused (403). The default: nothing is resolved here.
    #[default]
    ByName,
    /// Such a name is resolved here and every address checked (`--resolve-names`); the
    /// last hop resolves it again, so this holds only where both see the same DNS.
    Resolve,
}

/// Why a name through a chain is refused when only its addresses could decide.
const NEEDS_ADDRESSES: &str = "the rules need its addresses, which the upstream chain resolves \
     (allow it by name, or use --resolve-names)";

/// The rules on a target reached through the chain. An IP literal is judged in full (an
/// unspecified one is never allowed); a name by itself, or by every address it resolves to
/// here when `names` asks for that.
async fn check_for_chain(
    host: &str,
    port: u16,
    rules: &Rules,
    names: ChainNames,
) -> Result<(), DialError> {
    let forbidden = |why| DialError::Forbidden {
        target: host_port(host, port),
        why,
    };
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>();
    if let Ok(ip) = literal {
        if !super::dialable(ip) {
            return Err(forbidden(super::UNSPECIFIED));
        }
    }
    match (rules.judge_name(host, port), names) {
        (NameVerdict::Allowed, _) => Ok(()),
        (NameVerdict::Denied, _) => Err(forbidden(super::BY_RULES)),
        (NameVerdict::NeedsAddresses, ChainNames::ByName) => Err(forbidden(NEEDS_ADDRESSES)),
        (NameVerdict::NeedsAddresses, ChainNames::Resolve) => {
            // Every address must pass: the last hop may pick any of them.
            let addrs = super::resolve(host, port).await?;
            let n = addrs.len();
            if super::permitted(host, port, rules, addrs)?.len() == n {
                Ok(())
            } else {
                Err(forbidden(super::BY_RULES))
            }
        }
    }
}

fn hop_failed(n: usize, hop: &Hop, why: String) -> DialError {
    DialError::HopFailed {
        hop: n,
        proxy: hop.to_string(),
        why,
        timeout: false,
    }
}

/// Asks the hop at the far end of `stream` for a stream to `host:port` in its protocol;
/// returns the bytes that arrived behind its answer.
async fn ask_hop(
    stream: &TcpStream,
    n: usize,
    hop: &Hop,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<u8>, DialError> {
    match hop.kind {
        HopKind::Http => connect_through(stream, n, hop, host, port, timeout).await,
        HopKind::Socks5 => socks_through(stream, n, hop, host, port, timeout)
            .await
            .map(|()| Vec::new()),
    }
}

/// The SOCKS5 handshake with the hop at the far end of `stream`, bounded by `timeout`: a
/// name goes to the hop as a name (ATYP 3), to be resolved there.
async fn socks_through(
    stream: &TcpStream,
    n: usize,
    hop: &Hop,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(), DialError> {
    let target = Addr::from_host_port(host, port)
        .ok_or_else(|| hop_failed(n, hop, "the name is too long for SOCKS5".into()))?;
    let mut s = stream.clone();
    let handshake = async {
        socks::connect(&mut s, hop.auth.as_ref(), &target)
            .await
            .map(|_bound| ())
            .map_err(Some)
    };
    // `None`: the time ran out (the stream is dropped by the caller; the handshake is not
    // cancel-safe and is never resumed).
    match crate::time::with_timeout(timeout, handshake, || None).await {
        Ok(()) => Ok(()),
        Err(None) => Err(DialError::HopFailed {
            hop: n,
            proxy: hop.to_string(),
            why: "no answer to SOCKS5 CONNECT in time".into(),
            timeout: true,
        }),
        Err(Some(e)) => Err(socks_error(n, hop, e)),
    }
}

fn socks_error(n: usize, hop: &Hop, e: ClientError) -> DialError {
    let proxy = hop.to_string();
    match e {
        ClientError::Refused(reply) => DialError::HopSocksRefused {
            hop: n,
            proxy,
            reply,
        },
        e if e.is_auth() => DialError::HopAuthFailed {
            hop: n,
            proxy,
            why: e.to_string(),
        },
        e => hop_failed(n, hop, format!("SOCKS5: {e}")),
    }
}

/// Sends `CONNECT next` to the HTTP hop at the far end of `stream` and reads its answer
/// exactly.
async fn connect_through(
    stream: &TcpStream,
    n: usize,
    hop: &Hop,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<u8>, DialError> {
    let authority = host_port(host, port);
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = &hop.auth {
        req.push_str(&format!("Proxy-Authorization: {}\r\n", auth.basic_header()));
    }
    req.push_str("\r\n");
    let mut w = stream.clone();
    w.write_all(req.as_bytes())
        .await
        .map_err(|e| hop_failed(n, hop, format!("write failed: {e}")))?;
    let mut r = BufReader::with_capacity(1024, stream.clone());
    let head = front::read_response(&mut r, timeout)
        .await
        .map_err(|e| match e {
            ReadError::Timeout { .. } => DialError::HopFailed {
                hop: n,
                proxy: hop.to_string(),
                why: "no answer to CONNECT in time".into(),
                timeout: true,
            },
            ReadError::Closed => hop_failed(n, hop, "closed without answering CONNECT".into()),
            e => hop_failed(n, hop, format!("bad answer to CONNECT: {e}")),
        })?;
    if !(200..300).contains(&head.status) {
        return Err(DialError::HopRefused {
            hop: n,
            proxy: hop.to_string(),
            status: head.status,
            reason: head.reason,
        });
    }
    Ok(r.buffer().to_vec())
}

/// Parses a `NO_PROXY` list: `*`, hosts (also matching their subdomains), `.suffix`, IPs,
/// CIDRs, each with an optional `:port`. Entries that do not parse are skipped with a warning.
pub fn parse_no_proxy(list: &str) -> Vec<Rule> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let e = e.strip_prefix('.').unwrap_or(e);
            let looks_ip = e.starts_with('[')
                || e.contains('/')
                || e.parse::<std::net::IpAddr>().is_ok()
                || e.split(':')
                    .next()
                    .is_some_and(|h| h.parse::<std::net::Ipv4Addr>().is_ok());
            let as_rule = if e == "*" || looks_ip || e.starts_with("*.") {
                e.to_string()
            } else {
                format!("*.{e}")
            };
            match as_rule.parse() {
                Ok(r) => Some(r),
                Err(err) => {
                    log::warn!("ignoring NO_PROXY entry {e:?}: {err}");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_upstream_and_no_proxy() {
        let env = |k: &str| match k {
            "HTTPS_PROXY" => Some("http://corp:3128".to_string()),
            "no_proxy" => Some("localhost, .internal.example,10.0.0.0/8 ,127.0.0.1".to_string()),
            _ => None,
        };
        let up = Upstream::from_args_with_env(&["env".into()], env).unwrap();
        assert_eq!(up.hops.len(), 1);
        assert_eq!(up.hops[0].host, "corp");
        assert!(up.uses_chain("example.com", 443));
        assert!(!up.uses_chain("localhost", 80));
        assert!(!up.uses_chain("a.internal.example", 80));
        assert!(!up.uses_chain("internal.example", 80));
        assert!(!up.uses_chain("10.1.2.3", 22));
        assert!(!up.uses_chain("127.0.0.1", 22));
        let none = Upstream::from_args_with_env(&["env".into()], |_| None).unwrap();
        assert!(none.hops.is_empty(), "no HTTPS_PROXY: direct");

        // ALL_PROXY when HTTPS_PROXY is not set (curl's order); a socks5:// value works.
        let env = |k: &str| match k {
            "all_proxy" => Some("socks5h://u:p@gw:9050".to_string()),
            "HTTPS_PROXY" => Some(String::new()),
            _ => None,
        };
        let up = Upstream::from_args_with_env(&["env".into()], env).unwrap();
        let hop = &up.hops[0];
        assert_eq!(
            (hop.kind, hop.host.as_str(), hop.port),
            (HopKind::Socks5, "gw", 9050)
        );
        let env = |k: &str| match k {
            "ALL_PROXY" => Some("socks5://gw".to_string()),
            "https_proxy" => Some("http://corp:3128".to_string()),
            _ => None,
        };
        let up = Upstream::from_args_with_env(&["env".into()], env).unwrap();
        assert_eq!(
            up.hops[0].url(),
            "http://corp:3128",
            "HTTPS_PROXY comes first"
        );
        let bad = |k: &str| (k == "ALL_PROXY").then(|| "socks4://gw".to_string());
        assert!(
            Upstream::from_args_with_env(&["env".into()], bad).is_err(),
            "fail closed"
        );
        let mixed = ["http://a:1".to_string(), "socks5://b".to_string()];
        let up = Upstream::from_args_with_env(&mixed, |_| None).unwrap();
        let kinds: Vec<_> = up.hops.iter().map(|h| h.kind).collect();
        assert_eq!(kinds, [HopKind::Http, HopKind::Socks5]);
        let none = Upstream::from_args_with_env(&["env".into()], |_| None).unwrap();
        assert!(none.hops.is_empty(), "no HTTPS_PROXY: direct");
    }
}
