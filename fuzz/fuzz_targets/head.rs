//! Arbitrary bytes, fed in pieces, through the head buffer and both parsers.
//!
//! The first input byte is the piece size. Properties: nothing panics; bytes after the head are
//! kept; a request that parses is written back to bytes that parse to the same request; the
//! body framing read from a parsed head (Content-Length, Transfer-Encoding, Connection) never
//! panics and decides the same way for the written-back head.
//!
//! Run with `cargo +nightly fuzz run head` from the repository root.
#![no_main]

use burrow::http::body::{request_framing, response_framing};
use burrow::http::head::{HeadBuf, parse_request, parse_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&size, input)) = data.split_first() else {
        return;
    };
    let size = usize::from(size).max(1);
    let mut buf = HeadBuf::default();
    let mut head_len = None;
    for piece in input.chunks(size) {
        match buf.feed(piece) {
            Ok(None) => {}
            Ok(Some(len)) => {
                assert!(head_len.is_none_or(|l| l == len), "head length changed");
                head_len = Some(len);
            }
            Err(_) => return,
        }
    }
    // Nothing fed is lost or changed, before or after the head.
    assert_eq!(buf.buffered(), input);
    let Some(len) = head_len else {
        return;
    };
    let head = &buf.buffered()[..len];

    if let Ok(request) = parse_request(head) {
        let mut out = Vec::new();
        request.write_to(&mut out);
        assert_eq!(parse_request(&out).as_ref(), Ok(&request), "{out:?}");
        let again = parse_request(&out).expect("parsed above");
        assert_eq!(
            request_framing(&request).ok(),
            request_framing(&again).ok(),
            "framing changed on a round trip"
        );
    }
    if let Ok(response) = parse_response(head) {
        let mut out = Vec::new();
        response.write_to(&mut out);
        assert_eq!(parse_response(&out).as_ref(), Ok(&response), "{out:?}");
        for method in ["GET", "HEAD", "POST"] {
            // Only that it decides without panicking: either answer is fine here.
            let _ = response_framing(method, &response);
        }
    }
});
