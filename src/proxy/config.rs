//! What `burrow proxy` (and every proxy door of the tunnel) is configured with.

use crate::dial::chain::{ChainNames, Upstream};
use crate::dial::rules::Rules;
use crate::http::auth::Credentials;
use std::time::Duration;

/// Everything `burrow proxy` is configured with.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// how targets are reached
    pub upstream: Upstream,
    /// required client credentials (`--auth`), if any
    pub auth: Option<Credentials>,
    /// target rules
    pub rules: Rules,
    /// how the rules treat names an upstream chain resolves (`--resolve-names`)
    pub names: ChainNames,
    /// limit for reaching a target (or the whole chain)
    pub connect_timeout: Duration,
    /// a tunnel or keep-alive connection with no traffic for this long is closed
    pub idle_timeout: Duration,
    /// the whole request head must arrive within this
    pub head_timeout: Duration,
    /// connections served at once; more get 503
    pub max_connections: usize,
    /// how long open connections may finish after shutdown begins
    pub drain_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            upstream: Upstream::default(),
            auth: None,
            rules: Rules::default(),
            names: ChainNames::ByName,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            head_timeout: Duration::from_secs(10),
            max_connections: 4096,
            drain_timeout: Duration::from_secs(10),
        }
    }
}
