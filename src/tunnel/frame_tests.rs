//! Frame codec tests: every frame round-trips, bad frames are refused, and arbitrary bytes
//! never panic the decoder.

use super::*;

fn all_frames() -> Vec<Frame> {
    vec![
        Frame::Open {
            id: 1,
            window: 65536,
            target: OpenTarget::Dial {
                host: "example.com".into(),
                port: 443,
            },
        },
        Frame::Open {
            id: 2,
            window: 1,
            target: OpenTarget::Bound { bind_id: 7 },
        },
        Frame::OpenOk {
            id: 3,
            window: 262144,
        },
        Frame::OpenRefused {
            id: 5,
            code: RefuseCode::Forbidden,
            reason: "target not allowed".into(),
        },
        Frame::Data {
            id: 7,
            payload: vec![1, 2, 3].into(),
        },
        Frame::Data {
            id: 9,
            payload: vec![0; MAX_DATA].into(),
        },
        Frame::Window {
            id: 11,
            increment: 4096,
        },
        Frame::Fin { id: 13 },
        Frame::Reset {
            id: 15,
            code: RefuseCode::Timeout,
            reason: "".into(),
        },
        Frame::Bind {
            bind_id: 1,
            addr: "0.0.0.0".into(),
            port: 0,
            mode: BindMode::Forward,
            pool: None,
        },
        Frame::Bind {
            bind_id: 7,
            addr: "".into(),
            port: 8080,
            mode: BindMode::Forward,
            pool: Some(Box::new(crate::tunnel::BindPool {
                name: "web".into(),
                policy: "".into(),
            })),
        },
        Frame::Bind {
            bind_id: 2,
            addr: "".into(),
            port: 8080,
            mode: BindMode::Proxy {
                auth: ProxyAuth::basic("u:p".parse().unwrap()).unwrap(),
            },
            pool: None,
        },
        Frame::Bind {
            bind_id: 3,
            addr: "".into(),
            port: 8080,
            mode: BindMode::Proxy {
                auth: ProxyAuth::open(),
            },
            pool: None,
        },
        Frame::Bind {
            bind_id: 4,
            addr: "".into(),
            port: 8080,
            mode: BindMode::Proxy {
                auth: ProxyAuth::from_text("no colon".into()).unwrap(),
            },
            pool: None,
        },
        Frame::Bound {
            bind_id: 1,
            addr: "127.0.0.1:40000".into(),
        },
        Frame::BindRefused {
            bind_id: 2,
            reason: "port 22 is outside --allow-ports".into(),
        },
        Frame::GoAway {
            reason: "relay shutting down".into(),
        },
        Frame::Unbind { bind_id: 3 },
        Frame::Unbind { bind_id: u32::MAX },
        Frame::Ack { received: 0 },
        Frame::Ack { received: u64::MAX },
        Frame::Resume { received: 1 << 40 },
        Frame::Open {
            id: 7,
            window: EARLY_DATA,
            target: OpenTarget::UdpDial {
                host: "dns.internal".into(),
                port: 53,
            },
        },
        Frame::Open {
            id: 8,
            window: EARLY_DATA,
            target: OpenTarget::UdpBound { bind_id: 4 },
        },
        Frame::Open {
            id: 9,
            window: EARLY_DATA,
            target: OpenTarget::UdpAny,
        },
        Frame::Bind {
            bind_id: 5,
            addr: String::new(),
            port: 5353,
            mode: BindMode::Udp,
            pool: None,
        },
        Frame::Dgram {
            id: 7,
            payload: vec![1; MAX_DATAGRAM].into(),
        },
    ]
}

/// An empty datagram is a datagram: its DGRAM is the header alone (a prefix of every other).
#[test]
fn an_empty_datagram_round_trips() {
    let f = Frame::Dgram {
        id: 3,
        payload: Default::default(),
    };
    assert_eq!(Frame::decode(&f.to_bytes()), Ok(f));
    let session = [code::DGRAM, 0, 0, 0, 0];
    assert!(
        Frame::decode(&session).is_err(),
        "a DGRAM needs a stream id"
    );
    assert!(Frame::decode(&[code::OPEN, 0, 0, 0, 1, 0, 0, 64, 0, 5]).is_err());
}

#[test]
fn every_frame_round_trips() {
    let frames = all_frames();
    assert!(frames.len() >= 16);
    for f in frames {
        let bytes = f.to_bytes();
        assert!(bytes.len() <= MAX_FRAME);
        assert_eq!(Frame::decode(&bytes), Ok(f.clone()), "{f:?}");
        // Every strict prefix is refused, never misread.
        for cut in 0..bytes.len() {
            assert!(
                Frame::decode(&bytes[..cut]).is_err()
                    || matches!(f, Frame::Data { .. } | Frame::Dgram { .. }),
                "{f:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn bad_frames_are_refused() {
    let mut oversized = Frame::Data {
        id: 1,
        payload: vec![0; 10].into(),
    }
    .to_bytes();
    oversized.resize(MAX_FRAME + 1, 0);
    let cases: Vec<(Vec<u8>, FrameError)> = vec![
        (vec![], FrameError::Truncated),
        (vec![0x04, 0, 0, 0], FrameError::Truncated),
        (
            vec![0x04, 0, 0, 0, 1],
            FrameError::Invalid("data payload size"),
        ),
        (vec![0x99, 0, 0, 0, 1], FrameError::UnknownType(0x99)),
        (
            vec![0x05, 0, 0, 0, 1, 0, 0, 0, 0],
            FrameError::Invalid("zero window increment"),
        ),
        (vec![0x06, 0, 0, 0, 1, 9], FrameError::TooLong),
        (
            vec![0x06, 0, 0, 0, 0],
            FrameError::Invalid("stream id 0 is for session frames only"),
        ),
        (
            vec![0x13, 0, 0, 0, 5, 0],
            FrameError::Invalid("stream id 0 is for session frames only"),
        ),
        (
            vec![0x14, 0, 0, 0, 1, 0, 0, 0, 1],
            FrameError::Invalid("stream id 0 is for session frames only"),
        ),
        (vec![0x14, 0, 0, 0, 0, 0, 0, 1], FrameError::Truncated),
        (vec![0x14, 0, 0, 0, 0, 0, 0, 0, 1, 0], FrameError::TooLong),
        (
            vec![0x03, 0, 0, 0, 1, 1, 2, 0xff, 0xfe],
            FrameError::Invalid("text is not utf-8"),
        ),
        (vec![0x03, 0, 0, 0, 1, 1, 9, b'a'], FrameError::Truncated),
        (
            vec![0x03, 0, 0, 0, 1, 9, 0],
            FrameError::Invalid("unknown refusal code"),
        ),
        (oversized, FrameError::TooLong),
    ];
    for (bytes, want) in cases {
        assert_eq!(Frame::decode(&bytes), Err(want.clone()), "{bytes:?}");
    }
}

#[test]
fn long_texts_are_truncated_on_a_char_boundary() {
    let reason = "é".repeat(200); // 400 bytes
    let f = Frame::GoAway { reason };
    let Ok(Frame::GoAway { reason }) = Frame::decode(&f.to_bytes()) else {
        panic!()
    };
    assert!(reason.len() <= MAX_TEXT && reason.chars().all(|c| c == 'é'));
}

#[test]
fn bind_credentials_are_read_once_and_never_shown() {
    let bind = |auth: ProxyAuth| Frame::Bind {
        bind_id: 1,
        addr: String::new(),
        port: 0,
        mode: BindMode::Proxy { auth },
        pool: None,
    };
    let decoded = |auth: ProxyAuth| match Frame::decode(&bind(auth).to_bytes()) {
        Ok(Frame::Bind {
            mode: BindMode::Proxy { auth },
            ..
        }) => auth,
        other => panic!("{other:?}"),
    };
    // Empty: none; `user:pass`: credentials; anything else: an error, never "none".
    assert_eq!(decoded(ProxyAuth::open()).credentials(), Ok(None));
    let good = decoded(ProxyAuth::from_text("user:hunter2".into()).unwrap());
    let creds = good.credentials().unwrap().unwrap();
    assert_eq!(
        (creds.user.as_str(), creds.pass.expose()),
        ("user", "hunter2")
    );
    let cases = [
        ("no-colon-hunter2", "credentials must be \"user:password\""),
        (":hunter2", "empty user name"),
        ("user:hunter2\n", "control character in password"),
    ];
    for (text, why) in cases {
        let auth = decoded(ProxyAuth::from_text(text.into()).unwrap());
        assert_eq!(auth.credentials().unwrap_err().to_string(), why, "{text:?}");
        for shown in [format!("{auth:?}"), format!("{:?}", bind(auth.clone()))] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
    assert!(!format!("{good:?}").contains("hunter2"));
    assert!(!format!("{good:?}").contains("user"));
}

#[test]
fn bind_credentials_must_fit_whole() {
    let fits = format!("u:{}", "p".repeat(MAX_TEXT - 2));
    let auth = ProxyAuth::basic(fits.parse().unwrap()).unwrap();
    let f = Frame::Bind {
        bind_id: 1,
        addr: String::new(),
        port: 0,
        mode: BindMode::Proxy { auth },
        pool: None,
    };
    assert_eq!(Frame::decode(&f.to_bytes()), Ok(f));
    let over = format!("u:{}", "p".repeat(MAX_TEXT - 1));
    let err = ProxyAuth::basic(over.parse().unwrap()).unwrap_err();
    assert_eq!(err, AuthTooLong { len: MAX_TEXT + 1 });
    assert!(!err.to_string().contains("ppp"), "{err}");
    assert_eq!(ProxyAuth::from_text(over).unwrap_err().len, MAX_TEXT + 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

    /// Whatever a peer sends, decoding never panics, and what decodes encodes back to
    /// exactly the same bytes (one encoding per frame: nothing a peer could smuggle).
    #[test]
    fn decoding_arbitrary_bytes_is_total_and_exact(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        if let Ok(frame) = Frame::decode(&data) {
            proptest::prop_assert_eq!(frame.to_bytes(), data);
        }
    }

    /// Frames with a valid header survive arbitrary bodies the same way.
    #[test]
    fn decoding_typed_garbage_is_total_and_exact(t in 0u8..0x20, id in 0u32..8, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
        let mut data = vec![t];
        data.extend_from_slice(&id.to_be_bytes());
        data.extend_from_slice(&body);
        if let Ok(frame) = Frame::decode(&data) {
            proptest::prop_assert_eq!(frame.to_bytes(), data);
        }
    }
}

#[test]
fn a_bind_without_pool_fields_is_what_relays_before_pools_read() {
    // Without a pool the bytes are exactly the old BIND, so a client that joins no pool works
    // with a relay of before pools; with one, the mode's high bit says the pool fields
    // follow (a relay of before refuses the mode, but is never sent one).
    let plain = Frame::Bind {
        bind_id: 3,
        addr: "".into(),
        port: 9000,
        mode: BindMode::Forward,
        pool: None,
    };
    let pooled = Frame::Bind {
        bind_id: 3,
        addr: "".into(),
        port: 9000,
        mode: BindMode::Forward,
        pool: Some(Box::new(crate::tunnel::BindPool {
            name: "web".into(),
            policy: "ab".into(),
        })),
    };
    let (a, b) = (plain.to_bytes(), pooled.to_bytes());
    assert_eq!(a.last(), Some(&0), "forward, no pool");
    assert_eq!(&b[..a.len() - 1], &a[..a.len() - 1]);
    assert_eq!(&b[a.len() - 1..], b"\x80\x03web\x02ab");
    // A truncated pool tail is an error, never a BIND without a pool.
    let cut = &b[..b.len() - 1];
    assert!(Frame::decode(cut).is_err());
}
