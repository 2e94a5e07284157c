//! What a client configuration may expose, decided before anything listens: the `:proxy`
//! modes open a door into a network, so an open door on a public address is refused unless
//! the user says `--open`, and credentials that the wire cannot carry whole are refused
//! instead of being cut (a cut credential once made the relay run the proxy with none).

use super::ClientConfig;
use crate::client::spec::{LocalSpec, RemoteSpec};
use crate::tunnel::frame::ProxyAuth;
use std::net::IpAddr;

impl ClientConfig {
    /// What a pool member's `remote` lets visitors reach, as the digest every member of a
    /// `:proxy` pool must share (hex SHA-256 of its sorted `--allow` and `--deny` rules);
    /// empty for a forward, whose members may dial different targets (replicas).
    pub fn pool_policy(&self, remote: &RemoteSpec) -> String {
        use sha2::Digest;
        if matches!(remote, RemoteSpec::Forward { .. }) {
            return String::new();
        }
        let sorted = |rules: &[crate::dial::rules::Rule]| {
            let mut v: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
            v.sort();
            v.join("\n")
        };
        let mut h = sha2::Sha256::new();
        h.update(b"allow\n");
        h.update(sorted(&self.rules.allow));
        h.update(b"\ndeny\n");
        h.update(sorted(&self.rules.deny));
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The credentials a `-R …:proxy` BIND carries ([`ProxyAuth::open`] without
    /// `--proxy-auth`). `Err` when they do not fit the frame's text field.
    pub fn bind_auth(&self) -> Result<ProxyAuth, String> {
        let Some(c) = &self.proxy_auth else {
            return Ok(ProxyAuth::open());
        };
        ProxyAuth::basic(c.clone()).map_err(|e| format!("--proxy-auth: {e}"))
    }

    /// Refuses `:proxy` modes that would serve anyone who can reach them, unless `open`:
    /// `-R …:proxy` on the relay's default or a non-loopback address without `--proxy-auth`
    /// or `--allow`, and `-L …:proxy` on a non-loopback address without `--proxy-auth`.
    /// Also checks [`ClientConfig::bind_auth`].
    pub fn check_exposure(&self, open: bool) -> Result<(), String> {
        let has_rproxy = self
            .remotes
            .iter()
            .any(|r| matches!(r, RemoteSpec::Proxy { .. }));
        if has_rproxy {
            self.bind_auth()?;
        }
        if open || self.proxy_auth.is_some() {
            return Ok(());
        }
        for r in &self.remotes {
            if let RemoteSpec::Proxy { bind, port } = r {
                // "" is the relay's own listen address, public as far as we can tell.
                let loopback = bind.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if !loopback && self.rules.allow.is_empty() {
                    let at = if bind.is_empty() {
                        format!("the relay's address, port {port}")
                    } else {
                        crate::dial::host_port(bind, *port)
                    };
                    return Err(format!(
                        "refusing -R …:proxy on {at}: anyone who reaches it could use this \
                         network; add --proxy-auth or --allow, or --open if you mean it"
                    ));
                }
            }
        }
        for l in &self.locals {
            if let LocalSpec::Proxy { bind } = l {
                if !bind.ip().is_loopback() {
                    return Err(format!(
                        "refusing -L {bind}:proxy without --proxy-auth: anyone who reaches it \
                         could use the relay's network; add --proxy-auth, or --open if you mean it"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::frame::MAX_TEXT;
    use crate::tunnel::ws::TunnelUrl;

    fn cfg(locals: &[&str], remotes: &[&str]) -> ClientConfig {
        let mut c = ClientConfig::new("ws://127.0.0.1:1".parse::<TunnelUrl>().unwrap());
        c.locals = locals.iter().map(|s| s.parse().unwrap()).collect();
        c.remotes = remotes.iter().map(|s| s.parse().unwrap()).collect();
        c
    }

    #[test]
    fn open_proxies_need_credentials_rules_or_open() {
        let refused: &[(&[&str], &[&str])] = &[
            (&[], &["0:proxy"]),
            (&[], &["3128:proxy"]),
            (&[], &["0.0.0.0:0:proxy"]),
            (&[], &["[::]:0:proxy"]),
            (&["0.0.0.0:0:proxy"], &[]),
            (&["[::]:3128:proxy"], &[]),
        ];
        assert!(!refused.is_empty());
        for (l, r) in refused {
            let c = cfg(l, r);
            assert!(c.check_exposure(false).is_err(), "{l:?} {r:?}");
            assert!(c.check_exposure(true).is_ok(), "--open: {l:?} {r:?}");
            let mut with_auth = c.clone();
            with_auth.proxy_auth = Some("u:p".parse().unwrap());
            assert!(with_auth.check_exposure(false).is_ok(), "auth: {l:?} {r:?}");
        }
        let mut allowed = cfg(&[], &["0:proxy"]);
        allowed.rules.allow = vec!["*.test.internal".parse().unwrap()];
        assert!(allowed.check_exposure(false).is_ok(), "-R with --allow");
        let mut allow_l = cfg(&["0.0.0.0:0:proxy"], &[]);
        allow_l.rules.allow = vec!["*".parse().unwrap()];
        assert!(
            allow_l.check_exposure(false).is_err(),
            "--allow is for -R visitors: it does not guard a -L proxy"
        );
        for fine in [
            cfg(&["127.0.0.1:0:proxy", "[::1]:0:proxy"], &[]),
            cfg(&[], &["127.0.0.1:0:proxy", "[::1]:0:proxy"]),
            cfg(&["0.0.0.0:0:example.com:80"], &["0:localhost:3000"]),
        ] {
            assert!(fine.check_exposure(false).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn credentials_that_do_not_fit_a_bind_are_refused() {
        let mut c = cfg(&[], &["127.0.0.1:0:proxy"]);
        c.proxy_auth = Some(format!("u:{}", "p".repeat(MAX_TEXT - 2)).parse().unwrap());
        assert!(c.bind_auth().unwrap().credentials().unwrap().is_some());
        assert!(c.check_exposure(false).is_ok());
        c.proxy_auth = Some(format!("u:{}", "p".repeat(MAX_TEXT - 1)).parse().unwrap());
        let err = c.check_exposure(true).unwrap_err();
        assert!(
            err.contains("--proxy-auth") && !err.contains("ppp"),
            "{err}"
        );
    }
}
