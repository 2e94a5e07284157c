//! Live reload of the relay (`RelayHandle::reload`): tokens added and removed, rules and limits
//! changed while sessions and their streams keep running.

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::metrics::Metrics;
use burrow::relay::tokens::{TokenKey, TokenSpec};
use burrow::relay::{Relay, RelayConfig, RelayHandle};
use burrow::reload::ReloadError;
use burrow::secret::Secret;
use burrow::tunnel::ws::{HandshakeError, TunnelUrl, client_handshake};
use burrow::tunnel::{Frame, Session, SessionConfig, Side};
use common::tunnel::{RunningClient, RunningRelay, eventually, run_relay, start_client};
use common::{lo, run, start_echo, within};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn token(name: &str, value: &str) -> TokenSpec {
    TokenSpec::new(name, TokenKey::Plain(Secret::new(value)))
}

fn with_tokens(tokens: Vec<TokenSpec>) -> RelayConfig {
    RelayConfig {
        tokens,
        // A revoked session's streams get this long to finish: longer than any wait here, so
        // a session that closes in time closed because its streams were done.
        drain_timeout: Duration::from_secs(25),
        ..RelayConfig::default()
    }
}

async fn relay_with(sp: &burrow::exec::Spawner, cfg: RelayConfig) -> (RunningRelay, RelayHandle) {
    let relay = Relay::bind(lo(), cfg).await.unwrap();
    let handle = relay.handle();
    (run_relay(sp, relay), handle)
}

/// A client with `token` and `-L` to `target`, connected.
async fn forwarder(
    sp: &burrow::exec::Spawner,
    url: TunnelUrl,
    tok: &str,
    target: SocketAddr,
) -> RunningClient {
    let mut cfg = ClientConfig::new(url);
    cfg.token = Some(Secret::new(tok));
    cfg.locals = vec![format!("127.0.0.1:0:{target}").parse().unwrap()];
    let c = start_client(sp, cfg).await;
    c.wait("connected", |e| *e == Event::Connected).await;
    c
}

/// Writes `what` and reads it back (the echo behind the tunnel).
async fn echo(s: &mut TcpStream, what: &[u8]) {
    s.write_all(what).await.unwrap();
    let mut back = vec![0u8; what.len()];
    within(10, "echo", s.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, what);
}

/// Whether a new stream through `client` reaches the echo (else it is closed unanswered).
async fn reaches(client: &RunningClient) -> bool {
    let mut s = TcpStream::connect(client.locals[0]).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    let n = within(10, "echo or close", s.read(&mut one))
        .await
        .unwrap_or(0);
    n == 1
}

/// A hand-made client session with `tok`, to see the frames the relay sends.
async fn raw_session(relay: SocketAddr, tok: &str, id: &str) -> (Session, smol::Task<()>) {
    let url: TunnelUrl = format!("ws://{relay}/burrow").parse().unwrap();
    let tcp = within(10, "connect", TcpStream::connect(relay))
        .await
        .unwrap();
    let secret = Secret::new(tok);
    let ws = within(
        10,
        "handshake",
        client_handshake(tcp, &url, Some(&secret), id),
    )
    .await
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let (session, driver) =
        Session::new(Side::Client, SessionConfig::default(), id.into(), metrics);
    (
        session,
        smol::spawn(async move {
            driver.run(ws).await;
        }),
    )
}

#[test]
fn a_removed_token_goes_away_while_another_tokens_stream_keeps_flowing() {
    run(|sp| async move {
        let (target, _e) = start_echo().await;
        let cfg = with_tokens(vec![token("keep", "k"), token("old", "o")]);
        let (relay, handle) = relay_with(&sp, cfg).await;
        let kept = forwarder(&sp, relay.url(), "k", target).await;
        let mut stream = TcpStream::connect(kept.locals[0]).await.unwrap();
        echo(&mut stream, b"before").await;
        let (raw, _driver) = raw_session(relay.addr, "o", "raw-old").await;
        let gone = forwarder(&sp, relay.url(), "o", target).await;
        let mut draining = TcpStream::connect(gone.locals[0]).await.unwrap();
        echo(&mut draining, b"old").await;
        assert_eq!(relay.metrics.token("old"), Some((2, 0)));

        let new = with_tokens(vec![token("keep", "k"), token("fresh", "f")]);
        let mut changes = handle.reload(new).unwrap();
        changes.sort();
        assert_eq!(
            changes,
            ["token fresh added", "token old removed: 2 sessions closed"]
        );

        // GO_AWAY with the reason, then the close.
        match within(10, "go-away", raw.session_frame()).await {
            Some(Frame::GoAway { reason }) => assert_eq!(reason, "token old removed by reload"),
            other => panic!("{other:?}"),
        }
        within(10, "raw session closed", raw.closed()).await;
        // The real client's open stream drains: it flows until it is done, then the session
        // ends; the client says so (its log has the GO_AWAY's reason), and its token gets in
        // no more.
        echo(&mut draining, b"still").await;
        assert!(
            !reaches(&gone).await,
            "a new stream on a going-away session"
        );
        drop(draining);
        gone.wait("lost", |e| matches!(e, Event::Lost(_))).await;
        let refused = |e: &Event| matches!(e, Event::Lost(w) if w.contains("wrong token"));
        gone.wait("401", refused).await;

        // The other token's session and its stream never noticed.
        echo(&mut stream, b"after").await;
        assert!(reaches(&kept).await, "a new stream of an unchanged token");
        while let Ok(e) = kept.events.try_recv() {
            assert!(
                !matches!(e, Event::Lost(_)),
                "the kept session was touched: {e}"
            );
        }
        // The added token works at once.
        forwarder(&sp, relay.url(), "f", target).await;
        let series = || relay.metrics.token("old");
        eventually("the removed token's series gone", || series().is_none()).await;
        assert_eq!(relay.metrics.token("fresh"), Some((1, 0)));
    });
}

#[test]
fn changed_rules_apply_to_the_next_open_and_limits_to_the_next_session() {
    run(|sp| async move {
        let (target, _e) = start_echo().await;
        let cfg = with_tokens(vec![token("keep", "k")]);
        let (relay, handle) = relay_with(&sp, cfg.clone()).await;
        let client = forwarder(&sp, relay.url(), "k", target).await;
        let mut open = TcpStream::connect(client.locals[0]).await.unwrap();
        echo(&mut open, b"one").await;

        let mut fenced = cfg.clone();
        fenced.rules.deny = vec!["127.0.0.1".parse().unwrap()];
        fenced.limits.max_sessions = 1;
        let changes = handle.reload(fenced.clone()).unwrap();
        assert_eq!(changes, ["rules changed", "max-sessions 32 -> 1"]);
        assert!(
            !reaches(&client).await,
            "the next OPEN is under the new rules"
        );
        echo(&mut open, b"two").await;
        let url = relay.url();
        let tcp = TcpStream::connect(relay.addr).await.unwrap();
        let secret = Secret::new("k");
        match within(10, "503", client_handshake(tcp, &url, Some(&secret), "x")).await {
            Err(HandshakeError::Rejected(503, why)) => assert!(why.contains("--max-sessions")),
            other => panic!("{:?}", other.map(drop)),
        }

        // A token's own rules replace the relay's for its sessions only, at once.
        let mut own = fenced;
        own.tokens[0].rules = Some(Default::default());
        let changes = handle.reload(own).unwrap();
        assert_eq!(changes, ["token keep limits changed"]);
        assert!(reaches(&client).await);
        // Nothing changed: nothing to say.
        let same = handle.config();
        assert_eq!(handle.reload(same).unwrap(), Vec::<String>::new());
    });
}

#[test]
fn a_handle_works_before_run_and_refuses_what_needs_a_restart() {
    run(|sp| async move {
        let (target, _e) = start_echo().await;
        let relay = Relay::bind(lo(), with_tokens(vec![token("a", "a")]))
            .await
            .unwrap();
        let handle = relay.handle();
        let changes = handle
            .reload(with_tokens(vec![token("a", "a"), token("b", "b")]))
            .unwrap();
        assert_eq!(changes, ["token b added"]);
        let relay = run_relay(&sp, relay);
        forwarder(&sp, relay.url(), "b", target).await;

        let admin = RelayConfig {
            admin: Some(lo()),
            ..handle.config()
        };
        assert!(matches!(handle.reload(admin), Err(ReloadError::Restart(_))));
        let open = with_tokens(vec![]);
        match handle.reload(open) {
            Err(ReloadError::Restart(why)) => assert!(why.contains("authentication"), "{why}"),
            other => panic!("turning tokens off must not apply live: {other:?}"),
        }
        let twice = with_tokens(vec![token("a", "a"), token("a", "z")]);
        assert!(matches!(handle.reload(twice), Err(ReloadError::Failed(_))));
        // Refused reloads left the running configuration alone.
        assert_eq!(handle.config().tokens.len(), 2);
        forwarder(&sp, relay.url(), "a", target).await;
    });
}

#[cfg(feature = "tls")]
#[test]
fn a_reload_rereads_the_same_certificate_files_or_swaps_in_others() {
    use burrow::tls::ServerTls;
    use common::certs::{Ca, TempDir};
    run(|sp| async move {
        let dir = TempDir::new("relay-reload");
        let (one, two, three) = (Ca::new("one"), Ca::new("two"), Ca::new("three"));
        let (cert, key) = one.write_leaf(&dir, "relay", &["localhost"], false);
        let tls = Arc::new(ServerTls::load(&cert, &key).unwrap());
        let cfg = RelayConfig {
            tls: Some(tls),
            ..with_tokens(vec![token("a", "a")])
        };
        let (relay, handle) = relay_with(&sp, cfg.clone()).await;
        let trusting = |ca: &Ca, tag: &str| {
            let url = format!("wss://localhost:{}/burrow", relay.addr.port());
            let mut c = ClientConfig::new(url.parse().unwrap());
            c.token = Some(Secret::new("a"));
            c.tls.ca = Some(ca.write(&dir, tag));
            c
        };
        let first = start_client(&sp, trusting(&one, "one")).await;
        first.wait("first", |e| *e == Event::Connected).await;

        // The same files with new content: the running `ServerTls` re-reads them.
        let (c2, k2) = two.leaf(&["localhost"], false);
        std::fs::write(&cert, c2).unwrap();
        std::fs::write(&key, k2).unwrap();
        assert_eq!(
            handle.reload(cfg.clone()).unwrap(),
            ["certificate reloaded"]
        );
        let second = start_client(&sp, trusting(&two, "two")).await;
        second.wait("second", |e| *e == Event::Connected).await;

        // Other files: the new `ServerTls` serves the next connections.
        let (c3, k3) = three.write_leaf(&dir, "other", &["localhost"], false);
        let other = RelayConfig {
            tls: Some(Arc::new(ServerTls::load(&c3, &k3).unwrap())),
            ..cfg.clone()
        };
        let changes = handle.reload(other).unwrap();
        assert_eq!(changes, ["certificate replaced (new connections)"]);
        let third = start_client(&sp, trusting(&three, "three")).await;
        third.wait("third", |e| *e == Event::Connected).await;

        while let Ok(e) = first.events.try_recv() {
            assert!(
                !matches!(e, Event::Lost(_)),
                "the first session dropped: {e}"
            );
        }
        let plain = RelayConfig { tls: None, ..cfg };
        assert!(matches!(handle.reload(plain), Err(ReloadError::Restart(_))));
    });
}
