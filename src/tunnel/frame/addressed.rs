//! The payload of a DGRAM on a UDP_ANY flow (a SOCKS5 UDP association through the tunnel):
//! the address the datagram goes to (opener → receiver) or came from (receiver → opener) in
//! front of the datagram.
//!
//! ```text
//! payload = port:u16  host:text  datagram
//! ```

use super::{FrameError, MAX_TEXT, put_text};
use async_tungstenite::tungstenite::Bytes;

/// Encodes `host:port` and `datagram` as one UDP_ANY DGRAM payload. `None` when the host is
/// empty or longer than a text field (it would be cut, and sent elsewhere).
pub fn encode_addressed(host: &str, port: u16, datagram: &[u8]) -> Option<Vec<u8>> {
    if host.is_empty() || host.len() > MAX_TEXT {
        return None;
    }
    let mut out = Vec::with_capacity(3 + host.len() + datagram.len());
    out.extend_from_slice(&port.to_be_bytes());
    put_text(&mut out, host);
    out.extend_from_slice(datagram);
    Some(out)
}

/// Reads a UDP_ANY DGRAM payload: the host, the port and the datagram (a slice of `payload`).
pub fn decode_addressed(payload: &Bytes) -> Result<(String, u16, Bytes), FrameError> {
    let [p0, p1, n, ..] = payload[..] else {
        return Err(FrameError::Truncated);
    };
    let port = u16::from_be_bytes([p0, p1]);
    let end = 3 + n as usize;
    if payload.len() < end {
        return Err(FrameError::Truncated);
    }
    let host = std::str::from_utf8(&payload[3..end])
        .map_err(|_| FrameError::Invalid("text is not utf-8"))?;
    if host.is_empty() || port == 0 {
        return Err(FrameError::Invalid("empty datagram address"));
    }
    Ok((host.to_string(), port, payload.slice(end..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressed_datagrams_round_trip_and_bad_ones_are_refused() {
        let enc = encode_addressed("example.com", 53, b"query").unwrap();
        let (host, port, data) = decode_addressed(&Bytes::from(enc.clone())).unwrap();
        assert_eq!(
            (host.as_str(), port, &data[..]),
            ("example.com", 53, &b"query"[..])
        );
        let empty = encode_addressed("::1", 9, b"").unwrap();
        assert_eq!(decode_addressed(&Bytes::from(empty)).unwrap().2.len(), 0);
        for cut in 0..14 {
            assert!(decode_addressed(&Bytes::copy_from_slice(&enc[..cut])).is_err());
        }
        assert!(encode_addressed("", 1, b"x").is_none());
        assert!(encode_addressed(&"a".repeat(256), 1, b"x").is_none());
        assert!(decode_addressed(&Bytes::from_static(&[0, 0, 1, b'a'])).is_err());
    }
}
