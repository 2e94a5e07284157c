//! One refusal vocabulary end to end: what the far end of a tunnel refuses a stream with
//! (its OPEN_REFUSED code) is what a user of a `-R …:proxy` or `-L …:proxy` sees as an HTTP
//! status, and what the relay counts. The statuses are the ones every path answered before
//! the refusal types became one (issue 8).

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::dial::rules::Rules;
use burrow::refusal::{Refusal, RefuseCode};
use burrow::relay::RelayConfig;
use burrow::tunnel::frame::ProxyAuth;
use burrow::tunnel::{BindMode, Frame};
use common::tunnel::{raw_session, start_client, start_relay};
use common::{closed_port, connect_via, run, start_echo, within};
use std::net::SocketAddr;

/// The HTTP status a proxy answered each far-end code with before issue 8
/// (`RefuseCode::http_status`, through `DialError::Tunnel { status }`).
const BEFORE: [(RefuseCode, u16); 7] = [
    (RefuseCode::Forbidden, 403),
    (RefuseCode::Unreachable, 502),
    (RefuseCode::Timeout, 504),
    (RefuseCode::TooManyStreams, 503),
    (RefuseCode::BadRequest, 400),
    (RefuseCode::GoingAway, 503),
    (RefuseCode::Other, 502),
];

#[test]
fn a_far_end_refusal_is_the_same_status_at_a_remote_proxy() {
    run(|sp| async move {
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let (session, _driver) = raw_session(relay.addr, "refuser").await;
        session.send_session_frame(Frame::Bind {
            bind_id: 1,
            addr: "127.0.0.1".into(),
            port: 0,
            mode: BindMode::Proxy {
                auth: ProxyAuth::open(),
            },
            pool: None,
        });
        let public: SocketAddr = match within(10, "bound", session.session_frame()).await {
            Some(Frame::Bound { addr, .. }) => addr.parse().unwrap(),
            other => panic!("not bound: {other:?}"),
        };
        assert!(!BEFORE.is_empty());
        for (code, status) in BEFORE {
            // A visitor CONNECTs through the relay's proxy; the relay opens a stream to us,
            // and we refuse it with `code`.
            let visitor = smol::spawn(connect_via(public, closed_port(), ""));
            let inc = within(10, "the relay's OPEN", session.accept())
                .await
                .expect("session open");
            inc.refuse(code, "refused by the test");
            let (head, _) = within(10, "the visitor's answer", visitor).await;
            assert_eq!(head.status, status, "{code:?}");
            assert_eq!(Refusal::from(code).http_status(), status, "{code:?}");
        }
    });
}

#[test]
fn a_far_end_refusal_is_the_same_status_at_a_local_proxy() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        // Relay one refuses by its rules (forbidden) or because the target is down
        // (unreachable); relay two has no dial slots (too many dials: too many streams).
        let denied = RelayConfig {
            rules: Rules {
                allow: vec![],
                deny: vec![format!("127.0.0.1:{}", echo.port()).parse().unwrap()],
            },
            ..RelayConfig::default()
        };
        let mut no_dials = RelayConfig::default();
        no_dials.limits.max_dials = 0;
        let cases: [(RelayConfig, SocketAddr, Refusal, u16); 3] = [
            (denied.clone(), echo, Refusal::Forbidden, 403),
            (denied, closed_port(), Refusal::Unreachable, 502),
            (no_dials, echo, Refusal::TooManyDials, 503),
        ];
        for (relay_cfg, target, counted, status) in cases {
            let relay = start_relay(&sp, relay_cfg).await;
            let mut cfg = ClientConfig::new(relay.url());
            cfg.locals = vec!["127.0.0.1:0:proxy".parse().unwrap()];
            let client = start_client(&sp, cfg).await;
            client.wait("connected", |e| *e == Event::Connected).await;
            let (head, _) = connect_via(client.locals[0], target, "").await;
            assert_eq!(head.status, status, "{counted:?}");
            assert_eq!(relay.metrics.refusals(counted), 1, "{counted:?}");
            assert_eq!(counted.http_status(), status, "{counted:?}");
        }
    });
}
