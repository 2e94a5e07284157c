//! Pools on loopback: two clients of one token share a public port on the relay, visitors are
//! spread over them, a member that leaves (GO_AWAY), loses its connection or unbinds is not
//! chosen again while its open streams finish, and members whose bindings differ are refused.

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::relay::RelayConfig;
use common::tunnel::*;
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::time::Duration;

/// An app that answers every connection with its name and closes.
async fn named_app(name: &'static str) -> (SocketAddr, smol::Task<()>) {
    let l = TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = smol::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            smol::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
            })
            .detach();
        }
    });
    (addr, task)
}

/// A port that was free a moment ago (a pool needs an explicit one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a visitor of `addr` is answered (empty when it was closed without a word).
async fn visit(addr: SocketAddr) -> String {
    let mut s = within(10, "connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let mut out = String::new();
    let _ = within(10, "answer", s.read_to_string(&mut out)).await;
    out
}

fn member(relay: &RunningRelay, pool: &str, port: u16, app: SocketAddr) -> ClientConfig {
    let mut cfg = ClientConfig::new(relay.url());
    cfg.remotes = vec![format!("127.0.0.1:{port}:{app}").parse().unwrap()];
    cfg.pool = Some(pool.into());
    cfg
}

fn quick_relay() -> RelayConfig {
    RelayConfig {
        grace: Duration::from_secs(60),
        ..RelayConfig::default()
    }
}

/// The relay's `/status.json` on its `--admin` listener.
async fn status_json(admin: SocketAddr) -> String {
    let mut s = within(10, "connect", TcpStream::connect(admin))
        .await
        .unwrap();
    s.write_all(b"GET /status.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    within(10, "status", s.read_to_string(&mut out))
        .await
        .unwrap();
    out
}

#[test]
fn visitors_are_spread_and_a_leaving_member_loses_none() {
    run(|sp| async move {
        let cfg = RelayConfig {
            admin: Some(lo()),
            ..quick_relay()
        };
        let relay = burrow::relay::Relay::bind(lo(), cfg).await.unwrap();
        let admin = relay.admin_addr().unwrap();
        let relay = run_relay(&sp, relay);
        let (app1, _a1) = named_app("one").await;
        let (app2, _a2) = named_app("two").await;
        let port = free_port();
        let c1 = start_client(&sp, member(&relay, "web", port, app1)).await;
        let addr1 = c1.bound().await;
        let c2 = start_client(&sp, member(&relay, "web", port, app2)).await;
        let addr2 = c2.bound().await;
        assert_eq!(addr1, addr2, "both members are told the one port");
        assert_eq!(addr1.port(), port);
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(visit(addr1).await);
        }
        assert!(seen.iter().all(|s| s == "one" || s == "two"), "{seen:?}");
        assert!(
            seen.iter().any(|s| s == "one"),
            "member one got none: {seen:?}"
        );
        assert!(
            seen.iter().any(|s| s == "two"),
            "member two got none: {seen:?}"
        );
        // The operator's view lists the pool once, with its members and visitors.
        let status = status_json(admin).await;
        assert!(status.contains("pool web (forward): 2 members"), "{status}");

        // Member one shuts down (GO_AWAY, then its session closes): member two alone takes
        // every visitor from then on, and none is lost meanwhile.
        c1.shutdown.drain();
        within(10, "member one ends", c1.task).await.unwrap();
        for _ in 0..10 {
            assert_eq!(visit(addr1).await, "two");
        }
        drop(c2);
    });
}

#[test]
fn a_member_that_says_go_away_is_not_chosen_and_its_streams_finish() {
    run(|sp| async move {
        let relay = start_relay(&sp, quick_relay()).await;
        // Member one's app holds each connection open until the test lets it answer.
        let slow = TcpListener::bind(lo()).await.unwrap();
        let slow_addr = slow.local_addr().unwrap();
        let (app2, _a2) = named_app("two").await;
        let port = free_port();
        let mut cfg1 = member(&relay, "web", port, slow_addr);
        cfg1.drain_timeout = Duration::from_secs(20);
        let c1 = start_client(&sp, cfg1).await;
        let public = c1.bound().await;
        // A visitor while member one is alone: it is member one's.
        let mut visitor = within(10, "connect", TcpStream::connect(public))
            .await
            .unwrap();
        let (mut origin, _) = within(10, "accept at app one", slow.accept())
            .await
            .unwrap();
        let c2 = start_client(&sp, member(&relay, "web", port, app2)).await;
        c2.bound().await;
        // Member one shuts down: GO_AWAY, then it waits for its stream.
        c1.shutdown.drain();
        // From now on every new visitor is member two's (none reaches member one's app,
        // which would hold it forever).
        for _ in 0..10 {
            assert_eq!(visit(public).await, "two");
        }
        // The visitor in flight on member one still finishes, whole.
        origin.write_all(b"late answer").await.unwrap();
        drop(origin);
        let mut out = String::new();
        within(
            10,
            "the held visitor's answer",
            visitor.read_to_string(&mut out),
        )
        .await
        .unwrap();
        assert_eq!(out, "late answer");
        drop(visitor);
        within(10, "member one ends", c1.task).await.unwrap();
        drop(c2);
    });
}

#[test]
fn a_member_whose_connection_is_lost_is_not_chosen() {
    run(|sp| async move {
        let relay = start_relay(&sp, quick_relay()).await;
        let (app1, _a1) = named_app("one").await;
        let (app2, _a2) = named_app("two").await;
        let port = free_port();
        // Member one reaches the relay through a middlebox the test can cut.
        let fwd = Forwarder::start(relay.addr).await;
        let url = format!("ws://{}/burrow", fwd.addr).parse().unwrap();
        let mut cfg1 = member(&relay, "web", port, app1);
        cfg1.url = url;
        // Its reconnects go nowhere useful for the rest of the test.
        cfg1.max_backoff = Duration::from_secs(3600);
        let c1 = start_client(&sp, cfg1).await;
        let public = c1.bound().await;
        let c2 = start_client(&sp, member(&relay, "web", port, app2)).await;
        c2.bound().await;
        // The middlebox goes: member one's connection is closed and it cannot come back.
        drop(fwd);
        c1.wait("member one suspended", |e| {
            matches!(e, Event::Suspended { .. } | Event::Lost(_))
        })
        .await;
        // Once the relay has noticed (a visitor handed over in between waits for a resume
        // that does not come), only member two is chosen, though member one's session is
        // held for a resume.
        eventually_async("member one unchosen", || async {
            try_visit(public).await == "two"
        })
        .await;
        for _ in 0..10 {
            assert_eq!(visit(public).await, "two");
        }
        drop((c1, c2));
    });
}

/// What a visitor of `addr` is answered within 2 s ("" when it is not).
async fn try_visit(addr: SocketAddr) -> String {
    let visit = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    };
    let late = async {
        smol::Timer::after(Duration::from_secs(2)).await;
        None
    };
    futures_lite::FutureExt::or(visit, late)
        .await
        .unwrap_or_default()
}

/// Polls an async condition (bounded).
async fn eventually_async<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(10, what, async {
        while !cond().await {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A client with `cfg`, and the relay's answer to its binding (BOUND or BIND_REFUSED).
async fn answer(sp: &burrow::exec::Spawner, cfg: ClientConfig) -> (RunningClient, Event) {
    let c = start_client(sp, cfg).await;
    let e = c
        .wait("an answer", |e| {
            matches!(e, Event::Bound { .. } | Event::BindRefused { .. })
        })
        .await;
    (c, e)
}

#[test]
fn members_that_differ_are_refused_with_a_reason() {
    run(|sp| async move {
        let relay = start_relay(&sp, quick_relay()).await;
        let (app, _a) = named_app("one").await;
        let port = free_port();
        let c1 = start_client(&sp, member(&relay, "web", port, app)).await;
        c1.bound().await;
        let refused = async |cfg: ClientConfig| match answer(&sp, cfg).await.1 {
            Event::BindRefused { reason, .. } => reason,
            other => panic!("not refused: {other:?}"),
        };
        // Another pool name on the same port.
        let why = refused(member(&relay, "api", port, app)).await;
        assert!(why.contains("belongs to pool web"), "{why}");
        // No pool at all: the second client is refused as without pools.
        let mut plain = member(&relay, "web", port, app);
        plain.pool = None;
        let why = refused(plain).await;
        assert!(why.contains("shared by a pool"), "{why}");
        // A proxy member in a forward pool.
        let mut proxy = member(&relay, "web", port, app);
        proxy.remotes = vec![format!("127.0.0.1:{port}:proxy").parse().unwrap()];
        proxy.rules = burrow::cli::configs::parse_rules(&["127.0.0.1".into()], &[]).unwrap();
        let why = refused(proxy).await;
        assert!(why.contains("is a forward, this binding a proxy"), "{why}");
        // The pool still serves.
        assert_eq!(visit(SocketAddr::from(([127, 0, 0, 1], port))).await, "one");
    });
}

#[test]
fn proxy_members_must_agree_on_rules_and_credentials() {
    run(|sp| async move {
        let relay = start_relay(&sp, quick_relay()).await;
        let port = free_port();
        let proxy = |allow: &str, auth: Option<&str>| {
            let mut c = ClientConfig::new(relay.url());
            c.remotes = vec![format!("127.0.0.1:{port}:proxy").parse().unwrap()];
            c.pool = Some("egress".into());
            c.rules = burrow::cli::configs::parse_rules(&[allow.into()], &[]).unwrap();
            c.proxy_auth = auth.map(|a| a.parse().unwrap());
            c
        };
        let c1 = start_client(&sp, proxy("*.example:443", Some("u:p"))).await;
        c1.bound().await;
        let (_c, e) = answer(&sp, proxy("*.example:80", Some("u:p"))).await;
        assert!(
            matches!(&e, Event::BindRefused { reason, .. } if reason.contains("--allow/--deny differ")),
            "{e:?}"
        );
        let (_c, e) = answer(&sp, proxy("*.example:443", Some("u:other"))).await;
        assert!(
            matches!(&e, Event::BindRefused { reason, .. } if reason.contains("--proxy-auth differs") && !reason.contains("other")),
            "{e:?}"
        );
        // The same rules and credentials join.
        let (_c, e) = answer(&sp, proxy("*.example:443", Some("u:p"))).await;
        assert!(matches!(e, Event::Bound { .. }), "{e:?}");
    });
}

#[test]
fn the_port_is_held_through_grace_and_released_after() {
    run(|sp| async move {
        let relay = start_relay(
            &sp,
            RelayConfig {
                grace: Duration::from_millis(300),
                ..RelayConfig::default()
            },
        )
        .await;
        let (app, _a) = named_app("one").await;
        let port = free_port();
        let c1 = start_client(&sp, member(&relay, "web", port, app)).await;
        c1.bound().await;
        c1.shutdown.drain();
        within(10, "member ends", c1.task).await.unwrap();
        // Released once the grace period is over: the port can be bound again.
        eventually("port released", || {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        })
        .await;
        // A new member makes the pool anew.
        let c2 = start_client(&sp, member(&relay, "web", port, app)).await;
        assert_eq!(c2.bound().await.port(), port);
        assert_eq!(visit(SocketAddr::from(([127, 0, 0, 1], port))).await, "one");
    });
}

#[test]
fn a_member_returning_within_grace_keeps_the_port() {
    run(|sp| async move {
        let relay = start_relay(&sp, quick_relay()).await;
        let (app, _a) = named_app("one").await;
        let port = free_port();
        let c1 = start_client(&sp, member(&relay, "web", port, app)).await;
        c1.bound().await;
        c1.shutdown.drain();
        within(10, "member ends", c1.task).await.unwrap();
        // Held: nobody else can take the port meanwhile.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        let c2 = start_client(&sp, member(&relay, "web", port, app)).await;
        assert_eq!(c2.bound().await.port(), port);
        assert_eq!(visit(SocketAddr::from(([127, 0, 0, 1], port))).await, "one");
    });
}

#[test]
fn a_pool_needs_an_explicit_port() {
    run(|sp| async move {
        let relay = start_relay(&sp, quick_relay()).await;
        // The relay refuses a pool BIND of port 0 (a client's config refuses it first).
        let (session, _driver) = raw_session(relay.addr, "raw-pool-zero").await;
        session.send_session_frame(burrow::tunnel::Frame::Bind {
            bind_id: 1,
            addr: String::new(),
            port: 0,
            mode: burrow::tunnel::BindMode::Forward,
            pool: Some(Box::new(burrow::tunnel::BindPool {
                name: "web".into(),
                policy: String::new(),
            })),
        });
        let answer = within(10, "answer", session.session_frame()).await;
        assert!(
            matches!(&answer, Some(burrow::tunnel::Frame::BindRefused { reason, .. }) if reason.contains("explicit port")),
            "{answer:?}"
        );
    });
    let (code, out) = run_binary(&["client", "ws://127.0.0.1:1", "-R", "0:a:1", "--pool", "web"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("a pool shares an explicit port"), "{out}");
    let (code, out) = run_binary(&[
        "client",
        "ws://127.0.0.1:1",
        "-R",
        "9000:a:1",
        "--pool",
        "a b",
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--pool"), "{out}");
}
