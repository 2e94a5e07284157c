//! Target rules (`--allow`/`--deny`): `PATTERN[:PORTS]`.
//!
//! A target is checked twice: on the name the client asked for ([`Rules::permits_name`],
//! before any DNS), and again on every address that name resolves to
//! ([`Rules::permits_addr`], before dialing). So `--deny 127.0.0.0/8` also stops a name that
//! resolves to loopback, while `--allow *.corp.example` allows a matching name whatever it
//! resolves to.
//!
//! Addresses are compared in canonical form: an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`)
//! is its IPv4 address, on both sides, so a mapped literal cannot slip past an IPv4 rule.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One rule: a pattern and an optional port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// what hosts or addresses it matches
    pub pattern: Pattern,
    /// inclusive port range; `None` = every port
    pub ports: Option<(u16, u16)>,
}

/// The host part of a rule.
///
/// Addresses are canonical: never IPv4-mapped IPv6 (those are stored as IPv4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`
    Any,
    /// `10.1.2.3`, `::1`, `[::1]`
    Ip(IpAddr),
    /// `10.0.0.0/8`, `fd00::/8` (address already masked to the prefix)
    Cidr(IpAddr, u8),
    /// `example.com` (lowercase, no trailing dot)
    Host(String),
    /// `*.example.com`: `a.example.com` and `example.com` itself (stored lowercase without `*.`)
    Suffix(String),
}

/// Why a rule string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for RuleError {}

/// Longest host name DNS can carry (RFC 1035 §2.3.4, without the trailing dot).
const MAX_HOST_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

impl FromStr for Rule {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_rule(s).map_err(|why| RuleError(format!("bad rule {s:?}: {why}")))
    }
}

/// Splits `s` into pattern and ports and parses both; the error is the reason alone.
fn parse_rule(s: &str) -> Result<Rule, String> {
    if s.is_empty() {
        return Err("empty rule".into());
    }
    if let Some(inner) = s.strip_prefix('[') {
        return parse_bracketed(inner);
    }
    // A bare IPv6 address or CIDR is full of colons: when the whole string is one, it has no
    // ports (`::1`, `fd00::/8`). Anything else carries its ports after the last colon.
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Rule {
            pattern: Pattern::Ip(ip.to_canonical()),
            ports: None,
        });
    }
    if let Some((addr, prefix)) = s.split_once('/') {
        if let (Ok(v6), false) = (addr.parse::<Ipv6Addr>(), prefix.contains(':')) {
            let pattern = parse_cidr(IpAddr::V6(v6), prefix)?;
            return Ok(Rule {
                pattern,
                ports: None,
            });
        }
    }
    let (pattern, ports) = match s.rsplit_once(':') {
        Some((pattern, ports)) => (pattern, Some(parse_ports(ports)?)),
        None => (s, None),
    };
    Ok(Rule {
        pattern: parse_pattern(pattern)?,
        ports,
    })
}

/// `[v6]`, `[v6]:PORTS`, `[v6]/N`, `[v6]/N:PORTS` (the text after the `[`).
fn parse_bracketed(inner: &str) -> Result<Rule, String> {
    let (addr, rest) = inner.split_once(']').ok_or("missing \"]\"")?;
    let ip: Ipv6Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} in brackets is not an ipv6 address"))?;
    let (prefix, ports) = match rest.strip_prefix('/') {
        Some(after) => match after.split_once(':') {
            Some((prefix, ports)) => (Some(prefix), Some(ports)),
            None => (Some(after), None),
        },
        None if rest.is_empty() => (None, None),
        None => (
            None,
            Some(rest.strip_prefix(':').ok_or("expected \":\" after \"]\"")?),
        ),
    };
    let pattern = match prefix {
        Some(prefix) => parse_cidr(IpAddr::V6(ip), prefix)?,
        None => Pattern::Ip(IpAddr::V6(ip).to_canonical()),
    };
    let ports = ports.map(parse_ports).transpose()?;
    Ok(Rule { pattern, ports })
}

/// The pattern part, once any ports are split off.
fn parse_pattern(p: &str) -> Result<Pattern, String> {
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    if p == "*" {
        return Ok(Pattern::Any);
    }
    if let Ok(ip) = p.parse::<IpAddr>() {
        return Ok(Pattern::Ip(ip.to_canonical()));
    }
    if let Some((addr, prefix)) = p.split_once('/') {
        let ip = addr
            .parse::<IpAddr>()
            .map_err(|_| format!("{addr:?} before \"/\" is not an ip address"))?;
        return parse_cidr(ip, prefix);
    }
    if let Some(suffix) = p.strip_prefix("*.") {
        return Ok(Pattern::Suffix(parse_host(suffix)?));
    }
    Ok(Pattern::Host(parse_host(p)?))
}

/// `ip/prefix`, masked to the network address and made canonical.
fn parse_cidr(ip: IpAddr, prefix: &str) -> Result<Pattern, String> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad prefix length {prefix:?}"));
    }
    let len = match prefix.parse::<u8>() {
        Ok(len) if len <= max => len,
        _ => return Err(format!("prefix length above {max}")),
    };
    // `::ffff:a.b.c.d/N` with N >= 96 covers only IPv4-mapped addresses: store it as the IPv4
    // network, since addresses are matched in canonical (IPv4) form.
    if let IpAddr::V6(v6) = ip {
        if let (Some(v4), true) = (v6.to_ipv4_mapped(), len >= 96) {
            return Ok(Pattern::Cidr(mask(IpAddr::V4(v4), len - 96), len - 96));
        }
    }
    Ok(Pattern::Cidr(mask(ip, len), len))
}

/// A host name pattern: lowercase, trailing dot removed, DNS-shaped.
fn parse_host(h: &str) -> Result<String, String> {
    let h = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
    if h.is_empty() {
        return Err("empty host name".into());
    }
    if h.contains('*') {
        return Err("a wildcard must be \"*\" alone or a leading \"*.\"".into());
    }
    if let Some(c) = h
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("invalid character {c:?} in host name"));
    }
    if h.len() > MAX_HOST_LEN {
        return Err(format!("host name longer than {MAX_HOST_LEN} bytes"));
    }
    let mut labels = h.split('.').peekable();
    while let Some(label) = labels.next() {
        if label.is_empty() {
            return Err("empty label in host name".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!("host name label longer than {MAX_LABEL_LEN} bytes"));
        }
        // A name whose last label is all digits is an IP address to URL parsers and resolvers
        // (`10.0.0.256`, `127.1`): as a host pattern it would silently match nothing.
        if labels.peek().is_none() && label.bytes().all(|b| b.is_ascii_digit()) {
            return Err("not a valid ip address, and not a host name".into());
        }
    }
    Ok(h)
}

/// `N` or `N-M`, each 1..=65535, N <= M.
fn parse_ports(p: &str) -> Result<(u16, u16), String> {
    if p.is_empty() {
        return Err("empty port after \":\"".into());
    }
    let (lo, hi) = match p.split_once('-') {
        Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
        None => {
            let port = parse_port(p)?;
            (port, port)
        }
    };
    if lo > hi {
        return Err(format!("port range {lo}-{hi} ends before it starts"));
    }
    Ok((lo, hi))
}

fn parse_port(p: &str) -> Result<u16, String> {
    // Checked by hand: `u16::from_str` would also take a leading `+`.
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad port {p:?}"));
    }
    match p.parse::<u16>() {
        Ok(0) => Err("port 0 is not allowed".into()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("port {p} above 65535")),
    }
}

/// `ip` with all but the first `len` bits cleared (`len` already checked against the family).
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

/// `host` without the `[...]` around an IPv6 literal.
fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `host` without brackets and one trailing dot.
fn bare_host(host: &str) -> &str {
    let host = unbracket(host);
    host.strip_suffix('.').unwrap_or(host)
}

/// The address `host` spells, if it is an IP literal (brackets allowed).
fn ip_literal(host: &str) -> Option<IpAddr> {
    unbracket(host).parse().ok()
}

impl Rule {
    /// True when the rule matches the name `host` (as the client sent it) and `port`.
    ///
    /// Host patterns compare case-insensitively and ignore a trailing dot and `[...]`; IP and
    /// CIDR patterns match only a `host` that is itself an IP literal.
    pub fn matches_name(&self, host: &str, port: u16) -> bool {
        if !self.matches_port(port) {
            return false;
        }
        match &self.pattern {
            Pattern::Any => true,
            Pattern::Ip(_) | Pattern::Cidr(..) => {
                ip_literal(host).is_some_and(|ip| self.matches_ip(ip))
            }
            Pattern::Host(name) => bare_host(host).eq_ignore_ascii_case(name),
            Pattern::Suffix(suffix) => {
                let host = bare_host(host).as_bytes();
                let suffix = suffix.as_bytes();
                match host.len().checked_sub(suffix.len()) {
                    Some(0) => host.eq_ignore_ascii_case(suffix),
                    Some(start) => {
                        host[start - 1] == b'.' && host[start..].eq_ignore_ascii_case(suffix)
                    }
                    None => false,
                }
            }
        }
    }

    /// True when the rule matches the address `ip` and `port`. Host patterns never match an
    /// address; `Any` matches everything.
    pub fn matches_addr(&self, ip: IpAddr, port: u16) -> bool {
        self.matches_port(port) && self.matches_ip(ip)
    }

    fn matches_port(&self, port: u16) -> bool {
        self.ports.is_none_or(|(lo, hi)| (lo..=hi).contains(&port))
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self.pattern {
            Pattern::Any => true,
            Pattern::Ip(p) => p == ip,
            // Families never mix: IPv4 addresses (mapped ones included) match only IPv4
            // networks, so `::/0` means "every IPv6 address" and not "everything".
            Pattern::Cidr(net, len) => net.is_ipv4() == ip.is_ipv4() && mask(ip, len) == net,
            Pattern::Host(_) | Pattern::Suffix(_) => false,
        }
    }
}

/// The canonical text of a rule; it parses back to the same rule.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An IPv6 pattern followed by ports goes in brackets, or its last group would read
        // as the port.
        let bracket = self.ports.is_some();
        match &self.pattern {
            Pattern::Any => f.write_str("*")?,
            Pattern::Ip(IpAddr::V6(v6)) if bracket => write!(f, "[{v6}]")?,
            Pattern::Ip(ip) => write!(f, "{ip}")?,
            Pattern::Cidr(IpAddr::V6(v6), len) if bracket => write!(f, "[{v6}]/{len}")?,
            Pattern::Cidr(ip, len) => write!(f, "{ip}/{len}")?,
            Pattern::Host(name) => f.write_str(name)?,
            Pattern::Suffix(suffix) => write!(f, "*.{suffix}")?,
        }
        match self.ports {
            None => Ok(()),
            Some((lo, hi)) if lo == hi => write!(f, ":{lo}"),
            Some((lo, hi)) => write!(f, ":{lo}-{hi}"),
        }
    }
}

/// What the rules say about a name whose addresses are unknown (see [`Rules::judge_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameVerdict {
    /// The name alone permits it.
    Allowed,
    /// A rule refuses it.
    Denied,
    /// Only its addresses could decide: refused unless they are resolved and checked.
    NeedsAddresses,
}

/// The allow and deny lists. Deny wins; when any allow rule exists, a target must match one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `--allow` rules
    pub allow: Vec<Rule>,
    /// `--deny` rules
    pub deny: Vec<Rule>,
}

impl Rules {
    /// True when there are no rules at all: every target is permitted.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// True when a connection to `host:port` may proceed to name resolution
    /// (no deny rule matches the name; and either no allow rule exists, or the name matches
    /// one, or `host` is not an IP literal and so the addresses decide).
    pub fn permits_name(&self, host: &str, port: u16) -> bool {
        if self.deny.iter().any(|r| r.matches_name(host, port)) {
            return false;
        }
        self.allow.is_empty()
            || self.allow.iter().any(|r| r.matches_name(host, port))
            || ip_literal(host).is_none()
    }

    /// The verdict on `host:port` when its addresses are not known here: an upstream chain
    /// resolves the name at its last hop, so address rules cannot be checked on it. Fail
    /// closed: a name is [`NameVerdict::Allowed`] only when no deny rule matches it, no deny
    /// rule on addresses could apply to it, and (when allow rules exist) an allow rule matches
    /// the name itself. An IP literal is judged in full.
    pub fn judge_name(&self, host: &str, port: u16) -> NameVerdict {
        if let Some(ip) = ip_literal(host) {
            return match self.permits_addr(host, ip, port) {
                true => NameVerdict::Allowed,
                false => NameVerdict::Denied,
            };
        }
        if self.deny.iter().any(|r| r.matches_name(host, port)) {
            return NameVerdict::Denied;
        }
        let on_addresses = |r: &Rule| {
            matches!(r.pattern, Pattern::Ip(_) | Pattern::Cidr(..)) && r.matches_port(port)
        };
        if self.deny.iter().any(on_addresses) {
            return NameVerdict::NeedsAddresses;
        }
        if self.allow.is_empty() || self.allow.iter().any(|r| r.matches_name(host, port)) {
            NameVerdict::Allowed
        } else {
            NameVerdict::NeedsAddresses
        }
    }

    /// True when dialing `addr:port`, resolved from `host`, may proceed: no deny rule
    /// matches the name or the address, and (no allow rule exists, or the name or the
    /// address matches one).
    pub fn permits_addr(&self, host: &str, addr: IpAddr, port: u16) -> bool {
        let matches = |r: &Rule| r.matches_name(host, port) || r.matches_addr(addr, port);
        !self.deny.iter().any(matches) && (self.allow.is_empty() || self.allow.iter().any(matches))
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
