//! Arbitrary bytes through the SOCKS5 server's parsers and the UDP datagram header.
//!
//! Properties: nothing panics; a parser never claims more bytes than it was given, and every
//! prefix of a complete message asks for more (so the incremental reader never decides early);
//! a parsed request or datagram is written back to the same bytes' meaning.
//!
//! Run with `cargo +nightly fuzz run socks` from the repository root.
#![no_main]

use burrow::socks::server::{Parsed, parse_auth, parse_greeting, parse_request};
use burrow::socks::udp;
use libfuzzer_sys::fuzz_target;

fn check<T>(data: &[u8], parse: fn(&[u8]) -> Parsed<T>) -> Option<(T, usize)> {
    let (value, len) = parse(data).ok()??;
    assert!(len <= data.len());
    for cut in 0..len {
        assert!(matches!(parse(&data[..cut]), Ok(None)), "decided at {cut} of {len}");
    }
    Some((value, len))
}

fuzz_target!(|data: &[u8]| {
    check(data, parse_greeting);
    check(data, parse_auth);
    if let Some((req, len)) = check(data, parse_request) {
        let mut out = data[..3].to_vec();
        req.addr.encode(&mut out);
        assert_eq!(parse_request(&out).ok().flatten(), Some((req, len)));
    }
    if let Ok((addr, payload)) = udp::decode(data) {
        let again = udp::encode(&addr, payload);
        let (a2, p2) = udp::decode(&again).expect("written back");
        assert_eq!((a2, p2), (addr, payload));
    }
});
