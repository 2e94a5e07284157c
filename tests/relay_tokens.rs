//! Per-client tokens on the relay (`[[relay.tokens]]`): each token by value or by SHA-256, its
//! own `-R` ports, `-L` rules and session cap; logs and metrics name it, never its value.

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::dial::rules::Rules;
use burrow::refusal::Refusal;
use burrow::relay::tokens::{TokenKey, TokenSpec};
use burrow::relay::{Relay, RelayConfig, RelayHandle};
use burrow::secret::Secret;
use burrow::shutdown::Shutdown;
use burrow::tunnel::ws::{HandshakeError, TunnelUrl, client_handshake};
use common::tunnel::{RunningRelay, eventually, start_client};
use common::{lo, run, start_echo, within};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

/// SHA-256("test") (`printf %s test | sha256sum`), as in docs/CONFIG.md's example.
const TEST_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn unhex(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn token(name: &str, value: &str) -> TokenSpec {
    TokenSpec::new(name, TokenKey::Plain(Secret::new(value)))
}

/// A relay with these tokens (no relay-wide `token`), and its handle.
async fn relay_with(
    sp: &burrow::exec::Spawner,
    tokens: Vec<TokenSpec>,
) -> (RunningRelay, RelayHandle) {
    let cfg = RelayConfig {
        tokens,
        ..RelayConfig::default()
    };
    let relay = Relay::bind(lo(), cfg).await.unwrap();
    let handle = relay.handle();
    let addr = relay.local_addr().unwrap();
    let metrics = relay.metrics();
    let shutdown = Shutdown::new();
    let task = smol::spawn(relay.run(sp.clone(), shutdown.signal()));
    let running = RunningRelay {
        addr,
        shutdown,
        metrics,
        task,
    };
    (running, handle)
}

/// The relay's answer to a tunnel upgrade with `token`: `Ok` (101) or the refusal.
async fn handshake(url: &TunnelUrl, token: &str, id: &str) -> Result<(), HandshakeError> {
    let addr = format!("{}:{}", url.host, url.port);
    let tcp = within(10, "connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let secret = Secret::new(token);
    within(
        10,
        "handshake",
        client_handshake(tcp, url, Some(&secret), id),
    )
    .await
    .map(drop)
}

fn client(relay: &RunningRelay, token: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new(relay.url());
    cfg.token = Some(Secret::new(token));
    cfg
}

#[test]
fn each_token_connects_under_its_name_and_a_wrong_one_gets_401() {
    run(|sp| async move {
        let by_hash = TokenSpec {
            key: TokenKey::Sha256(unhex(TEST_SHA256)),
            ..token("ci-runner", "")
        };
        let (relay, handle) = relay_with(&sp, vec![token("laptop", "lap-tok"), by_hash]).await;
        let laptop = start_client(&sp, client(&relay, "lap-tok")).await;
        laptop.wait("laptop", |e| *e == Event::Connected).await;
        // The entry holds only the hash: the token whose hash it is gets in.
        let ci = start_client(&sp, client(&relay, "test")).await;
        ci.wait("ci", |e| *e == Event::Connected).await;
        let mut names: Vec<_> = handle
            .sessions()
            .into_iter()
            .map(|s| s.token_name.unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["ci-runner", "laptop"]);
        let text = relay.metrics.render();
        for name in ["ci-runner", "laptop"] {
            let line = format!("burrow_token_sessions{{token=\"{name}\"}} 1\n");
            assert!(text.contains(&line), "{text}");
        }
        assert!(!text.contains("lap-tok"), "a token's value in /metrics");

        let url = relay.url();
        match handshake(&url, "wrong", "w").await {
            Err(HandshakeError::Unauthorized(why)) => assert!(why.contains("wrong token")),
            other => panic!("{other:?}"),
        }
        // The hash itself is not a token.
        match handshake(&url, TEST_SHA256, "h").await {
            Err(HandshakeError::Unauthorized(_)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(relay.metrics.refusals(Refusal::Auth), 2);
    });
}

#[test]
fn a_token_binds_only_its_own_ports() {
    run(|sp| async move {
        // `wide` finds a free port in its range; `narrow` may bind only 1024.
        let wide = TokenSpec {
            allow_ports: Some((40000, 44999)),
            ..token("wide", "w")
        };
        let narrow = TokenSpec {
            allow_ports: Some((1024, 1024)),
            ..token("narrow", "n")
        };
        let (relay, _h) = relay_with(&sp, vec![wide, narrow]).await;
        let (echo, _e) = start_echo().await;
        let mut cfg = client(&relay, "w");
        cfg.remotes = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let w = start_client(&sp, cfg).await;
        let port = w.bound().await.port();
        assert!((40000..=44999).contains(&port), "{port}");
        let mut s = within(10, "visitor", TcpStream::connect(("127.0.0.1", port)))
            .await
            .unwrap();
        s.write_all(b"hi").await.unwrap();
        let mut two = [0u8; 2];
        within(10, "echo", s.read_exact(&mut two)).await.unwrap();

        // The other token asks for a port in the first one's range: refused, with why.
        let asked = if port == 44999 { 40000 } else { port + 1 };
        let mut cfg = client(&relay, "n");
        cfg.remotes = vec![format!("127.0.0.1:{asked}:{echo}").parse().unwrap()];
        let n = start_client(&sp, cfg).await;
        let refused = n
            .wait("refusal", |e| matches!(e, Event::BindRefused { .. }))
            .await;
        let Event::BindRefused { reason, .. } = refused else {
            unreachable!()
        };
        assert_eq!(
            reason,
            format!("port {asked} is outside the allow-ports of token narrow 1024-1024")
        );
        assert_eq!(relay.metrics.token("narrow"), Some((1, 1)));
        assert_eq!(relay.metrics.token("wide"), Some((1, 0)));
    });
}

#[test]
fn a_token_reaches_only_what_its_rules_allow() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let fenced = TokenSpec {
            rules: Some(Rules {
                allow: vec![],
                deny: vec!["127.0.0.1".parse().unwrap()],
            }),
            ..token("fenced", "f")
        };
        let (relay, _h) = relay_with(&sp, vec![fenced, token("free", "o")]).await;
        for (tok, reaches) in [("f", false), ("o", true)] {
            let mut cfg = client(&relay, tok);
            cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
            let c = start_client(&sp, cfg).await;
            c.wait("connected", |e| *e == Event::Connected).await;
            let mut s = TcpStream::connect(c.locals[0]).await.unwrap();
            s.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            let n = within(10, "echo or close", s.read(&mut one))
                .await
                .unwrap_or(0);
            assert_eq!(n == 1, reaches, "token {tok}");
        }
        assert_eq!(relay.metrics.refusals(Refusal::Forbidden), 1);
    });
}

#[test]
fn a_token_over_its_max_sessions_gets_503_and_another_token_does_not() {
    run(|sp| async move {
        let capped = TokenSpec {
            max_sessions: Some(1),
            ..token("capped", "c")
        };
        // Capped at one too: the counts are per token, not one count for all tokens.
        let other = TokenSpec {
            max_sessions: Some(1),
            ..token("other", "o")
        };
        let (relay, _h) = relay_with(&sp, vec![capped, other]).await;
        let url = relay.url();
        let tcp = TcpStream::connect(relay.addr).await.unwrap();
        let secret = Secret::new("c");
        let _first = within(
            10,
            "first",
            client_handshake(tcp, &url, Some(&secret), "c1"),
        )
        .await
        .unwrap();
        match handshake(&url, "c", "c2").await {
            Err(HandshakeError::Rejected(503, why)) => {
                assert!(why.contains("1 sessions with this token"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        handshake(&url, "o", "o1")
            .await
            .expect("another token's own count");
        assert_eq!(relay.metrics.token("capped").map(|t| t.1), Some(1));
        // The gauge follows sessions that end.
        eventually("o1 gone", || relay.metrics.token("other") == Some((0, 0))).await;
    });
}

#[test]
fn another_tokens_client_cannot_take_over_a_session_id() {
    run(|sp| async move {
        let (relay, _h) = relay_with(&sp, vec![token("a", "ta"), token("b", "tb")]).await;
        let url = relay.url();
        let tcp = TcpStream::connect(relay.addr).await.unwrap();
        let secret = Secret::new("ta");
        let _a = within(10, "a", client_handshake(tcp, &url, Some(&secret), "mine"))
            .await
            .unwrap();
        match handshake(&url, "tb", "mine").await {
            Err(HandshakeError::Rejected(403, why)) => assert!(why.contains("another token")),
            other => panic!("{other:?}"),
        }
        // The same token's client may (a returning client whose old connection is stale).
        handshake(&url, "ta", "mine").await.expect("same token");
    });
}

#[test]
fn a_tokens_max_streams_caps_each_of_its_sessions() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let one = TokenSpec {
            max_streams: Some(1),
            ..token("one-stream", "s")
        };
        let (relay, _h) = relay_with(&sp, vec![one]).await;
        let mut cfg = client(&relay, "s");
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        c.wait("connected", |e| *e == Event::Connected).await;
        let mut a = TcpStream::connect(c.locals[0]).await.unwrap();
        a.write_all(b"a").await.unwrap();
        let mut byte = [0u8; 1];
        within(10, "first stream", a.read_exact(&mut byte))
            .await
            .unwrap();
        let mut b = TcpStream::connect(c.locals[0]).await.unwrap();
        b.write_all(b"b").await.unwrap();
        let n = within(10, "second refused", b.read(&mut byte))
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "a second stream on a one-stream token's session");
    });
}

#[test]
fn metrics_on_the_public_port_are_for_any_tokens_holder() {
    run(|sp| async move {
        let (relay, _h) = relay_with(&sp, vec![token("a", "ta"), token("b", "tb")]).await;
        let get = |auth: &'static str| async move {
            let mut s = TcpStream::connect(relay.addr).await.unwrap();
            let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            within(10, "answer", s.read_to_end(&mut out)).await.unwrap();
            String::from_utf8(out).unwrap()
        };
        for auth in [
            "Authorization: Bearer ta\r\n",
            "Authorization: Bearer tb\r\n",
        ] {
            let answer = get(auth).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.contains("burrow_token_sessions{token=\"b\"} 0"));
        }
        assert!(
            get("Authorization: Bearer tc\r\n")
                .await
                .starts_with("HTTP/1.1 401")
        );
        assert!(get("").await.starts_with("HTTP/1.1 401"));
    });
}
