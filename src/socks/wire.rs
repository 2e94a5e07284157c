//! The SOCKS5 wire format: constants, addresses and reply codes. No I/O.
//!
//! ```text
//! greeting  = VER(5) NMETHODS METHODS...            server: VER METHOD
//! auth      = VER(1) ULEN UNAME PLEN PASSWD          server: VER(1) STATUS (RFC 1929)
//! request   = VER CMD RSV(0) ATYP DST.ADDR DST.PORT
//! reply     = VER REP RSV(0) ATYP BND.ADDR BND.PORT
//! udp       = RSV(0,0) FRAG ATYP DST.ADDR DST.PORT DATA
//! ```

use crate::refusal::Refusal;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The protocol version byte; also the first byte a SOCKS5 client sends.
pub const VERSION: u8 = 5;
/// The version byte of the username/password sub-negotiation (RFC 1929).
pub const AUTH_VERSION: u8 = 1;

/// Authentication methods (greeting).
pub mod method {
    /// no authentication required
    pub const NONE: u8 = 0x00;
    /// username/password (RFC 1929)
    pub const USER_PASS: u8 = 0x02;
    /// no acceptable methods: the client must close
    pub const NO_ACCEPTABLE: u8 = 0xFF;
}

/// Request commands.
pub mod cmd {
    /// CONNECT: a TCP stream to the target
    pub const CONNECT: u8 = 0x01;
    /// BIND: a listener for one inbound connection (not supported by burrow)
    pub const BIND: u8 = 0x02;
    /// UDP ASSOCIATE: relay datagrams
    pub const UDP_ASSOCIATE: u8 = 0x03;
}

/// Address types.
pub mod atyp {
    /// 4 bytes
    pub const IPV4: u8 = 0x01;
    /// 1 length byte, then the name
    pub const DOMAIN: u8 = 0x03;
    /// 16 bytes
    pub const IPV6: u8 = 0x04;
}

/// A reply code (`REP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// succeeded
    Succeeded = 0x00,
    /// general SOCKS server failure
    GeneralFailure = 0x01,
    /// connection not allowed by ruleset
    NotAllowed = 0x02,
    /// network unreachable
    NetworkUnreachable = 0x03,
    /// host unreachable
    HostUnreachable = 0x04,
    /// connection refused
    ConnectionRefused = 0x05,
    /// TTL expired (burrow: the target did not answer in time)
    TtlExpired = 0x06,
    /// command not supported
    CommandNotSupported = 0x07,
    /// address type not supported
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    /// The reply for a byte a server sent; `None` for one RFC 1928 does not define.
    pub fn from_u8(b: u8) -> Option<Reply> {
        Some(match b {
            0x00 => Reply::Succeeded,
            0x01 => Reply::GeneralFailure,
            0x02 => Reply::NotAllowed,
            0x03 => Reply::NetworkUnreachable,
            0x04 => Reply::HostUnreachable,
            0x05 => Reply::ConnectionRefused,
            0x06 => Reply::TtlExpired,
            0x07 => Reply::CommandNotSupported,
            0x08 => Reply::AddressTypeNotSupported,
            _ => return None,
        })
    }

    /// The reply that answers a refusal (the same vocabulary as the HTTP statuses).
    pub fn for_refusal(refusal: Refusal) -> Reply {
        match refusal {
            Refusal::Forbidden | Refusal::Auth => Reply::NotAllowed,
            Refusal::Unreachable => Reply::HostUnreachable,
            Refusal::Refused => Reply::ConnectionRefused,
            Refusal::Timeout => Reply::TtlExpired,
            Refusal::BadRequest | Refusal::Version => Reply::CommandNotSupported,
            Refusal::TooManyStreams
            | Refusal::GoingAway
            | Refusal::Other
            | Refusal::TooManyConnections
            | Refusal::TooManySessions
            | Refusal::TooManyDials => Reply::GeneralFailure,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general failure",
            Reply::NotAllowed => "connection not allowed by ruleset",
            Reply::NetworkUnreachable => "network unreachable",
            Reply::HostUnreachable => "host unreachable",
            Reply::ConnectionRefused => "connection refused",
            Reply::TtlExpired => "TTL expired",
            Reply::CommandNotSupported => "command not supported",
            Reply::AddressTypeNotSupported => "address type not supported",
        })
    }
}

/// A SOCKS address: an IP address or a name (resolved by whoever dials it), with a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// IPv4 or IPv6
    Ip(SocketAddr),
    /// a domain name of 1 to 255 bytes
    Domain(String, u16),
}

/// Why bytes are not a SOCKS address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrError {
    /// more bytes are needed
    Short,
    /// an address type RFC 1928 does not define
    BadType(u8),
    /// an empty name, or one that is not UTF-8 text
    BadName,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::Short => f.write_str("truncated address"),
            AddrError::BadType(t) => write!(f, "unknown address type 0x{t:02x}"),
            AddrError::BadName => f.write_str("bad domain name"),
        }
    }
}

impl std::error::Error for AddrError {}

impl Addr {
    /// The host (an IP literal without brackets, or the name) and the port.
    pub fn host_port(&self) -> (String, u16) {
        match self {
            Addr::Ip(sa) => (sa.ip().to_string(), sa.port()),
            Addr::Domain(name, port) => (name.clone(), *port),
        }
    }

    /// The address for `host:port` text parts: an IP literal (brackets allowed) or a name.
    /// `None` for an empty name or one longer than 255 bytes.
    pub fn from_host_port(host: &str, port: u16) -> Option<Addr> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Addr::Ip(SocketAddr::new(ip, port)));
        }
        if host.is_empty() || host.len() > 255 {
            return None;
        }
        Some(Addr::Domain(host.to_string(), port))
    }

    /// Appends `ATYP ADDR PORT`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Addr::Ip(SocketAddr::V4(a)) => {
                out.push(atyp::IPV4);
                out.extend_from_slice(&a.ip().octets());
            }
            Addr::Ip(SocketAddr::V6(a)) => {
                out.push(atyp::IPV6);
                out.extend_from_slice(&a.ip().octets());
            }
            Addr::Domain(name, _) => {
                out.push(atyp::DOMAIN);
                // from_host_port and decode hold names to 255 bytes
                let n = name.len().min(255);
                out.push(n as u8);
                out.extend_from_slice(&name.as_bytes()[..n]);
            }
        }
        let port = match self {
            Addr::Ip(sa) => sa.port(),
            Addr::Domain(_, p) => *p,
        };
        out.extend_from_slice(&port.to_be_bytes());
    }

    /// Reads `ATYP ADDR PORT` from the start of `buf`: the address and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<(Addr, usize), AddrError> {
        let t = *buf.first().ok_or(AddrError::Short)?;
        let (addr_len, start) = match t {
            atyp::IPV4 => (4, 1),
            atyp::IPV6 => (16, 1),
            atyp::DOMAIN => (*buf.get(1).ok_or(AddrError::Short)? as usize, 2),
            other => return Err(AddrError::BadType(other)),
        };
        let end = start + addr_len;
        if buf.len() < end + 2 {
            return Err(AddrError::Short);
        }
        let port = u16::from_be_bytes([buf[end], buf[end + 1]]);
        let raw = &buf[start..end];
        let addr = match t {
            atyp::IPV4 => {
                let o: [u8; 4] = raw.try_into().map_err(|_| AddrError::Short)?;
                Addr::Ip(SocketAddr::new(Ipv4Addr::from(o).into(), port))
            }
            atyp::IPV6 => {
                let o: [u8; 16] = raw.try_into().map_err(|_| AddrError::Short)?;
                Addr::Ip(SocketAddr::new(Ipv6Addr::from(o).into(), port))
            }
            _ => {
                let name = std::str::from_utf8(raw).map_err(|_| AddrError::BadName)?;
                if name.is_empty() {
                    return Err(AddrError::BadName);
                }
                Addr::Domain(name.to_string(), port)
            }
        };
        Ok((addr, end + 2))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, port) = self.host_port();
        f.write_str(&crate::dial::host_port(&host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_truncation_is_short() {
        for a in [
            Addr::Ip("1.2.3.4:80".parse().unwrap()),
            Addr::Ip("[::1]:443".parse().unwrap()),
            Addr::Domain("example.com".into(), 53),
        ] {
            let mut out = Vec::new();
            a.encode(&mut out);
            out.extend_from_slice(b"rest");
            let (back, n) = Addr::decode(&out).unwrap();
            assert_eq!((back, &out[n..]), (a.clone(), &b"rest"[..]));
            for cut in 0..n {
                assert_eq!(
                    Addr::decode(&out[..cut]),
                    Err(AddrError::Short),
                    "{a} {cut}"
                );
            }
        }
        assert_eq!(Addr::decode(&[2, 0, 0]), Err(AddrError::BadType(2)));
        assert_eq!(Addr::decode(&[3, 0, 0, 80]), Err(AddrError::BadName));
        assert_eq!(
            Addr::from_host_port("[::1]", 1),
            Some(Addr::Ip("[::1]:1".parse().unwrap()))
        );
        assert_eq!(Addr::from_host_port("", 1), None);
    }

    #[test]
    fn every_refusal_has_a_reply_code() {
        assert_eq!(Reply::for_refusal(Refusal::Forbidden), Reply::NotAllowed);
        assert_eq!(Reply::for_refusal(Refusal::Timeout), Reply::TtlExpired);
        assert_eq!(
            Reply::for_refusal(Refusal::Refused),
            Reply::ConnectionRefused
        );
        for b in 0..=8 {
            assert_eq!(Reply::from_u8(b).map(|r| r as u8), Some(b));
        }
        assert_eq!(Reply::from_u8(9), None);
    }
}
