//! The header of a datagram relayed by a SOCKS5 UDP ASSOCIATE (RFC 1928 section 7):
//! `RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA`. No I/O.
//!
//! burrow does not reassemble fragments: a datagram with `FRAG != 0` is dropped, which RFC 1928
//! allows ("an implementation that does not support fragmentation MUST drop any datagram
//! whose FRAG field is other than X'00'").

use super::wire::{Addr, AddrError};
use std::fmt;

/// The longest header: RSV FRAG, then an address with a 255-byte name.
pub const HEADER_MAX: usize = 3 + 1 + 1 + 255 + 2;

/// Why a datagram from the client is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// shorter than its header
    Short,
    /// a fragment (FRAG != 0): not supported
    Fragment(u8),
    /// an address that does not parse
    Addr(AddrError),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short => f.write_str("truncated datagram header"),
            HeaderError::Fragment(n) => write!(f, "fragment {n} (fragments are not supported)"),
            HeaderError::Addr(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for HeaderError {}

/// The destination and the payload of a datagram from the client.
pub fn decode(buf: &[u8]) -> Result<(Addr, &[u8]), HeaderError> {
    if buf.len() < 4 {
        return Err(HeaderError::Short);
    }
    // RSV (two bytes) has no meaning: not checked, as in the request.
    if buf[2] != 0 {
        return Err(HeaderError::Fragment(buf[2]));
    }
    let (addr, n) = Addr::decode(&buf[3..]).map_err(|e| match e {
        AddrError::Short => HeaderError::Short,
        e => HeaderError::Addr(e),
    })?;
    Ok((addr, &buf[3 + n..]))
}

/// A datagram for the client: the header naming where `payload` came from, then the payload.
pub fn encode(from: &Addr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + 19 + payload.len());
    out.extend_from_slice(&[0, 0, 0]);
    from.encode(&mut out);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_round_trip_and_bad_ones_are_named() {
        for from in [
            Addr::Ip("127.0.0.1:53".parse().unwrap()),
            Addr::Ip("[::1]:5353".parse().unwrap()),
            Addr::Domain("localhost".into(), 7),
        ] {
            for payload in [&b""[..], b"x", &[7u8; 1000]] {
                let d = encode(&from, payload);
                assert_eq!(decode(&d), Ok((from.clone(), payload)));
            }
            let d = encode(&from, b"");
            for cut in 0..d.len() {
                assert_eq!(decode(&d[..cut]), Err(HeaderError::Short), "{from} {cut}");
            }
        }
        assert_eq!(
            decode(&[0, 0, 1, 1, 127, 0, 0, 1, 0, 53]),
            Err(HeaderError::Fragment(1))
        );
        assert_eq!(
            decode(&[0, 0, 0, 9, 1, 2]),
            Err(HeaderError::Addr(AddrError::BadType(9)))
        );
    }
}
