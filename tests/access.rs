//! Access control that must fail closed: target rules through an upstream chain, addresses
//! that are never dialed, and the `:proxy` modes' exposure and credentials (issue 7, items
//! 1-4). Each attack here got through before its fix.

mod common;

use burrow::client::{Client, ClientConfig, ClientError};
use burrow::dial::chain::{ChainNames, Hop, HopKind, Upstream};
use burrow::dial::rules::Rules;
use burrow::proxy::ProxyConfig;
use burrow::relay::RelayConfig;
use common::tunnel::*;
use common::*;
use std::net::SocketAddr;

fn rules(allow: &[&str], deny: &[&str]) -> Rules {
    Rules {
        allow: allow.iter().map(|r| r.parse().unwrap()).collect(),
        deny: deny.iter().map(|r| r.parse().unwrap()).collect(),
    }
}

fn chain_to(upstream: SocketAddr) -> Upstream {
    Upstream {
        hops: vec![Hop {
            kind: HopKind::Http,
            host: "127.0.0.1".into(),
            port: upstream.port(),
            auth: None,
        }],
        no_proxy: vec![],
    }
}

/// CONNECT and absolute-form GET to `host:port`; both statuses.
async fn statuses(proxy: SocketAddr, host: &str, port: u16) -> (u16, u16) {
    let authority = burrow::dial::host_port(host, port);
    let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    let (c, _) = send_raw(proxy, connect.as_bytes()).await;
    let get = format!(
        "GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    );
    let (g, _) = send_raw(proxy, get.as_bytes()).await;
    (c.status, g.status)
}

#[test]
fn through_a_chain_a_name_needs_a_name_rule() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        // The upstream hop: a proxy with no rules of its own (it would reach anything).
        let hop = start_proxy(&sp, ProxyConfig::default()).await;
        let start = |rules: Rules, names: ChainNames| {
            let sp = sp.clone();
            let upstream = chain_to(hop.addr);
            async move {
                start_proxy(
                    &sp,
                    ProxyConfig {
                        upstream,
                        rules,
                        names,
                        ..ProxyConfig::default()
                    },
                )
                .await
            }
        };
        let port = origin.port();
        // `--allow 10.0.0.0/8`: "localhost" is no name rule's match, and its addresses are
        // never seen here (the chain resolves it): 403, not a tunnel to the hop's loopback.
        let p = start(rules(&["10.0.0.0/8"], &[]), ChainNames::ByName).await;
        assert_eq!(statuses(p.addr, "localhost", port).await, (403, 403));
        assert_eq!(statuses(p.addr, "127.0.0.1", port).await, (403, 403));
        // `--deny 127.0.0.0/8` alone: a name could resolve there; refused through a chain.
        let p = start(rules(&[], &["127.0.0.0/8"]), ChainNames::ByName).await;
        assert_eq!(statuses(p.addr, "localhost", port).await, (403, 403));
        // A name rule allows the name itself.
        let p = start(rules(&["localhost"], &[]), ChainNames::ByName).await;
        assert_eq!(statuses(p.addr, "localhost", port).await, (200, 200));
        // --resolve-names: the addresses decide, every one of them.
        let p = start(rules(&["10.0.0.0/8"], &[]), ChainNames::Resolve).await;
        assert_eq!(statuses(p.addr, "localhost", port).await.0, 403);
        let p = start(rules(&["127.0.0.0/8", "::1"], &[]), ChainNames::Resolve).await;
        assert_eq!(statuses(p.addr, "localhost", port).await, (200, 200));
        // No rules at all: a chain passes names on as before.
        let p = start(Rules::default(), ChainNames::ByName).await;
        assert_eq!(statuses(p.addr, "localhost", port).await, (200, 200));
    });
}

/// The spellings of "this host" that the issue found reaching loopback past the rules.
const UNSPECIFIED: &[&str] = &["0.0.0.0", "0", "::ffff:0.0.0.0", "::", "0.1.2.3"];

#[test]
fn unspecified_addresses_are_never_dialed_by_the_proxy() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let deny = rules(&[], &["127.0.0.0/8", "::1", "localhost"]);
        for rules in [deny, Rules::default()] {
            let p = start_proxy(
                &sp,
                ProxyConfig {
                    rules: rules.clone(),
                    ..ProxyConfig::default()
                },
            )
            .await;
            assert!(!UNSPECIFIED.is_empty());
            for host in UNSPECIFIED {
                assert_eq!(
                    statuses(p.addr, host, origin.port()).await,
                    (403, 403),
                    "{host} with {rules:?}"
                );
            }
            // And through a chain: the last hop would dial its own loopback.
            let chained = start_proxy(
                &sp,
                ProxyConfig {
                    upstream: chain_to(p.addr),
                    rules: rules.clone(),
                    ..ProxyConfig::default()
                },
            )
            .await;
            for host in ["0.0.0.0", "::"] {
                assert_eq!(
                    statuses(chained.addr, host, origin.port()).await,
                    (403, 403),
                    "chain: {host}"
                );
            }
        }
        // The loopback address itself still works without rules: only unspecified is refused.
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        assert_eq!(
            statuses(p.addr, "127.0.0.1", origin.port()).await,
            (200, 200)
        );
    });
}

#[test]
fn unspecified_addresses_are_never_dialed_through_the_tunnel() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = ClientConfig::new(relay.url());
        // -L …:proxy: the relay dials. -R …:proxy: this client dials.
        cfg.locals = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        let remote = c.bound().await;
        let local = c.locals[0];
        for proxy in [local, remote] {
            for host in UNSPECIFIED {
                assert_eq!(
                    statuses(proxy, host, origin.port()).await,
                    (403, 403),
                    "{host} via {proxy}"
                );
            }
            assert_eq!(
                statuses(proxy, "127.0.0.1", origin.port()).await,
                (200, 200),
                "via {proxy}"
            );
        }
    });
}

#[test]
fn local_proxy_takes_the_proxy_credentials() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.locals = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        cfg.proxy_auth = Some("local:pw".parse().unwrap());
        let c = start_client(&sp, cfg).await;
        let local = c.locals[0];
        c.wait("connected", |e| {
            matches!(e, burrow::client::Event::Connected)
        })
        .await;
        assert_eq!(connect_via(local, origin, "").await.0.status, 407);
        assert_eq!(
            connect_via(local, origin, &basic("local:wrong"))
                .await
                .0
                .status,
            407
        );
        assert_eq!(
            connect_via(local, origin, &basic("local:pw"))
                .await
                .0
                .status,
            200
        );
    });
}

#[test]
fn credentials_a_bind_cannot_carry_are_refused_before_anything_runs() {
    run(|_sp| async move {
        let mut cfg = ClientConfig::new("ws://127.0.0.1:1/burrow".parse().unwrap());
        cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        cfg.proxy_auth = Some(format!("u:{}", "p".repeat(300)).parse().unwrap());
        match Client::bind(cfg).await {
            Err(ClientError::Config(why)) => assert!(why.contains("--proxy-auth"), "{why}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a client with credentials a BIND would cut was started"),
        }
    });
}

#[test]
fn open_proxy_modes_are_refused_with_exit_2() {
    let url = "ws://127.0.0.1:1/burrow";
    let long = format!("u:{}", "secretpw".repeat(40));
    let cases: &[(&[&str], &str)] = &[
        (&["client", url, "-R", "0:proxy"], "--open"),
        (&["client", url, "-R", "0.0.0.0:3128:proxy"], "--open"),
        (&["client", url, "-L", "0.0.0.0:0:proxy"], "--proxy-auth"),
        (
            &[
                "client",
                url,
                "-R",
                "127.0.0.1:0:proxy",
                "--proxy-auth",
                &long,
            ],
            "at most 255",
        ),
    ];
    for (args, says) in cases {
        let (code, err) = run_binary(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("secretpw"), "the password leaked: {err}");
    }
}

#[test]
fn unusable_environment_values_are_errors_not_defaults() {
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"user:\xff\xfe");
    // Before: a secret that is not UTF-8 read as "unset", so the proxy ran without auth.
    let (code, err) = run_binary_env(
        &["proxy", "--listen", "127.0.0.1:0"],
        &[("BURROW_PROXY_AUTH", not_utf8)],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("BURROW_PROXY_AUTH"), "{err}");
    let (code, err) = run_binary_env(
        &["proxy", "--listen", "127.0.0.1:0"],
        &[("BURROW_THREADS", std::ffi::OsStr::new("many"))],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("BURROW_THREADS"), "{err}");
}
