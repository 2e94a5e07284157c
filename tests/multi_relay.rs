//! One client, several relays (issue 12): every `-R` bound on every relay, `-L` streams
//! through a connected relay and failing over when one goes, a relay coming back re-bound,
//! `/readyz` with `--ready all` and `any`, `/status.json` and `/metrics` per relay.

mod common;

use burrow::client::{Client, ClientConfig, ClientError, Event, ReadyWhen};
use burrow::exec::Spawner;
use burrow::http::surface;
use burrow::relay::{Relay, RelayConfig};
use burrow::shutdown::Shutdown;
use burrow::tunnel::ws::TunnelUrl;
use common::tunnel::{RunningClient, RunningRelay, run_client, run_relay, start_relay};
use common::{closed_port, lo, run, start_echo, within};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

fn url_of(addr: SocketAddr) -> TunnelUrl {
    format!("ws://{addr}/burrow").parse().unwrap()
}

/// A client of `relays` (in order) exposing and forwarding to `echo`.
fn config(relays: &[SocketAddr], echo: SocketAddr) -> ClientConfig {
    let mut cfg = ClientConfig::new(url_of(relays[0]));
    cfg.more_relays = relays[1..].iter().map(|a| url_of(*a)).collect();
    cfg.remotes = vec![format!("0:{echo}").parse().unwrap()];
    cfg.locals = vec![format!("127.0.0.1:0:{echo}").parse().unwrap()];
    cfg
}

/// A client's events, relay by relay: waiting for one relay's events keeps the other
/// relays' for later.
struct Events {
    client: RunningClient,
    others: Mutex<VecDeque<Event>>,
}

impl Events {
    fn new(client: RunningClient) -> Self {
        Events {
            client,
            others: Mutex::default(),
        }
    }

    /// The next event of `relay` matching `pred` (its others are skipped), within 10 s.
    async fn on(&self, relay: &TunnelUrl, pred: impl Fn(&Event) -> bool) -> Event {
        let relay = relay.to_string();
        // Some(true): the one; Some(false): this relay's, skipped; None: another relay's.
        let sort = |e: &Event| match e.on_relay() {
            (Some(r), inner) if r == relay => Some(pred(inner)),
            (Some(_), _) => None,
            (None, _) => Some(false),
        };
        let kept: Vec<Event> = self.others.lock().unwrap().drain(..).collect();
        let mut found = None;
        for e in kept {
            match (found.is_some(), sort(&e)) {
                (false, Some(true)) => found = Some(e),
                (_, None) | (true, _) => self.others.lock().unwrap().push_back(e),
                (false, Some(false)) => {}
            }
        }
        let e = match found {
            Some(e) => e,
            None => {
                within(10, &format!("an event of {relay}"), async {
                    loop {
                        let e = self.client.events.recv().await.expect("events ended");
                        match sort(&e) {
                            Some(true) => return e,
                            Some(false) => {}
                            None => self.others.lock().unwrap().push_back(e),
                        }
                    }
                })
                .await
            }
        };
        e.on_relay().1.clone()
    }
}

async fn on_relay(c: &Events, relay: &TunnelUrl, pred: impl Fn(&Event) -> bool) -> Event {
    c.on(relay, pred).await
}

/// The session to a relay is gone (for good, or waiting to be resumed).
fn gone(e: &Event) -> bool {
    matches!(e, Event::Lost(_) | Event::Suspended { .. })
}

/// Waits for relay `relay` to bind the client's `-R`; its public address there.
async fn bound_on(c: &Events, relay: &TunnelUrl) -> SocketAddr {
    let e = on_relay(c, relay, |e| {
        matches!(e, Event::Bound { .. } | Event::BindRefused { .. })
    })
    .await;
    match e {
        Event::Bound { addr, .. } => addr.parse().unwrap(),
        other => panic!("binding refused on {relay}: {other:?}"),
    }
}

/// Sends a few bytes through `addr` and reads them back from the echo server behind it.
async fn echo_through(addr: SocketAddr, what: &str) {
    within(10, what, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(what.as_bytes()).await.unwrap();
        let mut back = vec![0; what.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, what.as_bytes());
    })
    .await
}

/// One line of the client's `/metrics` text, by its start.
fn metric(c: &Events, start: &str) -> String {
    let text = c.client.metrics.render();
    text.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no {start} in\n{text}"))
        .to_string()
}

#[test]
fn every_relay_binds_the_app_and_local_streams_fail_over() {
    run(|sp| async move {
        let (echo, _echo) = start_echo().await;
        let a = start_relay(&sp, RelayConfig::default()).await;
        let b = start_relay(&sp, RelayConfig::default()).await;
        let (url_a, url_b) = (a.url(), b.url());
        let client = Client::bind(config(&[a.addr, b.addr], echo)).await.unwrap();
        let c = Events::new(run_client(&sp, client));
        // Every -R is bound on every relay, each with a public port of its own.
        let (on_a, on_b) = (bound_on(&c, &url_a).await, bound_on(&c, &url_b).await);
        echo_through(on_a, "visitor via relay a").await;
        echo_through(on_b, "visitor via relay b").await;
        echo_through(c.client.locals[0], "a -L stream").await;
        let up = |url: &TunnelUrl| format!("burrow_client_relay_up{{relay=\"{url}\"}}");
        assert!(metric(&c, &up(&url_a)).ends_with(" 1"));
        assert!(metric(&c, &up(&url_b)).ends_with(" 1"));

        // Relay a goes: new -L streams go through b at once (a stays down meanwhile).
        a.shutdown.drain();
        within(10, "relay a stops", a.task).await;
        on_relay(&c, &url_a, gone).await;
        assert!(metric(&c, &up(&url_a)).ends_with(" 0"));
        let before = b.metrics.streams_total.load(Relaxed);
        for i in 0..3 {
            echo_through(
                c.client.locals[0],
                &format!("-L stream {i} with relay a down"),
            )
            .await;
        }
        assert!(b.metrics.streams_total.load(Relaxed) >= before + 3);
        echo_through(on_b, "relay b still serves its visitors").await;

        // Relay a comes back on its address: the client reconnects and binds there again,
        // on the port it had.
        let again = Relay::bind(a.addr, RelayConfig::default()).await.unwrap();
        let a2 = run_relay(&sp, again);
        on_relay(&c, &url_a, |e| *e == Event::Connected).await;
        let rebound = bound_on(&c, &url_a).await;
        assert_eq!(rebound, on_a, "the port the relay gave last time");
        echo_through(rebound, "visitor via relay a, back").await;
        let reconnects = format!("burrow_client_relay_reconnects_total{{relay=\"{url_a}\"}}");
        assert!(metric(&c, &reconnects).ends_with(" 1"));
        drop(a2);
    });
}

/// `--status` of a client: what `burrow client --status ADDR` serves.
struct WithStatus {
    client: Events,
    status: SocketAddr,
    _serve: smol::Task<()>,
    _stop: Shutdown,
}

async fn with_status(sp: &Spawner, cfg: ClientConfig) -> WithStatus {
    let client = Client::bind(cfg).await.unwrap();
    let route = surface::combine(
        client.status_route(),
        surface::standard_route(client.metrics(), Some(client.readiness())),
    );
    let listener = TcpListener::bind(lo()).await.unwrap();
    let status = listener.local_addr().unwrap();
    let stop = Shutdown::new();
    let serve = surface::serve_listener_as("status", listener, route, sp.clone(), stop.signal());
    WithStatus {
        client: Events::new(run_client(sp, client)),
        status,
        _serve: smol::spawn(serve),
        _stop: stop,
    }
}

/// `GET path` on `addr`: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    within(10, path, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: status\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        (
            head.split(' ').nth(1).unwrap().parse().unwrap(),
            body.into(),
        )
    })
    .await
}

/// Asks `path` until its answer satisfies `cond` (bounded): state, never a fixed sleep.
async fn get_until(addr: SocketAddr, path: &str, cond: impl Fn(u16, &str) -> bool) -> String {
    within(10, &format!("{path} as wanted"), async {
        loop {
            let (code, body) = get(addr, path).await;
            if cond(code, &body) {
                return body;
            }
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[test]
fn readyz_waits_for_every_relay_or_with_ready_any_for_one() {
    run(|sp| async move {
        let (echo, _echo) = start_echo().await;
        let a = start_relay(&sp, RelayConfig::default()).await;
        // Relay b is down for now: nothing listens on its address.
        let b_addr = closed_port();
        let (url_a, url_b) = (a.url(), url_of(b_addr));
        let all = with_status(&sp, config(&[a.addr, b_addr], echo)).await;
        let mut cfg = config(&[a.addr, b_addr], echo);
        cfg.ready = ReadyWhen::Any;
        let any = with_status(&sp, cfg).await;
        bound_on(&all.client, &url_a).await;
        bound_on(&any.client, &url_a).await;
        // Bound on a, not on b: `all` is not ready, `any` is.
        assert_eq!(get(all.status, "/readyz").await.0, 503);
        assert_eq!(get(any.status, "/readyz").await.0, 200);
        let json = get(all.status, "/status.json").await.1;
        for want in [
            format!("\"relay\":\"{url_a}\",\"state\":\"connected\""),
            "\"state\":\"degraded\"".to_string(),
            "\"bound\":\"1/1\"".into(),
            "\"bound\":\"0/1\"".into(),
        ] {
            assert!(json.contains(&want), "{want} not in {json}");
        }
        assert!(json.contains(&format!("\"relay\":\"{url_b}\",\"state\":\"")));
        assert!(!json.contains(&format!("\"relay\":\"{url_b}\",\"state\":\"connected")));

        // Relay b comes up: `all` is ready once its binding is there too.
        let b = run_relay(
            &sp,
            Relay::bind(b_addr, RelayConfig::default()).await.unwrap(),
        );
        bound_on(&all.client, &url_b).await;
        get_until(all.status, "/readyz", |code, _| code == 200).await;
        let json = get_until(all.status, "/status.json", |_, j| {
            !j.contains("\"bound\":\"0/1\"")
        })
        .await;
        assert!(json.contains("\"state\":\"connected\""), "{json}");
        assert!(json.contains(&format!("\"relay\":\"{url_b}\"")), "{json}");

        // Relay a goes: `all` is not ready any more, `any` still is (through b).
        bound_on(&any.client, &url_b).await;
        a.shutdown.drain();
        within(10, "relay a stops", a.task).await;
        get_until(all.status, "/readyz", |code, _| code == 503).await;
        on_relay(&any.client, &url_a, gone).await;
        assert_eq!(get(any.status, "/readyz").await.0, 200);
        let metrics = get(any.status, "/metrics").await.1;
        for want in [
            format!("burrow_client_relay_up{{relay=\"{url_a}\"}} 0\n"),
            format!("burrow_client_relay_up{{relay=\"{url_b}\"}} 1\n"),
        ] {
            assert!(metrics.contains(&want), "{want} not in {metrics}");
        }
        drop(b);
    });
}

#[test]
fn a_reload_binds_and_unbinds_on_every_relay() {
    run(|sp| async move {
        let (echo, _echo) = start_echo().await;
        let a = start_relay(&sp, RelayConfig::default()).await;
        let b = start_relay(&sp, RelayConfig::default()).await;
        let (url_a, url_b) = (a.url(), b.url());
        let cfg = config(&[a.addr, b.addr], echo);
        let client = Client::bind(cfg.clone()).await.unwrap();
        let handle = client.handle();
        let c = Events::new(run_client(&sp, client));
        bound_on(&c, &url_a).await;
        bound_on(&c, &url_b).await;
        // A second -R added: bound on both relays.
        let mut more = cfg.clone();
        more.remotes.push(format!("0:{echo}").parse().unwrap());
        handle.reload(more).await.unwrap();
        let (on_a, on_b) = (bound_on(&c, &url_a).await, bound_on(&c, &url_b).await);
        echo_through(on_a, "added, via a").await;
        echo_through(on_b, "added, via b").await;
        // Removed again: released on both (the ports refuse).
        handle.reload(cfg.clone()).await.unwrap();
        for port in [on_a, on_b] {
            within(10, "released", async {
                while TcpStream::connect(port).await.is_ok() {
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
            })
            .await;
        }
        // Another list of relays needs a restart.
        let mut other = cfg.clone();
        other.more_relays.clear();
        let e = handle.reload(other).await.unwrap_err();
        assert!(e.to_string().contains("relays"), "{e}");
        drop((a, b));
    });
}

#[test]
fn the_same_relay_twice_is_refused() {
    run(|_sp| async move {
        let mut cfg = ClientConfig::new("ws://127.0.0.1:1".parse().unwrap());
        cfg.more_relays = vec!["ws://127.0.0.1:1/burrow".parse().unwrap()];
        match Client::bind(cfg).await {
            Err(ClientError::Config(why)) => assert!(why.contains("twice"), "{why}"),
            other => panic!("accepted: {other:?}"),
        }
    });
}

/// With one relay nothing changes: events come bare, as before.
#[test]
fn one_relay_sends_its_events_bare() {
    run(|sp| async move {
        let (echo, _echo) = start_echo().await;
        let a: RunningRelay = start_relay(&sp, RelayConfig::default()).await;
        let c = run_client(&sp, Client::bind(config(&[a.addr], echo)).await.unwrap());
        let e = c.wait("connected", |e| *e == Event::Connected).await;
        assert_eq!(e.on_relay().0, None);
        echo_through(c.bound().await, "one relay").await;
    });
}
