//! The chunked transfer coding (RFC 9112 section 7.1), parsed strictly and copied verbatim.
//!
//! Only what the grammar allows is accepted: `1*HEXDIG` sizes, extensions of tokens and
//! quoted-strings after `;`, CRLF (never a bare LF or a lone CR), and trailer field lines with a
//! token name and a colon (no obs-fold). Anything else is [`BodyError::Malformed`] before the
//! offending line is written: a lenient parser that forwards bytes verbatim lets a client and an
//! origin disagree on where a message ends, which is request smuggling.

use super::{BodyError, read_err, write_err};
use crate::http::head::is_tchar;
use futures_lite::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Longest chunk-size line or trailer line we accept, CRLF included.
///
/// Extensions are legal but unused in practice; 4 KiB bounds what one line can make us buffer.
const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields after the last chunk, CRLFs included.
///
/// Trailers are rare (gRPC-style status fields); 16 KiB is generous and bounds the section.
const MAX_TRAILERS: usize = 16 * 1024;

/// Trailer fields that would change framing if an origin merged them into the header section
/// (RFC 9110 section 6.5.1 forbids generating them); refused rather than passed on.
const FRAMING_TRAILERS: &[&str] = &["content-length", "transfer-encoding"];

fn malformed(why: &'static str) -> BodyError {
    BodyError::Malformed(why)
}

/// The chunk size from one chunk-size line, CRLF included:
/// `1*HEXDIG *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] ) CRLF`.
pub(super) fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(malformed("chunk line does not end in crlf"));
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(malformed("chunk size is not hex digits"));
    }
    let mut size: u64 = 0;
    for &d in &line[..digits] {
        // Checked: the size is the peer's number, and leading zeros are legal.
        let v = char::from(d).to_digit(16).map(u64::from).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(v))
            .ok_or(malformed("chunk size too large"))?;
    }
    check_extensions(&line[digits..])?;
    Ok(size)
}

/// `*( BWS ";" BWS name [ BWS "=" BWS value ] )`, the part of a chunk line after the size.
fn check_extensions(mut rest: &[u8]) -> Result<(), BodyError> {
    let bad = || malformed("bad chunk extension");
    loop {
        let before = rest.len();
        rest = skip_ws(rest);
        match rest {
            // Whitespace is only allowed in front of a `;`.
            [] if rest.len() == before => return Ok(()),
            [b';', tail @ ..] => rest = skip_ws(tail),
            _ => return Err(bad()),
        }
        let name = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return Err(bad());
        }
        rest = &rest[name..];
        if let [b'=', tail @ ..] = skip_ws(rest) {
            rest = skip_ws(tail);
            rest = match rest {
                [b'"', tail @ ..] => after_quoted_string(tail).ok_or_else(bad)?,
                _ => {
                    let value = rest.iter().take_while(|&&b| is_tchar(b)).count();
                    if value == 0 {
                        return Err(bad());
                    }
                    &rest[value..]
                }
            };
        }
    }
}

/// The bytes after a quoted-string whose opening quote is already consumed, or `None` if it is
/// unterminated or holds a byte RFC 9110 section 5.6.4 does not allow.
fn after_quoted_string(mut rest: &[u8]) -> Option<&[u8]> {
    loop {
        match rest {
            [b'"', tail @ ..] => return Some(tail),
            // quoted-pair, then qdtext: any text byte but `"` (matched above) and `\`.
            [b'\\', c, tail @ ..] if is_text(*c) => rest = tail,
            [c, tail @ ..] if *c != b'\\' && is_text(*c) => rest = tail,
            _ => return None,
        }
    }
}

/// HTAB, SP, VCHAR or obs-text: what a field value or a quoted-string may hold.
fn is_text(b: u8) -> bool {
    b == b'\t' || b == b' ' || is_vchar_or_obs(b)
}

fn is_vchar_or_obs(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn skip_ws(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    b
}

/// Checks one trailer line, CRLF included. `Ok(true)`: the empty line that ends the message.
/// `field-name ":" OWS field-value OWS CRLF`; no obs-fold, no bare LF.
pub(super) fn trailer_line(line: &[u8]) -> Result<bool, BodyError> {
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(malformed("trailer line does not end in crlf"));
    };
    if line.is_empty() {
        return Ok(true);
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(malformed("trailer line has no colon"));
    };
    let name = &line[..colon];
    // A leading space (obs-fold) or a space before the colon makes the name not a token.
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(malformed("bad trailer name"));
    }
    if FRAMING_TRAILERS
        .iter()
        .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
    {
        return Err(malformed("framing field in trailers"));
    }
    let value = &line[colon + 1..];
    if !value.iter().all(|&b| is_text(b)) {
        return Err(malformed("bad trailer value"));
    }
    Ok(false)
}

/// Reads one line, up to and including its LF, into `line`: at most `max` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> Result<(), BodyError> {
    line.clear();
    loop {
        let buf = r.fill_buf().await.map_err(read_err)?;
        if buf.is_empty() {
            return Err(BodyError::Truncated);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            return Err(malformed("chunk or trailer line too long"));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(());
        }
    }
}

/// Copies a chunked body verbatim, each line checked before it is written. Returns the bytes
/// copied; bytes after the body (a pipelined request) stay in `r`.
pub(super) async fn copy_chunked<R, W>(r: &mut R, w: &mut W) -> Result<u64, BodyError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut line = Vec::with_capacity(64);
    let mut total = 0u64;
    loop {
        read_line(r, &mut line, MAX_CHUNK_LINE).await?;
        let size = chunk_size(&line)?;
        w.write_all(&line).await.map_err(write_err)?;
        total = total.saturating_add(line.len() as u64);
        if size == 0 {
            break;
        }
        total = total.saturating_add(super::copy_exact(r, w, size).await?);
        read_line(r, &mut line, 2).await?;
        if line != b"\r\n" {
            return Err(malformed("chunk data not followed by crlf"));
        }
        w.write_all(&line).await.map_err(write_err)?;
        total = total.saturating_add(2);
    }
    let mut trailers = 0usize;
    loop {
        read_line(r, &mut line, MAX_CHUNK_LINE).await?;
        trailers = trailers.saturating_add(line.len());
        if trailers > MAX_TRAILERS {
            return Err(malformed("trailers too large"));
        }
        let end = trailer_line(&line)?;
        w.write_all(&line).await.map_err(write_err)?;
        total = total.saturating_add(line.len() as u64);
        if end {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::io::{AsyncReadExt, BufReader, Cursor};
    use proptest::prelude::*;

    /// Copies a chunked body read `piece` bytes at a time: the result, what was written, and
    /// what was left unread.
    fn copy(input: &[u8], piece: usize) -> (Result<u64, BodyError>, Vec<u8>, Vec<u8>) {
        smol::block_on(async {
            let mut r = BufReader::with_capacity(piece, Cursor::new(input.to_vec()));
            let mut out = Vec::new();
            let res = copy_chunked(&mut r, &mut out).await;
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).await.unwrap();
            (res, out, rest)
        })
    }

    #[test]
    fn valid_bodies_are_copied_verbatim_and_stop_at_their_end() {
        let bodies: &[&[u8]] = &[
            b"0\r\n\r\n",
            b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n",
            b"4;ext=1\r\nWiki\r\n0\r\nX-Trailer: y\r\n\r\n",
            b"004 ; a ; b=\"q \\\" \\\\ x\"\t;c = d\r\nWiki\r\n0\r\n\r\n",
            b"A\r\n0123456789\r\n0;last\r\nA: \r\nB:1\r\nC: x\xff y \r\n\r\n",
            b"0000000000000000000001\r\nx\r\n0\r\n\r\n",
        ];
        assert!(!bodies.is_empty());
        for body in bodies {
            for piece in [1, 3, 4096] {
                let mut input = body.to_vec();
                input.extend_from_slice(b"GET /next HTTP/1.1\r\n");
                let (res, out, rest) = copy(&input, piece);
                let show = String::from_utf8_lossy(body);
                assert_eq!(res.unwrap(), body.len() as u64, "{show:?}");
                assert_eq!(&out, body, "{show:?}");
                assert_eq!(rest, b"GET /next HTTP/1.1\r\n", "{show:?}");
            }
        }
    }

    #[test]
    fn lenient_shapes_are_refused_before_they_are_written() {
        // Issue 7's list first, then neighbours of each. `ok` is the valid prefix that may be
        // written before the bad line is seen.
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n", b""),
            ("vertical tab", b"5\x0b\r\nhello\r\n0\r\n\r\n", b""),
            ("nbsp utf-8", b"5\xc2\xa0\r\nhello\r\n0\r\n\r\n", b""),
            ("nbsp latin-1", b"5\xa0\r\nhello\r\n0\r\n\r\n", b""),
            ("lone cr", b"5\r;x\r\nhello\r\n0\r\n\r\n", b""),
            ("bare lf size", b"5\nhello\r\n0\r\n\r\n", b""),
            (
                "bare lf after data",
                b"5\r\nhello\n0\r\n\r\n",
                b"5\r\nhello",
            ),
            ("bare lf last chunk", b"0\n\r\n", b""),
            ("bare lf end", b"0\r\n\n", b"0\r\n"),
            ("trailer no colon", b"0\r\nX-Trailer\r\n\r\n", b"0\r\n"),
            ("trailer bare lf", b"0\r\nX: y\n\r\n", b"0\r\n"),
            (
                "trailer obs-fold",
                b"0\r\nX: y\r\n z\r\n\r\n",
                b"0\r\nX: y\r\n",
            ),
            ("trailer space name", b"0\r\nX : y\r\n\r\n", b"0\r\n"),
            ("trailer empty name", b"0\r\n: y\r\n\r\n", b"0\r\n"),
            ("trailer control", b"0\r\nX: a\x00b\r\n\r\n", b"0\r\n"),
            (
                "trailer framing",
                b"0\r\nContent-Length: 5\r\n\r\n",
                b"0\r\n",
            ),
            ("trailer te", b"0\r\ntransfer-encoding: x\r\n\r\n", b"0\r\n"),
            ("minus", b"-5\r\n", b""),
            ("0x prefix", b"0x5\r\n", b""),
            ("leading space", b" 5\r\n", b""),
            ("trailing space", b"5 \r\n", b""),
            ("empty size", b"\r\n", b""),
            ("not hex", b"zz\r\n", b""),
            ("overflow", b"10000000000000000\r\n", b""),
            ("ext no name", b"5;\r\n", b""),
            ("ext bad name", b"5;a b\r\n", b""),
            ("ext no value", b"5;a=\r\n", b""),
            ("ext open quote", b"5;a=\"x\r\n", b""),
            ("ext bad escape", b"5;a=\"\\\x01\"\r\n", b""),
            ("ext control", b"5;a=\"\x01\"\r\n", b""),
            ("ext junk after quote", b"5;a=\"x\"y\r\n", b""),
            ("data too long", b"4\r\nWikiXX\r\n0\r\n\r\n", b"4\r\nWiki"),
            ("truncated data", b"4\r\nWi", b"4\r\nWi"),
            ("truncated line", b"4", b""),
            ("no last chunk", b"4\r\nWiki\r\n", b"4\r\nWiki\r\n"),
        ];
        assert!(!cases.is_empty());
        for (name, input, ok) in cases {
            for piece in [1, 4096] {
                let (res, out, _) = copy(input, piece);
                assert!(res.is_err(), "{name}: accepted");
                assert_eq!(
                    out,
                    *ok,
                    "{name}: wrote {:?}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    #[test]
    fn long_lines_and_trailers_are_bounded() {
        let long_ext = format!("1;{}\r\n", "a".repeat(MAX_CHUNK_LINE));
        let (res, out, _) = copy(long_ext.as_bytes(), 64);
        assert!(matches!(res, Err(BodyError::Malformed(_))));
        assert!(out.is_empty());
        let line = format!("X: {}\r\n", "v".repeat(1000));
        let many = format!("0\r\n{}\r\n", line.repeat(MAX_TRAILERS / line.len() + 1));
        let (res, _, _) = copy(many.as_bytes(), 4096);
        assert!(matches!(res, Err(BodyError::Malformed(_))));
    }

    /// A chunk-ext that RFC 9112 allows: `;name`, `;name=token`, `;name="quoted"`, with BWS.
    fn extension() -> impl Strategy<Value = String> {
        let ws = prop::sample::select(vec!["", " ", "\t", " \t "]);
        let name = "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,8}";
        let value = prop_oneof![
            Just(String::new()),
            "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,8}".prop_map(|v| format!("={v}")),
            "([ !#-\\[\\]-~]|\\\\[ -~]){0,8}".prop_map(|v| format!("=\"{v}\"")),
        ];
        (ws.clone(), ws, name, value).prop_map(|(a, b, n, v)| format!("{a};{b}{n}{v}"))
    }

    /// A valid chunked body and the chunk data it carries.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let chunk = (
            prop::collection::vec(any::<u8>(), 1..40),
            0usize..3,
            prop::collection::vec(extension(), 0..3),
            any::<bool>(),
        );
        let trailer = ("[a-zA-Z0-9-]{1,10}", "[ -~]{0,20}")
            .prop_filter("not a framing field", |(n, _)| {
                !FRAMING_TRAILERS.iter().any(|f| f.eq_ignore_ascii_case(n))
            })
            .prop_map(|(n, v)| format!("{n}:{v}\r\n"));
        (
            prop::collection::vec(chunk, 0..5),
            prop::collection::vec(extension(), 0..2),
            prop::collection::vec(trailer, 0..3),
        )
            .prop_map(|(chunks, last_ext, trailers)| {
                let mut out = Vec::new();
                for (data, zeros, exts, upper) in chunks {
                    let size = if upper {
                        format!("{:X}", data.len())
                    } else {
                        format!("{:x}", data.len())
                    };
                    out.extend_from_slice("0".repeat(zeros).as_bytes());
                    out.extend_from_slice(size.as_bytes());
                    out.extend_from_slice(exts.concat().as_bytes());
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(format!("0{}\r\n", last_ext.concat()).as_bytes());
                out.extend_from_slice(trailers.concat().as_bytes());
                out.extend_from_slice(b"\r\n");
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn valid_bodies_round_trip_verbatim(body in body(), piece in 1usize..64, tail in prop::collection::vec(any::<u8>(), 0..16)) {
            let mut input = body.clone();
            input.extend_from_slice(&tail);
            let (res, out, rest) = copy(&input, piece);
            prop_assert_eq!(res.ok(), Some(body.len() as u64));
            prop_assert_eq!(out, body);
            prop_assert_eq!(rest, tail);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_write_past_the_end(input in prop::collection::vec(any::<u8>(), 0..200), piece in 1usize..16) {
            let (res, out, rest) = copy(&input, piece);
            prop_assert!(input.starts_with(&out), "output is a prefix of the input");
            if let Ok(n) = res {
                prop_assert_eq!(out.len() as u64, n);
                prop_assert_eq!([&out[..], &rest[..]].concat(), input);
            }
        }

        #[test]
        fn a_bad_byte_in_a_size_line_is_refused(body in body(), bad in prop::sample::select(vec![b'+', b'-', b' ', 0x0b, 0xa0, b'\r', b'\n', b'g', 0])) {
            // The bad byte right after the first size digit (for `b' '`, ws that no `;` follows
            // once the line ends: placed before the CRLF only when there are no extensions).
            let at = body.iter().position(|b| !b.is_ascii_hexdigit()).unwrap();
            prop_assume!(bad != b' ' || body[at] == b'\r');
            let mut input = body[..at].to_vec();
            input.push(bad);
            input.extend_from_slice(&body[at..]);
            let (res, _, _) = copy(&input, 7);
            prop_assert!(res.is_err(), "{:?}", String::from_utf8_lossy(&input));
        }
    }
}
