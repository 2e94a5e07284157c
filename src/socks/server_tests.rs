use super::*;
use futures_lite::io::{BufReader, Cursor};

fn creds() -> Credentials {
    "alice:s3cret".parse().unwrap()
}

fn auth_msg(user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut m = vec![1, user.len() as u8];
    m.extend_from_slice(user);
    m.push(pass.len() as u8);
    m.extend_from_slice(pass);
    m
}

fn request(c: u8, addr: &Addr) -> Vec<u8> {
    let mut m = vec![5, c, 0];
    addr.encode(&mut m);
    m
}

/// Every prefix of a complete message asks for more; the whole answers with its length.
fn complete_only_at_end<T: fmt::Debug>(msg: &[u8], parse: fn(&[u8]) -> Parsed<T>) -> T {
    for cut in 0..msg.len() {
        assert!(
            matches!(parse(&msg[..cut]), Ok(None)),
            "{msg:?} cut at {cut}"
        );
    }
    let mut more = msg.to_vec();
    more.extend_from_slice(b"behind");
    let (value, n) = parse(&more).unwrap().unwrap();
    assert_eq!(n, msg.len());
    value
}

#[test]
fn greetings_auth_and_requests_parse_incrementally() {
    assert_eq!(
        complete_only_at_end(&[5, 2, 0, 2], parse_greeting),
        vec![0, 2]
    );
    assert_eq!(
        complete_only_at_end(&[5, 0], parse_greeting),
        Vec::<u8>::new()
    );
    let up = complete_only_at_end(&auth_msg(b"alice", b"s3cret"), parse_auth);
    assert_eq!(
        (&up.user[..], &up.pass[..]),
        (&b"alice"[..], &b"s3cret"[..])
    );
    assert!(!format!("{up:?}").contains("s3cret"));
    for (c, command) in [(1, Command::Connect), (3, Command::UdpAssociate)] {
        for addr in [
            Addr::Ip("10.1.2.3:443".parse().unwrap()),
            Addr::Ip("[2001:db8::1]:80".parse().unwrap()),
            Addr::Domain("example.com".into(), 22),
            Addr::Domain("x".repeat(255), 1),
        ] {
            let r = complete_only_at_end(&request(c, &addr), parse_request);
            assert_eq!(r, Request { command, addr });
        }
    }
    assert_eq!(
        REQUEST_MAX,
        request(1, &Addr::Domain("x".repeat(255), 1)).len()
    );
    assert_eq!(AUTH_MAX, auth_msg(&[b'u'; 255], &[b'p'; 255]).len());
}

#[test]
fn bad_messages_are_refused_with_the_right_answer() {
    type Case = (&'static [u8], fn(&[u8]) -> bool, Stage, &'static [u8]);
    let cases: &[Case] = &[
        (
            &[4, 1, 0],
            |b| matches!(parse_greeting(b), Err(HandshakeError::Version(4))),
            Stage::Greeting,
            &[5, 0xFF],
        ),
        (
            &[2, 5, b'a'],
            |b| matches!(parse_auth(b), Err(HandshakeError::Version(2))),
            Stage::Auth,
            &[1, 1],
        ),
        (
            &[1, 0, 1, b'p'],
            |b| matches!(parse_auth(b), Err(HandshakeError::BadCredentials)),
            Stage::Auth,
            &[1, 1],
        ),
        (
            &[1, 1, b'u', 0],
            |b| matches!(parse_auth(b), Err(HandshakeError::BadCredentials)),
            Stage::Auth,
            &[1, 1],
        ),
        (
            &[5, 2, 0, 1],
            |b| matches!(parse_request(b), Err(HandshakeError::Command(2))),
            Stage::Request,
            &[5, 7, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        (
            &[5, 9, 0, 1],
            |b| matches!(parse_request(b), Err(HandshakeError::Command(9))),
            Stage::Request,
            &[5, 7, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        (
            &[5, 1, 0, 2, 0],
            |b| matches!(parse_request(b), Err(HandshakeError::AddrType(2))),
            Stage::Request,
            &[5, 8, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        (
            &[5, 1, 0, 3, 0, 0, 80],
            |b| matches!(parse_request(b), Err(HandshakeError::BadName)),
            Stage::Request,
            &[5, 1, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        (
            &[6, 1, 0, 1],
            |b| matches!(parse_request(b), Err(HandshakeError::Version(6))),
            Stage::Request,
            &[5, 1, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
    ];
    assert!(!cases.is_empty());
    for (bytes, check, stage, answer) in cases {
        assert!(check(bytes), "{bytes:?}");
        let err = match stage {
            Stage::Greeting => parse_greeting(bytes).unwrap_err(),
            Stage::Auth => parse_auth(bytes).unwrap_err(),
            Stage::Request => parse_request(bytes).unwrap_err(),
        };
        assert_eq!(err.answer(*stage).as_deref(), Some(*answer), "{bytes:?}");
    }
    assert_eq!(HandshakeError::Truncated.answer(Stage::Request), None);
}

#[test]
fn method_choice_is_fail_closed() {
    assert_eq!(choose_method(&[0, 2], true), Some(2));
    assert_eq!(
        choose_method(&[0], true),
        None,
        "auth on: no-auth is not accepted"
    );
    assert_eq!(choose_method(&[2], false), None, "auth off: only no-auth");
    assert_eq!(choose_method(&[1, 0], false), Some(0));
    assert_eq!(choose_method(&[], false), None);
}

/// Runs the handshake over `input`, fed one byte at a time; the result and what was written.
fn shake(
    input: &[u8],
    auth: Option<&Credentials>,
) -> (Result<Request, HandshakeError>, Vec<u8>, Vec<u8>) {
    smol::block_on(async {
        let mut r = BufReader::with_capacity(1, Cursor::new(input.to_vec()));
        let mut w = Cursor::new(Vec::new());
        let res = handshake(&mut r, &mut w, auth, Duration::from_secs(5)).await;
        let mut rest = Vec::new();
        futures_lite::io::AsyncReadExt::read_to_end(&mut r, &mut rest)
            .await
            .unwrap();
        (res, w.into_inner(), rest)
    })
}

#[test]
fn handshake_without_auth_keeps_bytes_behind_the_request() {
    let target = Addr::Domain("localhost".into(), 80);
    let mut input = vec![5, 1, 0];
    input.extend(request(1, &target));
    input.extend_from_slice(b"early");
    let (res, out, rest) = shake(&input, None);
    assert_eq!(
        res.unwrap(),
        Request {
            command: Command::Connect,
            addr: target
        }
    );
    assert_eq!(out, [5, 0]);
    assert_eq!(rest, b"early");
}

#[test]
fn handshake_with_auth_checks_both_parts() {
    let c = creds();
    let target = Addr::Ip("127.0.0.1:1".parse().unwrap());
    let mut ok = vec![5, 2, 0, 2];
    ok.extend(auth_msg(b"alice", b"s3cret"));
    ok.extend(request(3, &target));
    let (res, out, _) = shake(&ok, Some(&c));
    assert_eq!(res.unwrap().command, Command::UdpAssociate);
    assert_eq!(out, [5, 2, 1, 0]);

    for (user, pass) in [
        (&b"alice"[..], &b"s3creT"[..]),
        (b"alicf", b"s3cret"),
        (b"alice:s3cret", b"x"),
        (b"alice", b"s3cret "),
    ] {
        let mut bad = vec![5, 1, 2];
        bad.extend(auth_msg(user, pass));
        bad.extend(request(1, &target));
        let (res, out, _) = shake(&bad, Some(&c));
        assert!(
            matches!(res, Err(HandshakeError::BadCredentials)),
            "{user:?}"
        );
        assert_eq!(out, [5, 2, 1, 1], "method chosen, then status 1");
    }

    let (res, out, _) = shake(&[5, 1, 0], Some(&c));
    assert!(matches!(res, Err(HandshakeError::NoAcceptableMethod)));
    assert_eq!(out, [5, 0xFF]);
}

#[test]
fn a_handshake_cut_short_is_not_answered() {
    let (res, out, _) = shake(&[5, 1, 0, 5, 1, 0, 1, 127], None);
    assert!(matches!(res, Err(HandshakeError::Truncated)));
    assert_eq!(out, [5, 0], "only the method choice was written");
}
