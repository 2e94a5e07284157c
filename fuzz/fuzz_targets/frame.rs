//! Arbitrary bytes as one WebSocket message through the mux frame decoder.
//!
//! Properties: nothing panics; a frame that decodes encodes back to the same bytes, except for
//! text fields longer than a frame can carry (never produced by decode).
//!
//! Run with `cargo +nightly fuzz run frame` from the repository root.
#![no_main]

use burrow::tunnel::frame::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(frame.to_bytes(), data, "decode then encode changed the frame");
    }
});
