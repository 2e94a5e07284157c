//! The operator's view on a real relay and client on 127.0.0.1: `/status.json` lists live
//! sessions with their bytes, bindings with their visitors, and the last refusals; `/status`
//! is HTML with peer text escaped; `/config` masks every secret; a non-loopback admin
//! listener asks for `--admin-token`.

mod common;
#[path = "status/json.rs"]
mod json;

use burrow::client::{Client, ClientConfig, Event};
use burrow::exec::Spawner;
use burrow::http::surface;
use burrow::relay::{Relay, RelayConfig};
use burrow::secret::Secret;
use burrow::shutdown::Shutdown;
use burrow::tunnel::frame::ProxyAuth;
use burrow::tunnel::ws::client_handshake;
use burrow::tunnel::{BindMode, Frame};
use common::tunnel::raw_session;
use common::{lo, run, start_echo, within};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use json::Json;
use smol::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "relay-token-7c1f0e";
const ADMIN_TOKEN: &str = "admin-token-55aa01";

/// A relay with an `--admin` listener at `admin` (port 0), and that listener's address.
struct AdminRelay {
    addr: SocketAddr,
    admin: SocketAddr,
    _shutdown: Shutdown,
    _task: smol::Task<()>,
}

async fn start_admin_relay(sp: &Spawner, admin: SocketAddr, cfg: RelayConfig) -> AdminRelay {
    let cfg = RelayConfig {
        admin: Some(admin),
        ..cfg
    };
    let relay = Relay::bind(lo(), cfg).await.unwrap();
    let addr = relay.local_addr().unwrap();
    let admin = relay.admin_addr().unwrap();
    let shutdown = Shutdown::new();
    let task = smol::spawn(relay.run(sp.clone(), shutdown.signal()));
    AdminRelay {
        addr,
        admin: SocketAddr::from(([127, 0, 0, 1], admin.port())),
        _shutdown: shutdown,
        _task: task,
    }
}

fn token_cfg() -> RelayConfig {
    RelayConfig {
        token: Some(Secret::new(TOKEN)),
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        ..RelayConfig::default()
    }
}

/// `GET path` over HTTP/1.1 (with `Authorization: Bearer` when given): status and body.
async fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    within(10, path, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!("GET {path} HTTP/1.1\r\nHost: status\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding"),
            "{head}"
        );
        (status, body.to_string())
    })
    .await
}

/// `/status.json`, parsed.
async fn status_json(addr: SocketAddr, bearer: Option<&str>) -> Json {
    let (status, body) = get(addr, "/status.json", bearer).await;
    assert_eq!(status, 200, "{body}");
    Json::parse(&body)
}

/// Polls `/status.json` until `cond` holds (bounded), and returns that view.
async fn status_until(addr: SocketAddr, what: &str, cond: impl Fn(&Json) -> bool) -> Json {
    within(10, what, async {
        loop {
            let j = status_json(addr, None).await;
            if cond(&j) {
                return j;
            }
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A client on `relay` with a `--status` listener serving its operator's view: the events,
/// the status address, and the tasks (dropped with the test).
async fn start_client_with_status(
    sp: &Spawner,
    cfg: ClientConfig,
) -> (
    smol::channel::Receiver<Event>,
    SocketAddr,
    Vec<SocketAddr>,
    Shutdown,
    Vec<smol::Task<()>>,
) {
    let client = Client::bind(cfg).await.unwrap();
    let events = client.events();
    let locals = client.local_addrs();
    let listener = TcpListener::bind(lo()).await.unwrap();
    let status_addr = listener.local_addr().unwrap();
    // What the binary's `--status` serves (see the report for main.rs).
    let route = surface::combine(
        client.status_route(),
        surface::standard_route(client.metrics(), Some(client.readiness())),
    );
    let shutdown = Shutdown::new();
    let serve =
        surface::serve_listener_as("status", listener, route, sp.clone(), shutdown.signal());
    let status_task = smol::spawn(serve);
    let run = client.run(sp.clone(), shutdown.signal());
    let client_task = smol::spawn(async move {
        run.await.unwrap();
    });
    (
        events,
        status_addr,
        locals,
        shutdown,
        vec![status_task, client_task],
    )
}

async fn wait_event(
    events: &smol::channel::Receiver<Event>,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    within(10, "client event", async {
        loop {
            let e = events.recv().await.expect("client events ended");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
}

#[test]
fn relay_status_lists_the_session_its_bytes_the_binding_and_its_visitors() {
    run(|sp| async move {
        let relay = start_admin_relay(&sp, lo(), token_cfg()).await;
        let (echo, _echo_task) = start_echo().await;
        let url = format!("ws://{}/burrow", relay.addr).parse().unwrap();
        let mut cfg = ClientConfig::new(url);
        cfg.token = Some(Secret::new(TOKEN));
        cfg.remotes = vec![format!("0:{echo}").parse().unwrap()];
        let (events, _status, _locals, _sd, _tasks) = start_client_with_status(&sp, cfg).await;
        let bound = match wait_event(&events, |e| matches!(e, Event::Bound { .. })).await {
            Event::Bound { addr, .. } => addr,
            _ => unreachable!(),
        };

        let j = status_until(relay.admin, "a session and a binding", |j| {
            j.get("sessions").len() == 1 && j.get("bindings").len() == 1
        })
        .await;
        let s = j.get("sessions").at(0);
        assert_eq!(s.get("token").str(), "default");
        assert!(s.get("peer").str().starts_with("127.0.0.1:"), "{s:?}");
        assert!(s.get("since").str().ends_with('Z'), "{s:?}");
        assert_eq!(s.get("bytes_in").num(), 0);
        let b = j.get("bindings").at(0);
        assert_eq!(b.get("public").str(), bound);
        assert_eq!(
            (b.get("visitors_now").num(), b.get("visitors_total").num()),
            (0, 0)
        );
        assert_eq!(j.get("version").str(), env!("CARGO_PKG_VERSION"));

        // A visitor sends 64 KiB through the binding and reads the echo, and stays.
        let mut visitor = TcpStream::connect(bound.as_str()).await.unwrap();
        let data = vec![0x5a_u8; 64 * 1024];
        let mut back = vec![0_u8; data.len()];
        within(10, "echo", async {
            visitor.write_all(&data).await.unwrap();
            visitor.read_exact(&mut back).await.unwrap();
        })
        .await;
        assert_eq!(back, data);
        let j = status_until(relay.admin, "a visitor's stream and bytes", |j| {
            let s = j.get("sessions").at(0);
            s.get("streams").num() == 1 && s.get("bytes_in").num() >= 64 * 1024
        })
        .await;
        let s = j.get("sessions").at(0);
        assert!(s.get("bytes_out").num() >= 64 * 1024, "{s:?}");
        let b = j.get("bindings").at(0);
        assert_eq!(
            (b.get("visitors_now").num(), b.get("visitors_total").num()),
            (1, 1)
        );
        assert!(j.get("bytes_in").num() >= 64 * 1024);

        // Once it leaves: none now, one in all.
        drop(visitor);
        status_until(relay.admin, "the visitor gone", |j| {
            let b = j.get("bindings").at(0);
            b.get("visitors_now").num() == 0 && b.get("visitors_total").num() == 1
        })
        .await;
    });
}

#[test]
fn a_wrong_token_is_listed_with_its_reason_and_the_page_escapes_peer_text() {
    run(|sp| async move {
        let relay = start_admin_relay(&sp, lo(), RelayConfig::default()).await;
        // A wrong token: the relay has none here, so use a relay that wants one.
        let strict = start_admin_relay(&sp, lo(), token_cfg()).await;
        let url = format!("ws://{}/burrow", strict.addr).parse().unwrap();
        let tcp = TcpStream::connect(strict.addr).await.unwrap();
        let wrong = Secret::new("not-the-token");
        let refused = within(
            10,
            "handshake",
            client_handshake(tcp, &url, Some(&wrong), "w"),
        );
        assert!(refused.await.is_err());
        let j = status_until(strict.admin, "the refusal", |j| {
            j.get("refusals").len() == 1
        })
        .await;
        let r = j.get("refusals").at(0);
        assert_eq!(r.get("reason").str(), "wrong token");
        assert!(r.get("who").str().starts_with("127.0.0.1:"), "{r:?}");
        assert_eq!(j.get("refusals_total").num(), 1);

        // A hostile bind address comes back in a refusal's detail: escaped on the page.
        let (session, _driver) = raw_session(relay.addr, "hostile").await;
        let hostile = "<script>alert('pwn')</script>";
        session.send_session_frame(Frame::Bind {
            bind_id: 1,
            addr: hostile.into(),
            port: 0,
            mode: BindMode::Proxy {
                auth: ProxyAuth::open(),
            },
            pool: None,
        });
        let j = status_until(relay.admin, "the bind refusal", |j| {
            j.get("refusals").len() == 1 && j.get("sessions").len() == 1
        })
        .await;
        let r = j.get("refusals").at(0);
        assert!(r.get("detail").str().contains(hostile), "{r:?}");
        assert_eq!(j.get("sessions").at(0).get("token").str(), "-");
        let (status, html) = get(relay.admin, "/status", None).await;
        assert_eq!(status, 200);
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;pwn&#39;)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("<td>-</td>"),
            "the session's token name: {html}"
        );
    });
}

#[test]
fn config_shows_the_running_configuration_with_every_secret_masked() {
    run(|sp| async move {
        let relay = start_admin_relay(&sp, lo(), token_cfg()).await;
        let (status, body) = get(relay.admin, "/config", None).await;
        assert_eq!(status, 200);
        assert!(!body.contains(TOKEN), "{body}");
        assert!(!body.contains(ADMIN_TOKEN), "{body}");
        assert!(body.starts_with("[relay]\n"), "{body}");
        assert!(
            body.contains(&format!("listen = \"{}\"\n", relay.addr)),
            "{body}"
        );
        assert!(body.contains("\ntoken = \"***\"\n"), "{body}");
        assert!(body.contains("\nadmin-token = \"***\"\n"), "{body}");
        assert!(body.contains("\nmax-sessions = 32\n"), "{body}");
    });
}

#[test]
fn a_non_loopback_admin_wants_the_admin_token() {
    run(|sp| async move {
        // The check is on the configured address (0.0.0.0), whatever the client connects to.
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        let relay = start_admin_relay(&sp, any, token_cfg()).await;
        for path in ["/status", "/status.json", "/config", "/metrics"] {
            assert_eq!(get(relay.admin, path, None).await.0, 401, "{path}");
            assert_eq!(get(relay.admin, path, Some("wrong")).await.0, 401, "{path}");
            let (status, body) = get(relay.admin, path, Some(ADMIN_TOKEN)).await;
            assert_eq!(status, 200, "{path}");
            assert!(!body.contains(ADMIN_TOKEN));
        }
        // The relay's tunnel token is not the admin token.
        assert_eq!(get(relay.admin, "/status", Some(TOKEN)).await.0, 401);
        // A probe needs no token.
        assert_eq!(get(relay.admin, "/healthz", None).await.0, 200);

        // On loopback the admin token is not asked for.
        let local = start_admin_relay(&sp, lo(), token_cfg()).await;
        assert_eq!(get(local.admin, "/status.json", None).await.0, 200);
    });
}

#[test]
fn the_client_status_shows_connected_and_its_binds() {
    run(|sp| async move {
        let relay = start_admin_relay(&sp, lo(), token_cfg()).await;
        let (echo, _echo_task) = start_echo().await;
        let url = format!("ws://{}/burrow", relay.addr).parse().unwrap();
        let mut cfg = ClientConfig::new(url);
        cfg.token = Some(Secret::new(TOKEN));
        cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
        cfg.remotes = vec![format!("0:{echo}").parse().unwrap()];
        let (events, status, locals, _sd, _tasks) = start_client_with_status(&sp, cfg).await;
        let bound = match wait_event(&events, |e| matches!(e, Event::Bound { .. })).await {
            Event::Bound { addr, .. } => addr,
            _ => unreachable!(),
        };
        let j = status_until(status, "connected and bound", |j| {
            j.get("state").str() == "connected"
                && j.get("exposes").at(0).get("state").str() == "bound"
        })
        .await;
        assert_eq!(j.get("relay").str(), format!("ws://{}/burrow", relay.addr));
        assert!(j.get("since").str().ends_with('Z'));
        let f = j.get("forwards").at(0);
        assert_eq!(f.get("local").str(), locals[0].to_string());
        assert_eq!(f.get("target").str(), echo.to_string());
        let x = j.get("exposes").at(0);
        assert_eq!(x.get("public").str(), bound);
        assert_eq!(x.get("target").str(), echo.to_string());

        // Traffic through -L counts as streams and bytes.
        let mut c = TcpStream::connect(locals[0]).await.unwrap();
        let mut back = [0_u8; 5];
        within(10, "echo", async {
            c.write_all(b"hello").await.unwrap();
            c.read_exact(&mut back).await.unwrap();
        })
        .await;
        status_until(status, "a stream and its bytes", |j| {
            j.get("streams_open").num() == 1 && j.get("bytes_out").num() >= 5
        })
        .await;

        let (code, body) = get(status, "/config", None).await;
        assert_eq!(code, 200);
        assert!(!body.contains(TOKEN), "{body}");
        assert!(body.contains("token = \"***\""), "{body}");
        let (code, html) = get(status, "/status", None).await;
        assert_eq!(code, 200);
        assert!(html.contains(&bound), "{html}");
        // The standard routes are still there.
        assert_eq!(get(status, "/readyz", None).await.0, 200);
        assert_eq!(get(status, "/metrics", None).await.0, 200);
    });
}
