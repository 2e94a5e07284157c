//! Upstream proxy chains: reach a target through CONNECT proxies, hop by hop.

use super::rules::{NameVerdict, Rule, Rules};
use super::{DialError, host_port, split_host_port};
use crate::http::auth::Credentials;
use crate::http::front::{self, ReadError};
use futures_lite::io::{AsyncWriteExt, BufReader};
use smol::net::TcpStream;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One upstream proxy: `http://[user:pass@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// host name or IP literal (no brackets)
    pub host: String,
    /// port (default 80, as for any `http://` URL)
    pub port: u16,
    /// credentials sent in `Proxy-Authorization`, if any
    pub auth: Option<Credentials>,
}

/// Why a proxy URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopError(pub String);

impl fmt::Display for HopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for HopError {}

impl fmt::Display for Hop {
    /// `host:port` only: credentials never appear in messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&host_port(&self.host, self.port))
    }
}

impl FromStr for Hop {
    type Err = HopError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| HopError(format!("bad proxy url: {why}"));
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "scheme {scheme:?} is not supported (use http://)"
                )));
            }
            None => s,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(bad("a proxy url has no path"));
        }
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hp)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let creds =
                    Credentials::from_url_userinfo(user, pass).map_err(|e| bad(&e.to_string()))?;
                (Some(creds), hp)
            }
            None => (None, rest),
        };
        let (host, port) =
            split_host_port(hostport, 80).ok_or_else(|| bad("expected host[:port]"))?;
        Ok(Hop { host, port, auth })
    }
}

/// How targets are reached: directly, or through an ordered chain of hops.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    /// the hops, first = the one we dial
    pub hops: Vec<Hop>,
    /// targets that bypass the chain (from `NO_PROXY` with `--upstream env`)
    pub no_proxy: Vec<Rule>,
}

impl Upstream {
    /// Builds a chain from `--upstream` values; `env` takes its hop from `HTTPS_PROXY`
    /// (or `https_proxy`) and its bypass list from `NO_PROXY` (or `no_proxy`).
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
                match first("HTTPS_PROXY", "https_proxy") {
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
    /// arrived behind the last hop's `200`.
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
            leftover = connect_through(&stream, i + 1, hop, next_host, next_port, timeout).await?;
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

/// Sends `CONNECT next` to the hop at the far end of `stream` and reads its answer exactly.
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
    fn hop_urls() {
        let h: Hop = "http://alice:s%40cret@proxy.example:3128".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("proxy.example", 3128));
        let auth = h.auth.unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.pass.expose()),
            ("alice", "s@cret")
        );
        let h: Hop = "http://[::1]:8080/".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port, h.auth), ("::1", 8080, None));
        let h: Hop = "127.0.0.1:3128".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("127.0.0.1", 3128));
        let h: Hop = "http://proxy".parse().unwrap();
        assert_eq!(h.port, 80);
        for bad in [
            "socks5://x:1",
            "http://x:0",
            "http://x:99999",
            "http://x:1/path",
            "http://",
            "::1:80",
        ] {
            assert!(bad.parse::<Hop>().is_err(), "{bad}");
        }
        let shown = "http://u:hunter2@p:1".parse::<Hop>().unwrap().to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }

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
    }
}
