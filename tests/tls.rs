#![cfg(feature = "tls")]
//! `wss://`: the relay's certificate, the client's verification, and reloads.

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::relay::RelayConfig;
use burrow::tls::{ClientTlsOptions, ServerTls};
use common::certs::{Ca, TempDir};
use common::tunnel::*;
use common::*;
use std::sync::Arc;

fn tls_relay_cfg(cert: &std::path::Path, key: &std::path::Path) -> (RelayConfig, Arc<ServerTls>) {
    let tls = Arc::new(ServerTls::load(cert, key).unwrap());
    (
        RelayConfig {
            tls: Some(tls.clone()),
            ..RelayConfig::default()
        },
        tls,
    )
}

fn wss(relay: &RunningRelay, host: &str) -> ClientConfig {
    ClientConfig::new(
        format!("wss://{host}:{}/burrow", relay.addr.port())
            .parse()
            .unwrap(),
    )
}

async fn fatal_error(sp: &burrow::exec::Spawner, cfg: ClientConfig) -> String {
    let c = start_client(sp, cfg).await;
    within(10, "client stops", c.task)
        .await
        .unwrap_err()
        .to_string()
}

#[test]
fn wss_with_a_private_ca_carries_the_tunnel() {
    run(|sp| async move {
        let dir = TempDir::new("wss");
        let ca = Ca::new("burrow test CA");
        let (cert, key) = ca.write_leaf(&dir, "relay", &["localhost"], false);
        let (origin, _o) = start_origin(&sp).await;
        let (cfg, _) = tls_relay_cfg(&cert, &key);
        let relay = start_relay(&sp, cfg).await;
        let mut cfg = wss(&relay, "localhost");
        cfg.tls = ClientTlsOptions {
            ca: Some(ca.write(&dir, "trusted")),
            insecure: false,
        };
        cfg.remotes = vec![format!("127.0.0.1:0:{origin}").parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        let public = c.bound().await;
        let (head, mut r) = send_raw(
            public,
            b"GET /over-tls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(head.status, 200);
        assert!(
            String::from_utf8(read_all(&mut r).await)
                .unwrap()
                .contains("GET /over-tls")
        );
        // The relay's HTTP surface is behind TLS too: plain HTTP does not get through.
        let (plain, _) = within(10, "plain", async {
            let mut s = smol::net::TcpStream::connect(relay.addr).await.unwrap();
            futures_lite::io::AsyncWriteExt::write_all(
                &mut s,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            )
            .await
            .unwrap();
            let mut buf = Vec::new();
            let _ = futures_lite::io::AsyncReadExt::read_to_end(&mut s, &mut buf).await;
            (buf, ())
        })
        .await;
        assert!(
            !String::from_utf8_lossy(&plain).contains("200"),
            "plain HTTP on a TLS port"
        );
    });
}

#[test]
fn certificate_problems_stop_the_client_with_the_cause() {
    run(|sp| async move {
        let dir = TempDir::new("badcert");
        let ca = Ca::new("burrow test CA");
        let trusted = ca.write(&dir, "trusted");
        let cases = [
            (
                "unknown issuer",
                ca.write_leaf(&dir, "ok", &["localhost"], false),
                None,
                "unknown issuer",
            ),
            (
                "wrong name",
                ca.write_leaf(&dir, "other", &["other.example"], false),
                Some(trusted.clone()),
                "not valid for the name",
            ),
            (
                "expired",
                ca.write_leaf(&dir, "old", &["localhost"], true),
                Some(trusted.clone()),
                "expired",
            ),
        ];
        for (what, (cert, key), ca_file, want) in cases {
            let (cfg, _) = tls_relay_cfg(&cert, &key);
            let relay = start_relay(&sp, cfg).await;
            let mut cfg = wss(&relay, "localhost");
            cfg.tls = ClientTlsOptions {
                ca: ca_file,
                insecure: false,
            };
            cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
            let err = fatal_error(&sp, cfg).await;
            assert!(err.contains(want), "{what}: {err}");
        }
        // --insecure accepts even the wrong name.
        let (cert, key) = ca.write_leaf(&dir, "other2", &["other.example"], false);
        let (cfg, _) = tls_relay_cfg(&cert, &key);
        let relay = start_relay(&sp, cfg).await;
        let mut cfg = wss(&relay, "localhost");
        cfg.tls = ClientTlsOptions {
            ca: None,
            insecure: true,
        };
        cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        c.bound().await;
    });
}

#[test]
fn reload_swaps_the_certificate_without_dropping_sessions() {
    run(|sp| async move {
        let dir = TempDir::new("reload");
        let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
        let (cert, key) = old_ca.write_leaf(&dir, "relay", &["localhost"], false);
        let (origin, _o) = start_origin(&sp).await;
        let (cfg, tls) = tls_relay_cfg(&cert, &key);
        let relay = start_relay(&sp, cfg).await;
        let mut first = wss(&relay, "localhost");
        first.tls.ca = Some(old_ca.write(&dir, "old"));
        first.remotes = vec![format!("127.0.0.1:0:{origin}").parse().unwrap()];
        let a = start_client(&sp, first).await;
        let public = a.bound().await;
        // New certificate files, then the reload SIGHUP triggers.
        let (c2, k2) = new_ca.leaf(&["localhost"], false);
        std::fs::write(&cert, c2).unwrap();
        std::fs::write(&key, k2).unwrap();
        tls.reload().unwrap();
        // A client trusting only the new CA now gets in...
        let mut second = wss(&relay, "localhost");
        second.tls.ca = Some(new_ca.write(&dir, "new"));
        second.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        let b = start_client(&sp, second).await;
        b.bound().await;
        // ...and the first session was not dropped.
        let (head, _) = send_raw(
            public,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(head.status, 200);
        assert!(
            a.events
                .try_recv()
                .map_or(true, |e| !matches!(e, Event::Lost(_))),
            "the first session survived"
        );
        // A broken file keeps the current certificate.
        std::fs::write(&key, "not a key").unwrap();
        assert!(tls.reload().is_err());
    });
}
