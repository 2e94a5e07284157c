//! Live reload of a running client (issue 11): `-L` and `-R` added, removed and unchanged on a
//! live session, with a download running through an unchanged one; removed ports refuse
//! connections while their open streams finish; a relay without the UNBIND capability; the
//! settings that need a restart, and a busy port that leaves everything as it was.

mod common;
#[path = "client_reload/fixtures.rs"]
mod fixtures;

use burrow::client::{Client, ClientConfig, Event};
use burrow::relay::RelayConfig;
use burrow::reload::ReloadError;
use burrow::shutdown::Shutdown;
use common::tunnel::start_relay;
use common::{lo, run, start_echo, within};
use fixtures::*;
use futures_lite::FutureExt;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn forwards_added_removed_and_unchanged_while_a_download_runs() {
    logs();
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (data, _d) = start_download().await;
        let (echo, _e) = start_echo().await;
        let mut cfg = client_cfg(&relay);
        let (keep, drop_, add) = (
            format!("127.0.0.1:0:{data}"),
            format!("127.0.0.1:0:{echo}"),
            format!("127.0.0.1:0:localhost:{}", echo.port()),
        );
        cfg.locals = vec![keep.parse().unwrap(), drop_.parse().unwrap()];
        let client = Running::start(&sp, cfg.clone()).await;
        client.wait("connected", |e| *e == Event::Connected).await;
        let (kept_at, dropped_at) = (client.locals[0], client.locals[1]);
        let download = Download::start(kept_at).await;
        let mut open = within(10, "connect", TcpStream::connect(dropped_at))
            .await
            .unwrap();
        echo_once(&mut open, b"before").await;

        cfg.locals = vec![keep.parse().unwrap(), add.parse().unwrap()];
        let changes = within(10, "reload", client.handle.reload(cfg))
            .await
            .unwrap();
        assert_eq!(
            changes,
            [
                format!("forward {drop_} removed"),
                format!("forward {add} added")
            ]
        );
        // The removed port refuses at once; its open stream goes on until it ends.
        refuses(dropped_at, "removed -L").await;
        echo_once(&mut open, b"after the removal").await;
        drop(open);
        // The added one works; the unchanged one kept its listener and its download.
        let added_at = client
            .listening(&format!("localhost:{}", echo.port()))
            .await;
        echoes(added_at).await;
        download.finish().await;
        Download::start(kept_at).await.finish().await;
        client.shutdown.drain();
    });
}

#[test]
fn exposes_added_removed_and_unchanged_while_a_download_runs() {
    logs();
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (data, _d) = start_download().await;
        let (echo, _e) = start_echo().await;
        let (echo2, _e2) = start_echo().await;
        let mut cfg = client_cfg(&relay);
        let (keep, drop_, add) = (
            format!("127.0.0.1:0:{data}"),
            format!("127.0.0.1:0:{echo}"),
            format!("127.0.0.1:0:{echo2}"),
        );
        cfg.remotes = vec![keep.parse().unwrap(), drop_.parse().unwrap()];
        let client = Running::start(&sp, cfg.clone()).await;
        let kept_at = client.bound_to(data).await;
        let dropped_at = client.bound_to(echo).await;
        assert!((client.ready)(), "both -R bound: ready");
        let download = Download::start(kept_at).await;
        let mut open = within(10, "connect", TcpStream::connect(dropped_at))
            .await
            .unwrap();
        echo_once(&mut open, b"before").await;

        cfg.remotes = vec![keep.parse().unwrap(), add.parse().unwrap()];
        let changes = within(10, "reload", client.handle.reload(cfg))
            .await
            .unwrap();
        assert_eq!(
            changes,
            [
                format!("expose {drop_} removed"),
                format!("expose {add} added")
            ]
        );
        // The relay released the removed port (UNBIND); its open stream goes on.
        refuses(dropped_at, "removed -R").await;
        echo_once(&mut open, b"after the removal").await;
        drop(open);
        let added_at = client.bound_to(echo2).await;
        echoes(added_at).await;
        common::tunnel::eventually("ready with the new -R", || (client.ready)()).await;
        // The unchanged binding kept its port (no second BOUND for it) and its download.
        download.finish().await;
        Download::start(kept_at).await.finish().await;
        while let Ok(e) = client.events.try_recv() {
            assert!(
                !matches!(&e, Event::Bound { target, .. } if *target == data.to_string()),
                "the unchanged -R was bound again: {e:?}"
            );
        }
        client.shutdown.drain();
    });
}

#[test]
fn a_relay_without_unbind_keeps_the_port_and_the_client_refuses_its_streams() {
    logs();
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        // An older relay: its 101 announces no capabilities.
        let older = StripCaps::start(relay.addr).await;
        let (echo, _e) = start_echo().await;
        let (echo2, _e2) = start_echo().await;
        let mut cfg = ClientConfig::new(format!("ws://{}/burrow", older.addr).parse().unwrap());
        let drop_ = format!("127.0.0.1:0:{echo}");
        cfg.remotes = vec![
            drop_.parse().unwrap(),
            format!("127.0.0.1:0:{echo2}").parse().unwrap(),
        ];
        let client = Running::start(&sp, cfg.clone()).await;
        let dropped_at = client.bound_to(echo).await;
        let kept_at = client.bound_to(echo2).await;
        let mut open = within(10, "connect", TcpStream::connect(dropped_at))
            .await
            .unwrap();
        echo_once(&mut open, b"before").await;

        cfg.remotes.remove(0);
        let changes = within(10, "reload", client.handle.reload(cfg.clone()))
            .await
            .unwrap();
        assert_eq!(changes, [format!("expose {drop_} removed")]);
        // A fence: the relay answers session frames in order, so once this BIND is answered
        // an UNBIND sent before it would have closed the port.
        let (echo3, _e3) = start_echo().await;
        cfg.remotes
            .push(format!("127.0.0.1:0:{echo3}").parse().unwrap());
        within(10, "reload", client.handle.reload(cfg))
            .await
            .unwrap();
        client.bound_to(echo3).await;
        // No UNBIND was sent: the relay still listens, but a new visitor's stream is refused
        // by the client (the visitor sees the connection close, nothing echoed).
        let mut visitor = within(10, "connect", TcpStream::connect(dropped_at))
            .await
            .expect("the port stays bound on a relay without UNBIND");
        visitor.write_all(b"anyone?").await.ok();
        let mut buf = [0u8; 16];
        let got = within(10, "refusal", visitor.read(&mut buf)).await;
        assert!(
            matches!(got, Ok(0) | Err(_)),
            "a removed binding served: {got:?}"
        );
        // The open stream finishes; the other binding works.
        echo_once(&mut open, b"after the removal").await;
        echoes(kept_at).await;
        client.shutdown.drain();
    });
}

#[test]
fn restart_settings_and_a_busy_port_change_nothing() {
    logs();
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (echo, _e) = start_echo().await;
        let mut cfg = client_cfg(&relay);
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let client = Running::start(&sp, cfg.clone()).await;
        client.wait("connected", |e| *e == Event::Connected).await;
        let at = client.locals[0];

        let mut other = cfg.clone();
        other.url = "ws://127.0.0.1:1/burrow".parse().unwrap();
        let answer = client.handle.reload(other).await;
        assert!(
            matches!(&answer, Err(ReloadError::Restart(w)) if w.contains("url")),
            "{answer:?}"
        );
        let mut other = cfg.clone();
        other.token = Some(burrow::secret::Secret::new("another"));
        let answer = client.handle.reload(other).await;
        assert!(
            matches!(&answer, Err(ReloadError::Restart(w)) if w.contains("token")),
            "{answer:?}"
        );
        let mut other = cfg.clone();
        other.locals.push("stdio:localhost:22".parse().unwrap());
        let answer = client.handle.reload(other).await;
        assert!(matches!(answer, Err(ReloadError::Failed(_))), "{answer:?}");

        // A busy port: the free new -L, the added -R and the removal are not applied either.
        let busy = std::net::TcpListener::bind(lo()).unwrap();
        let mut other = cfg.clone();
        other.locals = vec![
            format!("127.0.0.1:0:localhost:{}", echo.port())
                .parse()
                .unwrap(),
            format!("{}:{echo}", busy.local_addr().unwrap())
                .parse()
                .unwrap(),
        ];
        other.remotes = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let answer = client.handle.reload(other).await;
        assert!(
            matches!(&answer, Err(ReloadError::Failed(w)) if w.contains("cannot listen")),
            "{answer:?}"
        );
        echoes(at).await;
        // The config in force is still the first one: reloading it changes nothing.
        let same = within(10, "reload", client.handle.reload(cfg)).await;
        assert_eq!(same, Ok(vec![]));
        while let Ok(e) = client.events.try_recv() {
            assert!(
                !matches!(e, Event::Listening { .. } | Event::Bound { .. }),
                "a failed reload applied something: {e:?}"
            );
        }
        client.shutdown.drain();
    });
}

#[test]
fn a_reload_before_run_applies_when_it_runs() {
    logs();
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (echo, _e) = start_echo().await;
        let mut cfg = client_cfg(&relay);
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let client = Client::bind(cfg.clone()).await.unwrap();
        let (handle, events) = (client.handle(), client.events());
        let first = client.local_addrs()[0];
        cfg.locals = vec![
            format!("127.0.0.1:0:localhost:{}", echo.port())
                .parse()
                .unwrap(),
        ];
        let changes = within(10, "reload", handle.reload(cfg)).await.unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        refuses(first, "removed before run").await;
        let now = client.local_addrs();
        assert_eq!(now.len(), 1);
        let shutdown = Shutdown::new();
        let _task = smol::spawn(client.run(sp.clone(), shutdown.signal()));
        within(10, "connected", async {
            while events.recv().await.unwrap() != Event::Connected {}
        })
        .await;
        echoes(now[0]).await;
        shutdown.drain();
    });
}

#[test]
fn rules_and_credentials_apply_to_new_streams() {
    logs();
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (echo, _e) = start_echo().await;
        let mut cfg = client_cfg(&relay);
        cfg.locals = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        let client = Running::start(&sp, cfg.clone()).await;
        let public = match client
            .wait("bound", |e| matches!(e, Event::Bound { .. }))
            .await
        {
            Event::Bound { addr, .. } => addr.parse::<SocketAddr>().unwrap(),
            _ => unreachable!(),
        };
        let local = client.locals[0];
        let (head, mut visitor) = common::connect_via(public, echo, "").await;
        assert_eq!(head.status, 200);
        let (head, mut user) = common::connect_via(local, echo, "").await;
        assert_eq!(head.status, 200);

        // Rules decide what -R …:proxy visitors reach from this network: the next one.
        cfg.rules.deny = vec!["127.0.0.1".parse().unwrap()];
        let changes = within(10, "reload", client.handle.reload(cfg.clone())).await;
        assert_eq!(changes, Ok(vec!["rules changed".to_string()]));
        let (head, _) = common::connect_via(public, echo, "").await;
        assert_eq!(head.status, 403, "the new rules apply to the next visitor");
        visitor.get_mut().write_all(b"open").await.unwrap();
        let mut back = [0u8; 4];
        within(10, "echo", visitor.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(&back, b"open");

        // The relay holds a -R …:proxy binding's credentials: a restart changes them.
        cfg.proxy_auth = Some("u:p".parse().unwrap());
        let answer = client.handle.reload(cfg.clone()).await;
        assert!(matches!(answer, Err(ReloadError::Restart(_))), "{answer:?}");
        // Without it, -L …:proxy asks the next connection for the new credentials.
        cfg.remotes.clear();
        let changes = within(10, "reload", client.handle.reload(cfg))
            .await
            .unwrap();
        assert_eq!(
            changes,
            ["expose 127.0.0.1:0:proxy removed", "proxy-auth changed"]
        );
        let (head, _) = common::connect_via(local, echo, "").await;
        assert_eq!(head.status, 407);
        let (head, _) = common::connect_via(local, echo, &common::basic("u:p")).await;
        assert_eq!(head.status, 200);
        user.get_mut().write_all(b"still").await.unwrap();
        let mut back = [0u8; 5];
        within(10, "echo", user.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(&back, b"still");
        client.shutdown.drain();
    });
}

#[test]
fn the_relay_releases_a_port_on_unbind_and_refuses_a_bind_id_in_use() {
    use burrow::tunnel::{BindMode, Frame};
    logs();
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (session, _driver) = common::tunnel::raw_session(relay.addr, "unbinder").await;
        let bind = |bind_id| Frame::Bind {
            bind_id,
            addr: "127.0.0.1".into(),
            port: 0,
            mode: BindMode::Forward,
            pool: None,
        };
        let answer = || async {
            within(10, "answer", session.session_frame())
                .await
                .expect("session open")
        };
        session.send_session_frame(bind(1));
        let Frame::Bound { bind_id: 1, addr } = answer().await else {
            panic!("not bound")
        };
        let first: SocketAddr = addr.parse().unwrap();
        session.send_session_frame(bind(1));
        let twice = answer().await;
        assert!(
            matches!(&twice, Frame::BindRefused { bind_id: 1, reason } if reason.contains("in use")),
            "{twice:?}"
        );
        // Unknown ids are ignored; the session goes on.
        session.send_session_frame(Frame::Unbind { bind_id: 99 });
        session.send_session_frame(Frame::Unbind { bind_id: 1 });
        refuses(first, "unbound port").await;
        // The id is free again.
        session.send_session_frame(bind(1));
        assert!(matches!(answer().await, Frame::Bound { bind_id: 1, .. }));
    });
}

#[test]
fn readiness_survives_a_resumed_connection() {
    logs();
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let link = common::tunnel::Forwarder::start(relay.addr).await;
        let (echo, _e) = start_echo().await;
        let mut cfg = ClientConfig::new(format!("ws://{}/burrow", link.addr).parse().unwrap());
        cfg.max_backoff = Duration::from_millis(300);
        cfg.remotes = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let client = Running::start(&sp, cfg).await;
        let public = client.bound_to(echo).await;
        assert!((client.ready)());
        link.cut();
        client
            .wait("resumed", |e| matches!(e, Event::Resumed { .. }))
            .await;
        // The relay kept the binding across the resume: still ready, still served.
        echoes(public).await;
        assert!((client.ready)(), "not ready after a resume");
        client.shutdown.drain();
    });
}

#[test]
fn a_forward_given_another_target_keeps_its_port() {
    logs();
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (echo, _e) = start_echo().await;
        let (data, _d) = start_download().await;
        let mut cfg = client_cfg(&relay);
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        let client = Running::start(&sp, cfg.clone()).await;
        client.wait("connected", |e| *e == Event::Connected).await;
        let at = client.locals[0];
        let mut open = within(10, "connect", TcpStream::connect(at)).await.unwrap();
        echo_once(&mut open, b"before").await;
        // The same address, another target: the listener is handed over, never closed.
        cfg.locals = vec![format!("{at}:{data}").parse().unwrap()];
        let changes = within(10, "reload", client.handle.reload(cfg))
            .await
            .unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(client.listening(&data.to_string()).await, at);
        Download::start(at).await.finish().await;
        echo_once(&mut open, b"after").await;
        client.shutdown.drain();
    });
}

#[test]
fn a_pool_member_binds_nothing_on_a_relay_without_pools() {
    logs();
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        // An older relay: its 101 announces no capabilities, so no `pool` either.
        let older = StripCaps::start(relay.addr).await;
        let (echo, _e) = start_echo().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = ClientConfig::new(format!("ws://{}/burrow", older.addr).parse().unwrap());
        cfg.remotes = vec![format!("127.0.0.1:{port}:{echo}").parse().unwrap()];
        cfg.pool = Some("web".into());
        let client = Running::start(&sp, cfg).await;
        client.wait("connected", |e| *e == Event::Connected).await;
        // Binding alone would take the port from the pool: nothing is asked for, so the
        // client never gets ready, and the port stays free on the relay.
        let answered = client
            .events
            .recv()
            .or(async {
                smol::Timer::after(Duration::from_millis(500)).await;
                Err(smol::channel::RecvError)
            })
            .await;
        assert!(!matches!(answered, Ok(Event::Bound { .. })), "{answered:?}");
        assert!(
            !(client.ready)(),
            "a pool member without its pool is not ready"
        );
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    });
}
