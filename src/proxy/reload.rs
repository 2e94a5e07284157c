//! Live reload of `burrow proxy`: the configuration in force sits behind a swappable `Arc`
//! that every new connection reads once; a reload swaps it. Open connections keep the one
//! they started with.

use super::config::ProxyConfig;
use crate::dial::DirectDialer;
use crate::reload::{Changes, ReloadError};
use std::sync::{Arc, Mutex};

/// What a new connection is served with: the config, and the dialer made from it.
#[derive(Debug)]
pub(super) struct Current {
    pub(super) config: Arc<ProxyConfig>,
    pub(super) dialer: Arc<DirectDialer>,
}

impl Current {
    fn new(config: ProxyConfig) -> Arc<Current> {
        let dialer = Arc::new(DirectDialer {
            upstream: config.upstream.clone(),
            rules: config.rules.clone(),
            names: config.names,
            timeout: config.connect_timeout,
        });
        Arc::new(Current {
            config: Arc::new(config),
            dialer,
        })
    }
}

/// The swappable configuration of one proxy.
#[derive(Debug)]
pub(super) struct Live(Mutex<Arc<Current>>);

impl Live {
    pub(super) fn new(config: ProxyConfig) -> Arc<Live> {
        Arc::new(Live(Mutex::new(Current::new(config))))
    }

    /// The configuration in force (a new connection reads it once).
    pub(super) fn current(&self) -> Arc<Current> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Applies new configurations to a running [`Proxy`](super::Proxy) (see [`crate::reload`]).
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    pub(super) live: Arc<Live>,
}

impl ProxyHandle {
    /// Applies `config` to the running proxy: upstreams, credentials, rules, names, timeouts
    /// and the connection limit apply to new connections at once (the drain timeout to the
    /// next drain); open connections keep what they started with. Nothing here needs a
    /// restart (the listen address is not part of [`ProxyConfig`]).
    pub fn reload(&self, config: ProxyConfig) -> Result<Changes, ReloadError> {
        let mut slot = self.live.0.lock().unwrap_or_else(|e| e.into_inner());
        let changes = changes(&slot.config, &config);
        *slot = Current::new(config);
        Ok(changes)
    }
}

/// One line per setting that differs.
fn changes(old: &ProxyConfig, new: &ProxyConfig) -> Changes {
    let upstream =
        old.upstream.hops != new.upstream.hops || old.upstream.no_proxy != new.upstream.no_proxy;
    [
        (upstream, "upstream"),
        (old.auth != new.auth, "auth"),
        (old.rules != new.rules, "rules"),
        (old.names != new.names, "resolve-names"),
        (
            old.connect_timeout != new.connect_timeout,
            "connect-timeout",
        ),
        (old.idle_timeout != new.idle_timeout, "idle-timeout"),
        (old.head_timeout != new.head_timeout, "head-timeout"),
        (
            old.max_connections != new.max_connections,
            "max-connections",
        ),
        (old.drain_timeout != new.drain_timeout, "drain-timeout"),
    ]
    .into_iter()
    .filter(|(changed, _)| *changed)
    .map(|(_, what)| format!("{what} changed"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::chain::ChainNames;
    use std::time::Duration;

    #[test]
    fn every_setting_that_differs_is_one_line() {
        let old = ProxyConfig::default();
        assert!(changes(&old, &old.clone()).is_empty());
        let new = ProxyConfig {
            auth: Some("u:p".parse().unwrap()),
            rules: crate::dial::rules::Rules {
                deny: vec!["*.internal".parse().unwrap()],
                ..Default::default()
            },
            names: ChainNames::Resolve,
            idle_timeout: Duration::from_secs(1),
            max_connections: 1,
            ..ProxyConfig::default()
        };
        assert_eq!(
            changes(&old, &new),
            [
                "auth changed",
                "rules changed",
                "resolve-names changed",
                "idle-timeout changed",
                "max-connections changed"
            ]
        );
    }
}
