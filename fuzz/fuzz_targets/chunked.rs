//! Arbitrary bytes, read in pieces, through the chunked body copier.
//!
//! The first input byte is the read buffer size. Properties: nothing panics; what is written is
//! always a prefix of the input (bytes go out verbatim, and a line is written only once it is
//! known to be valid); an accepted body is exactly the bytes copied, the rest stays unread, and
//! the copied bytes alone are accepted again, whatever the piece size.
//!
//! Run with `cargo +nightly fuzz run chunked` from the repository root.
#![no_main]

use burrow::http::body::{BodyError, Framing, copy_body};
use futures_lite::future::block_on;
use futures_lite::io::{AsyncReadExt, BufReader, Cursor};
use libfuzzer_sys::fuzz_target;

/// Copies `input` as a chunked body: the result, what was written, what stayed unread.
fn copy(input: &[u8], piece: usize) -> (Result<u64, BodyError>, Vec<u8>, Vec<u8>) {
    block_on(async {
        let mut r = BufReader::with_capacity(piece, Cursor::new(input));
        let mut out = Vec::new();
        let res = copy_body(&mut r, &mut out, Framing::Chunked).await;
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.expect("reading a cursor");
        (res, out, rest)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(size).max(1);
    let (res, out, rest) = copy(input, piece);
    assert!(
        input.starts_with(&out),
        "output is not a prefix of the input"
    );
    let Ok(n) = res else {
        return;
    };
    assert_eq!(out.len() as u64, n, "count differs from bytes written");
    assert_eq!(
        [&out[..], &rest[..]].concat(),
        input,
        "bytes lost or changed"
    );
    let (again, out2, rest2) = copy(&out, 1);
    assert_eq!(again.ok(), Some(n), "accepted body refused byte by byte");
    assert_eq!(out2, out);
    assert!(rest2.is_empty());
});
