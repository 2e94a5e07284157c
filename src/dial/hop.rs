//! One upstream proxy hop: its kind (HTTP CONNECT or SOCKS5), address and credentials, parsed
//! from a proxy URL.

use super::{host_port, split_host_port};
use crate::http::auth::Credentials;
use crate::socks::client::MAX_CREDENTIAL_LEN;
use std::fmt;
use std::str::FromStr;

/// Which protocol a hop speaks: how it is asked for the next hop or the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopKind {
    /// An HTTP proxy: `CONNECT host:port`, credentials in `Proxy-Authorization`.
    Http,
    /// A SOCKS5 proxy (RFC 1928): CONNECT with the target's name (never resolved here) or IP
    /// literal, credentials by RFC 1929.
    Socks5,
}

impl HopKind {
    /// The URL scheme: `http` or `socks5`.
    pub fn scheme(self) -> &'static str {
        match self {
            HopKind::Http => "http",
            HopKind::Socks5 => "socks5",
        }
    }

    /// The port of a URL that names none: 80 for `http://`, 1080 for `socks5://`.
    pub fn default_port(self) -> u16 {
        match self {
            HopKind::Http => 80,
            HopKind::Socks5 => 1080,
        }
    }
}

/// One upstream proxy: `http://[user:pass@]host[:port]` or `socks5://[user:pass@]host[:port]`
/// (`socks5h://` is the same: names always go to the hop unresolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// the protocol the hop speaks
    pub kind: HopKind,
    /// host name or IP literal (no brackets)
    pub host: String,
    /// port (default 80 for `http://`, 1080 for `socks5://`)
    pub port: u16,
    /// credentials (`Proxy-Authorization`, or SOCKS5 username/password), if any; for a
    /// SOCKS5 hop each part is at most 255 bytes
    pub auth: Option<Credentials>,
}

impl Hop {
    /// `scheme://host:port`, without credentials (for status pages and logs).
    pub fn url(&self) -> String {
        format!("{}://{}", self.kind.scheme(), self)
    }
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
        let (kind, rest) = match s.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (HopKind::Http, rest),
                "socks5" | "socks5h" => (HopKind::Socks5, rest),
                _ => {
                    return Err(bad(&format!(
                        "scheme {scheme:?} is not supported (use http:// or socks5://)"
                    )));
                }
            },
            None => (HopKind::Http, s),
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
        if let (HopKind::Socks5, Some(c)) = (kind, &auth) {
            if c.user.len() > MAX_CREDENTIAL_LEN || c.pass.expose().len() > MAX_CREDENTIAL_LEN {
                return Err(bad(
                    "SOCKS5 user name and password are at most 255 bytes each",
                ));
            }
            // RFC 1929: both are 1 to 255 bytes; an empty one would be refused by a strict
            // server only after the connection was made.
            if c.user.is_empty() || c.pass.expose().is_empty() {
                return Err(bad(
                    "SOCKS5 credentials need a user name and a password (user:pass@)",
                ));
            }
        }
        let (host, port) = split_host_port(hostport, kind.default_port())
            .ok_or_else(|| bad("expected host[:port]"))?;
        Ok(Hop {
            kind,
            host,
            port,
            auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_urls() {
        let h: Hop = "http://alice:s%40cret@proxy.example:3128".parse().unwrap();
        assert_eq!(
            (h.kind, h.host.as_str(), h.port),
            (HopKind::Http, "proxy.example", 3128)
        );
        let auth = h.auth.unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.pass.expose()),
            ("alice", "s@cret")
        );
        let h: Hop = "http://[::1]:8080/".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port, h.auth), ("::1", 8080, None));
        let h: Hop = "127.0.0.1:3128".parse().unwrap();
        assert_eq!(
            (h.kind, h.host.as_str(), h.port),
            (HopKind::Http, "127.0.0.1", 3128)
        );
        let h: Hop = "http://proxy".parse().unwrap();
        assert_eq!(h.port, 80);
        for bad in [
            "socks4://x:1",
            "https://x:1",
            "http://x:0",
            "http://x:99999",
            "http://x:1/path",
            "http://",
            "socks5://",
            "::1:80",
        ] {
            assert!(bad.parse::<Hop>().is_err(), "{bad}");
        }
        let shown = "http://u:hunter2@p:1".parse::<Hop>().unwrap().to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn socks5_hop_urls() {
        type Case = (
            &'static str,
            &'static str,
            u16,
            Option<(&'static str, &'static str)>,
        );
        let table: [Case; 5] = [
            ("socks5://127.0.0.1:1081", "127.0.0.1", 1081, None),
            ("socks5://gw.example", "gw.example", 1080, None),
            ("SOCKS5H://gw.example:9050/", "gw.example", 9050, None),
            ("socks5://[::1]", "::1", 1080, None),
            ("socks5://bob:p%3Aw@gw:1", "gw", 1, Some(("bob", "p:w"))),
        ];
        for (url, host, port, auth) in table {
            let h: Hop = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (h.kind, h.host.as_str(), h.port),
                (HopKind::Socks5, host, port),
                "{url}"
            );
            let got = h.auth.as_ref().map(|c| (c.user.as_str(), c.pass.expose()));
            assert_eq!(got, auth, "{url}");
            assert_eq!(h.url(), format!("socks5://{}", host_port(host, port)));
            assert!(!h.to_string().contains("p:w"));
        }
        let long = format!("socks5://u:{}@gw", "x".repeat(256));
        assert!(
            long.parse::<Hop>().is_err(),
            "a 256-byte password cannot be sent"
        );
        let fits = format!("socks5://u:{}@gw", "x".repeat(255));
        assert!(fits.parse::<Hop>().is_ok());
        for empty in ["socks5://u@gw", "socks5://u:@gw", "socks5://:p@gw"] {
            assert!(
                empty.parse::<Hop>().is_err(),
                "{empty}: RFC 1929 needs 1 to 255 bytes"
            );
        }
        assert!(
            "http://u@gw".parse::<Hop>().is_ok(),
            "HTTP Basic allows an empty password"
        );
        let http_long = format!("http://u:{}@gw", "x".repeat(256));
        assert!(
            http_long.parse::<Hop>().is_ok(),
            "HTTP Basic has no such limit"
        );
    }
}
