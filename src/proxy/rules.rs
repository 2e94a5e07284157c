//! Target rules (`--allow`/`--deny`): `PATTERN[:PORTS]`.
//!
//! INTERFACE STUB — to be implemented.

use std::fmt;
use std::net::IpAddr;
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

impl FromStr for Rule {
    type Err = RuleError;
    fn from_str(_s: &str) -> Result<Self, Self::Err> {
        todo!()
    }
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
    /// True when a connection to `host:port` may proceed to name resolution
    /// (no deny rule matches the name; and either no allow rule exists, or the name matches
    /// one, or `host` is not an IP literal and so the addresses decide).
    pub fn permits_name(&self, _host: &str, _port: u16) -> bool {
        todo!()
    }
    /// True when dialing `addr:port`, resolved from `host`, may proceed: no deny rule
    /// matches the name or the address, and (no allow rule exists, or the name or the
    /// address matches one).
    pub fn permits_addr(&self, _host: &str, _addr: IpAddr, _port: u16) -> bool {
        todo!()
    }
}
