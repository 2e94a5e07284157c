//! Live reload of `burrow proxy` (issue 11): new credentials, rules and the connection limit
//! apply to the next connection; a CONNECT tunnel open before the reload keeps working.

mod common;

use burrow::proxy::{Proxy, ProxyConfig};
use burrow::shutdown::Shutdown;
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::TcpStream;

/// One round trip through an open tunnel to the echo server.
async fn echo_once(tunnel: &mut BufReader<TcpStream>, msg: &[u8]) {
    tunnel.get_mut().write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    within(10, "echo", tunnel.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(back, msg);
}

#[test]
fn new_settings_apply_to_the_next_connection_and_open_tunnels_keep_working() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let proxy = Proxy::bind(lo(), ProxyConfig::default()).await.unwrap();
        let (addr, handle) = (proxy.local_addr().unwrap(), proxy.handle());
        let shutdown = Shutdown::new();
        let _task = smol::spawn(proxy.run(sp.clone(), shutdown.signal()));

        let (head, mut open) = connect_via(addr, echo, "").await;
        assert_eq!(head.status, 200);
        echo_once(&mut open, b"before").await;

        let with_auth = ProxyConfig {
            auth: Some("alice:s3cret".parse().unwrap()),
            ..ProxyConfig::default()
        };
        let changes = handle.reload(with_auth.clone()).unwrap();
        assert_eq!(changes, ["auth changed"]);
        let (head, _) = connect_via(addr, echo, "").await;
        assert_eq!(
            head.status, 407,
            "the next connection needs the new credentials"
        );
        let (head, mut second) = connect_via(addr, echo, &basic("alice:s3cret")).await;
        assert_eq!(head.status, 200);
        echo_once(&mut second, b"with credentials").await;
        echo_once(&mut open, b"after the reload").await;

        // Rules: the next CONNECT to the echo server is refused; open tunnels go on.
        let deny = ProxyConfig {
            rules: burrow::dial::rules::Rules {
                deny: vec!["127.0.0.1".parse().unwrap()],
                ..Default::default()
            },
            ..with_auth.clone()
        };
        assert_eq!(handle.reload(deny).unwrap(), ["rules changed"]);
        let (head, _) = connect_via(addr, echo, &basic("alice:s3cret")).await;
        assert_eq!(head.status, 403);

        // The limit: two tunnels are open, so a limit of two turns the next one away.
        let limited = ProxyConfig {
            max_connections: 2,
            ..with_auth
        };
        let changes = handle.reload(limited).unwrap();
        assert_eq!(changes, ["rules changed", "max-connections changed"]);
        let (head, _) = connect_via(addr, echo, &basic("alice:s3cret")).await;
        assert_eq!(head.status, 503);
        echo_once(&mut open, b"still open").await;
        echo_once(&mut second, b"still open too").await;
        shutdown.drain();
    });
}
