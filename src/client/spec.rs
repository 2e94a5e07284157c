//! `-L` and `-R` specs, in the syntax ssh and chisel users know.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// `-L`: something local whose egress is the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSpec {
    /// `[bind:]port:host:port`: a local listener; the relay dials `host:port`.
    Forward {
        /// local listen address (default 127.0.0.1)
        bind: SocketAddr,
        /// target host (resolved by the relay)
        host: String,
        /// target port
        port: u16,
    },
    /// `stdio:host:port`: stdin/stdout is the one stream (ssh ProxyCommand).
    Stdio {
        /// target host
        host: String,
        /// target port
        port: u16,
    },
    /// `[bind:]port:proxy`: a local HTTP proxy whose egress is the relay's network.
    Proxy {
        /// local listen address
        bind: SocketAddr,
    },
    /// `udp:[bind:]port:host:port`: a local UDP socket; each source address is a flow whose
    /// datagrams the relay sends to `host:port` (and the answers come back).
    Udp {
        /// local UDP address (default 127.0.0.1)
        bind: SocketAddr,
        /// target host (resolved by the relay)
        host: String,
        /// target port
        port: u16,
    },
}

/// `-R`: a listener on the relay whose egress is this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSpec {
    /// `[bind:]port:host:port`: visitors reach `host:port` dialed from the client.
    Forward {
        /// bind address on the relay ("" = the relay's own address)
        bind: String,
        /// port on the relay (0 = any)
        port: u16,
        /// target host, dialed by the client
        host: String,
        /// target port
        target_port: u16,
    },
    /// `[bind:]port:proxy`: an HTTP proxy on the relay; requests leave from the client.
    Proxy {
        /// bind address on the relay
        bind: String,
        /// port on the relay (0 = any)
        port: u16,
    },
    /// `udp:[bind:]port:host:port`: a UDP socket on the relay; each visitor source address
    /// is a flow whose datagrams the client sends to `host:port`.
    Udp {
        /// bind address on the relay ("" = the relay's own address)
        bind: String,
        /// UDP port on the relay (0 = any)
        port: u16,
        /// target host, reached by the client
        host: String,
        /// target port
        target_port: u16,
    },
}

/// Splits on `:` outside brackets, stripping the brackets of IPv6 literals.
fn fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_brackets = false;
    for c in s.chars() {
        match c {
            '[' if !in_brackets && cur.is_empty() => in_brackets = true,
            ']' if in_brackets => in_brackets = false,
            ':' if !in_brackets => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if in_brackets {
        return Err(format!("unclosed [ in {s:?}"));
    }
    out.push(cur);
    if out.iter().any(String::is_empty) {
        return Err(format!("empty field in {s:?}"));
    }
    Ok(out)
}

fn port(s: &str, spec: &str, zero_ok: bool) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|&p| zero_ok || p != 0)
        .ok_or_else(|| format!("bad port {s:?} in {spec:?}"))
}

fn local_addr(bind: &str, p: u16, spec: &str) -> Result<SocketAddr, String> {
    let ip: IpAddr = bind
        .parse()
        .map_err(|_| format!("bad bind address {bind:?} in {spec:?}"))?;
    Ok(SocketAddr::new(ip, p))
}

const LOOPBACK: &str = "127.0.0.1";

impl FromStr for LocalSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let f = fields(s)?;
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        match f.as_slice() {
            ["udp", p, host, tp] => Ok(LocalSpec::Udp {
                bind: local_addr(LOOPBACK, port(p, s, true)?, s)?,
                host: host.to_string(),
                port: port(tp, s, false)?,
            }),
            ["udp", b, p, host, tp] => Ok(LocalSpec::Udp {
                bind: local_addr(b, port(p, s, true)?, s)?,
                host: host.to_string(),
                port: port(tp, s, false)?,
            }),
            ["udp", ..] => Err(format!("bad -L {s:?}: expected udp:[BIND:]PORT:HOST:PORT")),
            ["stdio", host, p] => Ok(LocalSpec::Stdio {
                host: host.to_string(),
                port: port(p, s, false)?,
            }),
            [p, "proxy"] => Ok(LocalSpec::Proxy {
                bind: local_addr(LOOPBACK, port(p, s, true)?, s)?,
            }),
            [b, p, "proxy"] => Ok(LocalSpec::Proxy {
                bind: local_addr(b, port(p, s, true)?, s)?,
            }),
            [p, host, tp] => Ok(LocalSpec::Forward {
                bind: local_addr(LOOPBACK, port(p, s, true)?, s)?,
                host: host.to_string(),
                port: port(tp, s, false)?,
            }),
            [b, p, host, tp] => Ok(LocalSpec::Forward {
                bind: local_addr(b, port(p, s, true)?, s)?,
                host: host.to_string(),
                port: port(tp, s, false)?,
            }),
            _ => Err(format!(
                "bad -L {s:?}: expected [BIND:]PORT:HOST:PORT, stdio:HOST:PORT, [BIND:]PORT:proxy \
                 or udp:[BIND:]PORT:HOST:PORT"
            )),
        }
    }
}

impl FromStr for RemoteSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let f = fields(s)?;
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        let check_bind = |b: &str| -> Result<String, String> {
            b.parse::<IpAddr>()
                .map(|_| b.to_string())
                .map_err(|_| format!("bad bind address {b:?} in {s:?}"))
        };
        match f.as_slice() {
            ["udp", p, host, tp] => Ok(RemoteSpec::Udp {
                bind: String::new(),
                port: port(p, s, true)?,
                host: host.to_string(),
                target_port: port(tp, s, false)?,
            }),
            ["udp", b, p, host, tp] => Ok(RemoteSpec::Udp {
                bind: check_bind(b)?,
                port: port(p, s, true)?,
                host: host.to_string(),
                target_port: port(tp, s, false)?,
            }),
            ["udp", ..] => Err(format!("bad -R {s:?}: expected udp:[BIND:]PORT:HOST:PORT")),
            [p, "proxy"] => Ok(RemoteSpec::Proxy {
                bind: String::new(),
                port: port(p, s, true)?,
            }),
            [b, p, "proxy"] => Ok(RemoteSpec::Proxy {
                bind: check_bind(b)?,
                port: port(p, s, true)?,
            }),
            [p, host, tp] => Ok(RemoteSpec::Forward {
                bind: String::new(),
                port: port(p, s, true)?,
                host: host.to_string(),
                target_port: port(tp, s, false)?,
            }),
            [b, p, host, tp] => Ok(RemoteSpec::Forward {
                bind: check_bind(b)?,
                port: port(p, s, true)?,
                host: host.to_string(),
                target_port: port(tp, s, false)?,
            }),
            _ => Err(format!(
                "bad -R {s:?}: expected [BIND:]PORT:HOST:PORT, [BIND:]PORT:proxy or \
                 udp:[BIND:]PORT:HOST:PORT"
            )),
        }
    }
}

impl RemoteSpec {
    /// The port asked for on the relay (0: any free one).
    pub fn port(&self) -> u16 {
        match self {
            RemoteSpec::Forward { port, .. }
            | RemoteSpec::Proxy { port, .. }
            | RemoteSpec::Udp { port, .. } => *port,
        }
    }

    /// True for `udp:` (a UDP socket on the relay, not a TCP listener).
    pub fn is_udp(&self) -> bool {
        matches!(self, RemoteSpec::Udp { .. })
    }
}

impl fmt::Display for RemoteSpec {
    /// What a binding leads to, as printed in `bound R ADDR -> WHAT` lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteSpec::Forward {
                host, target_port, ..
            } => f.write_str(&crate::dial::host_port(host, *target_port)),
            RemoteSpec::Proxy { .. } => f.write_str("proxy"),
            RemoteSpec::Udp {
                host, target_port, ..
            } => write!(f, "udp {}", crate::dial::host_port(host, *target_port)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_specs() {
        let lo = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let ok = [
            (
                "8080:example.com:80",
                LocalSpec::Forward {
                    bind: lo(8080),
                    host: "example.com".into(),
                    port: 80,
                },
            ),
            (
                "0.0.0.0:8080:10.0.0.5:22",
                LocalSpec::Forward {
                    bind: "0.0.0.0:8080".parse().unwrap(),
                    host: "10.0.0.5".into(),
                    port: 22,
                },
            ),
            (
                "[::1]:0:[fd00::1]:22",
                LocalSpec::Forward {
                    bind: "[::1]:0".parse().unwrap(),
                    host: "fd00::1".into(),
                    port: 22,
                },
            ),
            (
                "stdio:db.internal:5432",
                LocalSpec::Stdio {
                    host: "db.internal".into(),
                    port: 5432,
                },
            ),
            ("3128:proxy", LocalSpec::Proxy { bind: lo(3128) }),
            (
                "udp:5353:10.0.0.53:53",
                LocalSpec::Udp {
                    bind: lo(5353),
                    host: "10.0.0.53".into(),
                    port: 53,
                },
            ),
            (
                "udp:[::1]:0:[fd00::53]:53",
                LocalSpec::Udp {
                    bind: "[::1]:0".parse().unwrap(),
                    host: "fd00::53".into(),
                    port: 53,
                },
            ),
            (
                "udp:0.0.0.0:53:dns.internal:53",
                LocalSpec::Udp {
                    bind: "0.0.0.0:53".parse().unwrap(),
                    host: "dns.internal".into(),
                    port: 53,
                },
            ),
            (
                "127.0.0.2:0:proxy",
                LocalSpec::Proxy {
                    bind: "127.0.0.2:0".parse().unwrap(),
                },
            ),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<LocalSpec>(), Ok(want), "{s}");
        }
        for bad in [
            "",
            "80",
            "x:80:h:1",
            "80:h:0",
            "80:h:x",
            "stdio:h",
            "1.2.3.4:70000:proxy",
            "[::1:80:h:1",
            "a:b:c:d:e",
            "udp:53",
            "udp:53:h",
            "udp:53:h:0",
            "udp:x:53:h:53",
            "udp:53:proxy",
            "udp:1:2:h:53:9",
            "udp:stdio:h:1",
        ] {
            assert!(bad.parse::<LocalSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_specs() {
        let ok = [
            (
                "8080:localhost:3000",
                RemoteSpec::Forward {
                    bind: "".into(),
                    port: 8080,
                    host: "localhost".into(),
                    target_port: 3000,
                },
            ),
            (
                "0:localhost:3000",
                RemoteSpec::Forward {
                    bind: "".into(),
                    port: 0,
                    host: "localhost".into(),
                    target_port: 3000,
                },
            ),
            (
                "127.0.0.1:9000:app:80",
                RemoteSpec::Forward {
                    bind: "127.0.0.1".into(),
                    port: 9000,
                    host: "app".into(),
                    target_port: 80,
                },
            ),
            (
                "3128:proxy",
                RemoteSpec::Proxy {
                    bind: "".into(),
                    port: 3128,
                },
            ),
            (
                "[::]:0:proxy",
                RemoteSpec::Proxy {
                    bind: "::".into(),
                    port: 0,
                },
            ),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<RemoteSpec>(), Ok(want), "{s}");
        }
        let udp = [
            (
                "udp:5353:127.0.0.1:53",
                RemoteSpec::Udp {
                    bind: "".into(),
                    port: 5353,
                    host: "127.0.0.1".into(),
                    target_port: 53,
                },
            ),
            (
                "udp:[::]:0:[::1]:53",
                RemoteSpec::Udp {
                    bind: "::".into(),
                    port: 0,
                    host: "::1".into(),
                    target_port: 53,
                },
            ),
        ];
        for (s, want) in udp {
            assert_eq!(s.parse::<RemoteSpec>(), Ok(want), "{s}");
        }
        for bad in [
            "proxy",
            "stdio:h:1",
            "x:1:proxy",
            "1:h:0",
            "99999:proxy",
            "udp:1:proxy",
            "udp:h:1:h:1",
            "udp:1:h",
            "udp:1:h:0",
        ] {
            assert!(bad.parse::<RemoteSpec>().is_err(), "{bad}");
        }
    }
}
