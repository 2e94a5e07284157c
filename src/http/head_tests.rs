use super::*;
use proptest::prelude::*;

/// Delimits `raw` with a fresh [`HeadBuf`] fed in one piece, then parses it as a request.
fn request(raw: &str) -> Result<RequestHead, HeadError> {
    let mut buf = HeadBuf::default();
    let len = buf.feed(raw.as_bytes())?.expect("test head is incomplete");
    parse_request(&buf.buffered()[..len])
}

fn response(raw: &str) -> Result<ResponseHead, HeadError> {
    let mut buf = HeadBuf::default();
    let len = buf.feed(raw.as_bytes())?.expect("test head is incomplete");
    parse_response(&buf.buffered()[..len])
}

fn authority(host: &str, port: u16) -> Target {
    Target::Authority {
        host: host.into(),
        port,
    }
}

fn absolute(scheme: &str, host: &str, port: u16, path: &str) -> Target {
    Target::Absolute {
        scheme: scheme.into(),
        host: host.into(),
        port,
        path: path.into(),
    }
}

fn origin(path: &str) -> Target {
    Target::Origin(path.into())
}

#[test]
fn requests_accepted() {
    use Version::*;
    #[rustfmt::skip]
    let cases = [
        ("CONNECT example.com:443 HTTP/1.1\r\n\r\n", "CONNECT", authority("example.com", 443), Http11),
        ("CONNECT [::1]:443 HTTP/1.1\r\n\r\n", "CONNECT", authority("::1", 443), Http11),
        ("CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n", "CONNECT", authority("2001:db8::1", 8443), Http11),
        ("CONNECT 10.0.0.1:65535 HTTP/1.0\r\n\r\n", "CONNECT", authority("10.0.0.1", 65535), Http10),
        ("CONNECT h:1 HTTP/1.1\n\n", "CONNECT", authority("h", 1), Http11),
        ("GET http://example.com/ HTTP/1.1\r\n\r\n", "GET", absolute("http", "example.com", 80, "/"), Http11),
        ("GET http://example.com HTTP/1.1\r\n\r\n", "GET", absolute("http", "example.com", 80, "/"), Http11),
        ("GET http://example.com:8080/a/b HTTP/1.1\r\n\r\n", "GET", absolute("http", "example.com", 8080, "/a/b"), Http11),
        ("GET http://example.com:/x HTTP/1.1\r\n\r\n", "GET", absolute("http", "example.com", 80, "/x"), Http11),
        ("GET HTTPS://Example.com/q?a=1&b=2 HTTP/1.1\r\n\r\n", "GET", absolute("https", "Example.com", 443, "/q?a=1&b=2"), Http11),
        ("GET https://h:8443 HTTP/1.1\r\n\r\n", "GET", absolute("https", "h", 8443, "/"), Http11),
        ("GET http://h?x=1 HTTP/1.1\r\n\r\n", "GET", absolute("http", "h", 80, "/?x=1"), Http11),
        ("POST http://[::1]:81/p HTTP/1.0\r\n\r\n", "POST", absolute("http", "::1", 81, "/p"), Http10),
        ("GET /index.html?q=1 HTTP/1.1\r\n\r\n", "GET", origin("/index.html?q=1"), Http11),
        ("GET / HTTP/1.0\r\n\r\n", "GET", origin("/"), Http10),
        ("OPTIONS * HTTP/1.1\r\n\r\n", "OPTIONS", Target::Asterisk, Http11),
        ("X-Custom_1! /x HTTP/1.1\r\n\r\n", "X-Custom_1!", origin("/x"), Http11),
        // RFC 9112 section 2.2: empty lines before the request line are ignored.
        ("\r\n\nGET / HTTP/1.1\r\n\r\n", "GET", origin("/"), Http11),
        ("GET / HTTP/1.1\r\n\n", "GET", origin("/"), Http11),
    ];
    assert!(!cases.is_empty());
    for (raw, method, target, version) in cases {
        let head = request(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        let want = RequestHead {
            method: method.into(),
            target,
            version,
            headers: Headers::default(),
        };
        assert_eq!(head, want, "{raw:?}");
    }
}

#[test]
fn requests_refused() {
    use HeadError::*;
    #[rustfmt::skip]
    let cases = [
        ("CONNECT example.com HTTP/1.1\r\n\r\n", Malformed("missing port")),
        ("CONNECT example.com: HTTP/1.1\r\n\r\n", Malformed("bad port")),
        ("CONNECT example.com:0 HTTP/1.1\r\n\r\n", Malformed("port out of range")),
        ("CONNECT example.com:99999 HTTP/1.1\r\n\r\n", Malformed("port out of range")),
        ("CONNECT example.com:65536 HTTP/1.1\r\n\r\n", Malformed("port out of range")),
        ("CONNECT example.com:+443 HTTP/1.1\r\n\r\n", Malformed("bad port")),
        ("CONNECT ::1:443 HTTP/1.1\r\n\r\n", Malformed("bad host")),
        ("CONNECT [::1 HTTP/1.1\r\n\r\n", Malformed("unclosed '[' in host")),
        ("CONNECT [::g]:443 HTTP/1.1\r\n\r\n", Malformed("bad ipv6 literal")),
        ("CONNECT [::1]443 HTTP/1.1\r\n\r\n", Malformed("junk after ipv6 literal")),
        ("CONNECT [::1] HTTP/1.1\r\n\r\n", Malformed("missing port")),
        ("CONNECT /path HTTP/1.1\r\n\r\n", Malformed("CONNECT target is not host:port")),
        ("CONNECT http://example.com:443/ HTTP/1.1\r\n\r\n", Malformed("CONNECT target is not host:port")),
        ("CONNECT u@example.com:443 HTTP/1.1\r\n\r\n", Malformed("bad host")),
        // Methods are case-sensitive: this is an unknown method with an authority target.
        ("connect example.com:443 HTTP/1.1\r\n\r\n", Malformed("request target is not origin or absolute form")),
        ("GET example.com:80 HTTP/1.1\r\n\r\n", Malformed("request target is not origin or absolute form")),
        ("GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n", Malformed("userinfo in request target")),
        ("GET ftp://example.com/ HTTP/1.1\r\n\r\n", Malformed("request target scheme is not http or https")),
        ("GET http:///x HTTP/1.1\r\n\r\n", Malformed("bad host")),
        ("GET http://exa mple.com/ HTTP/1.1\r\n\r\n", Malformed("request line is not method, target, version")),
        ("GET /a#frag HTTP/1.1\r\n\r\n", Malformed("fragment in request target")),
        ("GET * HTTP/1.1\r\n\r\n", Malformed("'*' target is for OPTIONS only")),
        ("GET /caf\u{e9} HTTP/1.1\r\n\r\n", Malformed("bad request target")),
        ("GET  / HTTP/1.1\r\n\r\n", Malformed("request line is not method, target, version")),
        ("GET / HTTP/1.1 \r\n\r\n", Malformed("request line is not method, target, version")),
        ("GET /\tHTTP/1.1\r\n\r\n", Malformed("request line is not method, target, version")),
        ("GET /\r HTTP/1.1\r\n\r\n", Malformed("bad request target")),
        ("GET / \r\n\r\n", Malformed("bad http version")),
        ("GET /\r\n\r\n", Malformed("request line is not method, target, version")),
        ("G(T / HTTP/1.1\r\n\r\n", Malformed("bad method")),
        ("GET / FOO\r\n\r\n", Malformed("bad http version")),
        ("GET / http/1.1\r\n\r\n", Malformed("bad http version")),
        ("GET / HTTP/1.10\r\n\r\n", Malformed("bad http version")),
        ("GET / HTTP/2.0\r\n\r\n", UnsupportedVersion),
        ("GET / HTTP/0.9\r\n\r\n", UnsupportedVersion),
        ("GET / HTTP/1.2\r\n\r\n", UnsupportedVersion),
        ("PRI * HTTP/2.0\r\n\r\n", UnsupportedVersion),
        ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", Malformed("bad header name")),
        ("GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", Malformed("bad header name")),
        ("GET / HTTP/1.1\r\n: x\r\n\r\n", Malformed("bad header name")),
        ("GET / HTTP/1.1\r\nNoColon\r\n\r\n", Malformed("header line has no colon")),
        ("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", Malformed("obsolete line folding")),
        ("GET / HTTP/1.1\r\n\tA: b\r\n\r\n", Malformed("obsolete line folding")),
        ("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", Malformed("bad header value")),
        ("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", Malformed("bad header value")),
        ("GET / HTTP/1.1\r\nA: b\x07\r\n\r\n", Malformed("bad header value")),
        ("GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n", Malformed("bad header value")),
        ("GET / HTTP/1.1\r\nA: b\r\r\n\r\n", Malformed("bad header value")),
    ];
    assert!(!cases.is_empty());
    for (raw, want) in cases {
        assert_eq!(request(raw), Err(want), "{raw:?}");
    }
}

#[test]
fn header_fields() {
    let raw = "GET / HTTP/1.1\r\nHost: example.com\r\nX-Empty:\r\nX-Pad: \t a  b \t\r\n\
               x-utf8: caf\u{e9} \u{2713}\nconnection: keep-alive\r\nConnection: Upgrade\r\n\r\n";
    let head = request(raw).unwrap();
    let fields: Vec<_> = head.headers.iter().collect();
    assert_eq!(
        fields,
        [
            ("Host", "example.com"),
            ("X-Empty", ""),
            ("X-Pad", "a  b"),
            ("x-utf8", "caf\u{e9} \u{2713}"),
            ("connection", "keep-alive"),
            ("Connection", "Upgrade"),
        ]
    );
    let invalid_utf8 = b"GET / HTTP/1.1\r\nA: \xff\r\n\r\n";
    assert_eq!(
        parse_request(invalid_utf8),
        Err(HeadError::Malformed("bad header value"))
    );
}

#[test]
fn headers_methods() {
    let mut h = Headers::default();
    assert!(h.is_empty());
    h.push("Connection", "keep-alive, Upgrade");
    h.push("Host", "a");
    h.push("connection", "close");
    assert_eq!(h.len(), 3);
    assert_eq!(h.get("HOST"), Some("a"));
    assert_eq!(h.get("CONNECTION"), Some("keep-alive, Upgrade"));
    assert_eq!(h.get("missing"), None);
    assert_eq!(
        h.get_all("connection").collect::<Vec<_>>(),
        ["keep-alive, Upgrade", "close"]
    );
    assert!(h.contains_token("Connection", "upgrade"));
    assert!(h.contains_token("Connection", "CLOSE"));
    assert!(!h.contains_token("Connection", "keep"));
    assert!(!h.contains_token("Host", "upgrade"));

    h.set("CONNECTION", "close");
    assert_eq!(
        h.iter().collect::<Vec<_>>(),
        [("CONNECTION", "close"), ("Host", "a")]
    );
    h.set("X-New", "1");
    assert_eq!(h.get("x-new"), Some("1"));
    h.remove("host");
    h.remove("absent");
    assert_eq!(
        h.iter().collect::<Vec<_>>(),
        [("CONNECTION", "close"), ("X-New", "1")]
    );
}

#[test]
fn responses() {
    use HeadError::*;
    use Version::*;
    #[rustfmt::skip]
    let ok = [
        ("HTTP/1.0 200 Connection established\r\n\r\n", Http10, 200, "Connection established"),
        ("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", Http11, 407, "Proxy Authentication Required"),
        ("HTTP/1.1 200\r\n\r\n", Http11, 200, ""),
        ("HTTP/1.1 200 \r\n\r\n", Http11, 200, ""),
        ("HTTP/1.1 100 Continue\n\n", Http11, 100, "Continue"),
        ("HTTP/1.1 599 a\tb  \r\n\r\n", Http11, 599, "a\tb  "),
        ("\r\nHTTP/1.1 204 No Content\r\n\r\n", Http11, 204, "No Content"),
    ];
    for (raw, version, status, reason) in ok {
        let head = response(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        let want = ResponseHead {
            version,
            status,
            reason: reason.into(),
            headers: Headers::default(),
        };
        assert_eq!(head, want, "{raw:?}");
    }

    #[rustfmt::skip]
    let refused = [
        ("HTTP/1.1 20 OK\r\n\r\n", Malformed("status code is not three digits")),
        ("HTTP/1.1 2000 OK\r\n\r\n", Malformed("status code is not three digits")),
        ("HTTP/1.1 2x0 OK\r\n\r\n", Malformed("status code is not three digits")),
        ("HTTP/1.1 +20 OK\r\n\r\n", Malformed("status code is not three digits")),
        ("HTTP/1.1  200 OK\r\n\r\n", Malformed("status code is not three digits")),
        ("HTTP/1.1 200\tOK\r\n\r\n", Malformed("status code is not three digits")),
        ("HTTP/1.1 099 Low\r\n\r\n", Malformed("status code is not 100 to 599")),
        ("HTTP/1.1 600 High\r\n\r\n", Malformed("status code is not 100 to 599")),
        ("HTTP/1.1\r\n\r\n", Malformed("status line has no status code")),
        ("XHTTP/1.1 200 OK\r\n\r\n", Malformed("bad http version")),
        ("GET / HTTP/1.1\r\n\r\n", Malformed("bad http version")),
        ("junk HTTP/1.1 200 OK\r\n\r\n", Malformed("bad http version")),
        ("HTTP/1.1 200 O\0K\r\n\r\n", Malformed("bad reason phrase")),
        ("HTTP/1.1 200 OK\r\nA : b\r\n\r\n", Malformed("bad header name")),
        ("HTTP/2.0 200 OK\r\n\r\n", UnsupportedVersion),
    ];
    for (raw, want) in refused {
        assert_eq!(response(raw), Err(want), "{raw:?}");
    }

    let head =
        response("HTTP/1.1 407 Nope\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n").unwrap();
    assert_eq!(
        head.headers.get("proxy-authenticate"),
        Some("Basic realm=\"x\"")
    );
}

#[test]
fn parse_wants_exactly_one_head() {
    fn err<T>(why: &'static str) -> Result<T, HeadError> {
        Err(HeadError::Malformed(why))
    }
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\n"),
        err("head does not end with an empty line")
    );
    assert_eq!(
        parse_request(b""),
        err("head does not end with an empty line")
    );
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\n\r\nx"),
        err("bytes after the end of the head")
    );
    assert_eq!(
        parse_response(b"HTTP/1.1 200 OK\r\n\r\n\r\n"),
        err("bytes after the end of the head")
    );
}

#[test]
fn errors_map_to_status_and_display() {
    let cases = [
        (
            HeadError::Malformed("bad port"),
            400,
            "malformed http head: bad port",
        ),
        (HeadError::UriTooLong, 414, "request line too long"),
        (HeadError::HeadersTooLarge, 431, "http head too large"),
        (
            HeadError::UnsupportedVersion,
            505,
            "unsupported http version",
        ),
    ];
    for (err, status, text) in cases {
        assert_eq!(err.status(), status);
        assert_eq!(err.to_string(), text);
    }
}

/// Feeds `pieces` until the buffer answers something other than "need more".
fn feed_all<'a>(
    buf: &mut HeadBuf,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<usize>, HeadError> {
    for piece in pieces {
        if let Some(len) = buf.feed(piece)? {
            return Ok(Some(len));
        }
    }
    Ok(None)
}

#[test]
fn endless_request_line_is_refused_while_reading() {
    let piece = [b'A'; 100];
    let mut buf = HeadBuf::default();
    buf.feed(b"GET /").unwrap();
    let err = feed_all(&mut buf, std::iter::repeat_n(&piece[..], 1000)).unwrap_err();
    assert_eq!(err, HeadError::UriTooLong);
    assert!(
        buf.buffered().len() <= MAX_LINE + 1 + piece.len(),
        "{}",
        buf.buffered().len()
    );
    // Refused for good: more data is not buffered.
    let len = buf.buffered().len();
    assert_eq!(buf.feed(b"\r\n\r\n"), Err(HeadError::UriTooLong));
    assert_eq!(buf.buffered().len(), len);
}

#[test]
fn endless_header_line_is_refused_while_reading() {
    let piece = [b'v'; 64];
    let mut buf = HeadBuf::default();
    buf.feed(b"CONNECT a:1 HTTP/1.1\r\nX: ").unwrap();
    let err = feed_all(&mut buf, std::iter::repeat_n(&piece[..], 1000)).unwrap_err();
    assert_eq!(err, HeadError::HeadersTooLarge);
    assert!(
        buf.buffered().len() <= 30 + MAX_LINE + 1 + piece.len(),
        "{}",
        buf.buffered().len()
    );
}

#[test]
fn line_length_limit_is_exact() {
    let line = |len: usize, ending: &str| {
        let mut raw = format!(
            "GET /{}",
            "a".repeat(len - "GET /".len() - " HTTP/1.1".len())
        );
        raw.push_str(" HTTP/1.1");
        raw.push_str(ending);
        raw.push_str("\r\n");
        raw
    };
    assert!(request(&line(MAX_LINE, "\r\n")).is_ok());
    assert!(request(&line(MAX_LINE, "\n")).is_ok());
    assert_eq!(
        request(&line(MAX_LINE + 1, "\r\n")),
        Err(HeadError::UriTooLong)
    );
    assert_eq!(
        request(&line(MAX_LINE + 1, "\n")),
        Err(HeadError::UriTooLong)
    );

    // A trailing CR may be the start of CR LF, so MAX_LINE bytes plus CR are still waiting...
    let mut buf = HeadBuf::default();
    let mut raw = vec![b'a'; MAX_LINE];
    raw.push(b'\r');
    assert_eq!(buf.feed(&raw), Ok(None));
    // ...but a byte after it settles it.
    assert_eq!(buf.feed(b"x"), Err(HeadError::UriTooLong));

    let field = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(MAX_LINE - 3));
    assert!(request(&field).is_ok());
    let field = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(MAX_LINE - 2));
    assert_eq!(request(&field), Err(HeadError::HeadersTooLarge));
}

#[test]
fn too_many_headers() {
    let head = |n: usize| {
        let fields: String = (0..n).map(|i| format!("X-{i}: {i}\r\n")).collect();
        format!("GET / HTTP/1.1\r\n{fields}\r\n")
    };
    assert_eq!(
        request(&head(MAX_HEADERS)).unwrap().headers.len(),
        MAX_HEADERS
    );
    assert_eq!(
        request(&head(MAX_HEADERS + 1)),
        Err(HeadError::HeadersTooLarge)
    );
}

#[test]
fn head_over_max_head_is_refused() {
    let value = "v".repeat(MAX_LINE - 10);
    let mut raw = String::from("GET / HTTP/1.1\r\n");
    for i in 0..(MAX_HEAD / MAX_LINE + 1) {
        raw.push_str(&format!("X-{i}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    assert!(raw.len() > MAX_HEAD);
    assert_eq!(request(&raw), Err(HeadError::HeadersTooLarge));

    // Fed in pieces, it is refused before much more than MAX_HEAD is buffered.
    let mut buf = HeadBuf::default();
    let err = feed_all(&mut buf, raw.as_bytes().chunks(1000)).unwrap_err();
    assert_eq!(err, HeadError::HeadersTooLarge);
    assert!(buf.buffered().len() < MAX_HEAD + 1000);

    // Endless empty lines before the request line count too.
    let mut buf = HeadBuf::default();
    let err = feed_all(&mut buf, std::iter::repeat_n(&b"\r\n"[..], MAX_HEAD)).unwrap_err();
    assert_eq!(err, HeadError::HeadersTooLarge);
    assert!(buf.buffered().len() <= MAX_HEAD);
}

#[test]
fn byte_at_a_time_matches_whole_feed() {
    let raw = b"\r\nCONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\nProxy-Authorization: Basic eDp5\r\n\r\n\
                \x16\x03\x01\x00\xa5client hello\r\n\r\n";
    let mut whole = HeadBuf::default();
    let len = whole.feed(raw).unwrap().unwrap();

    let mut bytes = HeadBuf::default();
    let mut done = None;
    for (i, byte) in raw.iter().enumerate() {
        let got = bytes.feed(std::slice::from_ref(byte)).unwrap();
        if i + 1 < len {
            assert_eq!(got, None, "complete too early, at byte {i}");
        } else {
            assert_eq!(got, Some(len));
            done.get_or_insert(i);
        }
    }
    assert_eq!(done, Some(len - 1));
    // Nothing after the head is lost.
    assert_eq!(bytes.buffered(), raw);
    assert_eq!(
        &bytes.buffered()[len..],
        b"\x16\x03\x01\x00\xa5client hello\r\n\r\n"
    );
    let head = parse_request(&bytes.buffered()[..len]).unwrap();
    assert_eq!(head, parse_request(&whole.buffered()[..len]).unwrap());
    assert_eq!(head.target, authority("::1", 443));
    assert_eq!(head.headers.get("host"), Some("[::1]:443"));
    assert_eq!(bytes.into_inner(), raw);
}

#[test]
fn crlf_split_across_feeds() {
    let mut buf = HeadBuf::default();
    assert_eq!(buf.feed(b"GET / HTTP/1.1\r"), Ok(None));
    assert_eq!(buf.feed(b"\nA: b\r\n\r"), Ok(None));
    assert_eq!(buf.feed(b"\nbody"), Ok(Some(24)));
    assert_eq!(buf.feed(b"more"), Ok(Some(24)));
    assert_eq!(&buf.buffered()[24..], b"bodymore");
}

#[test]
fn writers() {
    let head = RequestHead {
        method: "CONNECT".into(),
        target: authority("2001:db8::1", 443),
        version: Version::Http11,
        headers: Headers(vec![("Host".into(), "[2001:db8::1]:443".into())]),
    };
    let mut out = Vec::new();
    head.write_to(&mut out);
    assert_eq!(
        out,
        b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"
    );

    let targets = [
        (absolute("http", "h", 80, "/a?b"), "http://h/a?b"),
        (absolute("http", "h", 443, "/"), "http://h:443/"),
        (absolute("https", "::1", 443, "/"), "https://[::1]/"),
        (absolute("https", "h", 8443, "/x"), "https://h:8443/x"),
        (origin("/p?q"), "/p?q"),
        (Target::Asterisk, "*"),
    ];
    for (target, text) in targets {
        assert_eq!(target.to_string(), text);
    }
    assert_eq!(
        absolute("http", "h", 8080, "/").host_port(),
        Some(("h", 8080))
    );
    assert_eq!(authority("::1", 1).host_port(), Some(("::1", 1)));
    assert_eq!(Target::Asterisk.host_port(), None);

    let head = ResponseHead {
        version: Version::Http10,
        status: 200,
        reason: "Connection established".into(),
        headers: Headers::default(),
    };
    let mut out = Vec::new();
    head.write_to(&mut out);
    assert_eq!(out, b"HTTP/1.0 200 Connection established\r\n\r\n");
}

fn token() -> impl Strategy<Value = String> {
    "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}",
        any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    "/[A-Za-z0-9/._~%!$&'()*+,;=:@?-]{0,30}"
}

fn target() -> impl Strategy<Value = (String, Target)> {
    let method = || token().prop_filter("CONNECT needs authority-form", |m| m != "CONNECT");
    prop_oneof![
        (host(), 1..=u16::MAX)
            .prop_map(|(host, port)| ("CONNECT".into(), Target::Authority { host, port })),
        (
            method(),
            prop_oneof![Just("http"), Just("https")],
            host(),
            1..=u16::MAX,
            path()
        )
            .prop_map(|(m, scheme, host, port, path)| (
                m,
                Target::Absolute {
                    scheme: scheme.into(),
                    host,
                    port,
                    path
                }
            )),
        (method(), path()).prop_map(|(m, path)| (m, Target::Origin(path))),
        Just(("OPTIONS".into(), Target::Asterisk)),
    ]
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::Http10), Just(Version::Http11)]
}

/// Field values as the parser leaves them: no surrounding whitespace, no controls but HTAB.
fn headers() -> impl Strategy<Value = Headers> {
    let value = "([!-~\u{e9}\u{2713}]([ \t!-~\u{e9}\u{2713}]{0,20}[!-~\u{e9}\u{2713}])?)?";
    prop::collection::vec((token(), value), 0..8).prop_map(Headers)
}

/// Writes a head, follows it with tunnel bytes, and delimits it with a [`HeadBuf`] fed in `chunk`-sized pieces.
fn delimit(head: &[u8], chunk: usize) -> (usize, Vec<u8>) {
    let mut wire = head.to_vec();
    wire.extend_from_slice(b"\x16\x03tail");
    let mut buf = HeadBuf::default();
    let mut len = None;
    for piece in wire.chunks(chunk) {
        // Pieces after the head keep coming; they must be kept, not parsed.
        let got = buf.feed(piece).unwrap();
        assert!(len.is_none() || got == len, "head length changed");
        len = len.or(got);
    }
    (len.expect("head is complete"), buf.into_inner())
}

/// Random bytes, and printable noise behind a plausible start so that some of it parses.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        "(GET / |CONNECT |HTTP/1\\.[01] )[ -~\r\n\t]{0,200}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_round_trip((method, target) in target(), version in version(), headers in headers(), chunk in 1..64usize) {
        let head = RequestHead { method, target, version, headers };
        let mut out = Vec::new();
        head.write_to(&mut out);
        let (len, buffered) = delimit(&out, chunk);
        prop_assert_eq!(len, out.len());
        prop_assert_eq!(&buffered[len..], b"\x16\x03tail");
        prop_assert_eq!(parse_request(&buffered[..len]), Ok(head));
    }

    #[test]
    fn response_round_trip(
        version in version(),
        status in 100..=599u16,
        reason in "[ \t!-~\u{e9}]{0,20}",
        headers in headers(),
        chunk in 1..64usize,
    ) {
        let head = ResponseHead { version, status, reason, headers };
        let mut out = Vec::new();
        head.write_to(&mut out);
        let (len, buffered) = delimit(&out, chunk);
        prop_assert_eq!(len, out.len());
        prop_assert_eq!(parse_response(&buffered[..len]), Ok(head));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in noise(), chunk in 1..16usize) {
        let mut buf = HeadBuf::default();
        if let Ok(Some(len)) = feed_all(&mut buf, data.chunks(chunk)) {
            let head = &buf.buffered()[..len];
            if let Ok(req) = parse_request(head) {
                let mut out = Vec::new();
                req.write_to(&mut out);
                prop_assert_eq!(parse_request(&out), Ok(req));
            }
            // Only checking that it returns; whether it parses is up to the noise.
            let _unused = parse_response(head);
        }
    }
}
