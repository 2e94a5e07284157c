//! UDP through the tunnel end to end: `-L udp:` and `-R udp:` with a relay and a client on
//! loopback, a small answering UDP server, real sockets.

mod common;

use burrow::client::{ClientConfig, Event};
use burrow::metrics::{Metrics, UdpDrop};
use burrow::relay::RelayConfig;
use common::tunnel::*;
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpStream, UdpSocket};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A DNS-ish UDP server: each datagram is answered with `re:` and the datagram (a datagram
/// too long for that is sent back as it came), to the address it came from. Counts what it got.
async fn start_answerer() -> (SocketAddr, Arc<AtomicU64>, smol::Task<()>) {
    let s = UdpSocket::bind(lo()).await.unwrap();
    let addr = s.local_addr().unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let counted = got.clone();
    let task = smol::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            counted.fetch_add(1, Relaxed);
            let answer = match n + 3 <= 65_507 {
                true => [b"re:", &buf[..n]].concat(),
                false => buf[..n].to_vec(),
            };
            // A source that went away: nothing to answer.
            let _ = s.send_to(&answer, from).await;
        }
    });
    (addr, got, task)
}

/// Sends `payload` from `s` to `to` and waits (bounded) for the one answer.
async fn ask(s: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    s.send_to(payload, to).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, from) = within(10, "udp answer", s.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(from, to, "the answer comes from the forward's address");
    buf.truncate(n);
    buf
}

/// Asks until an answer comes (a datagram may be lost while a flow opens on a busy machine;
/// UDP clients retry): each try waits up to 2 s, 5 tries.
async fn ask_retrying(s: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    for _ in 0..5 {
        s.send_to(payload, to).await.unwrap();
        let got = async { Some(s.recv_from(&mut buf).await.unwrap()) }
            .or(async {
                smol::Timer::after(Duration::from_secs(2)).await;
                None
            })
            .await;
        if let Some((n, _)) = got {
            return buf[..n].to_vec();
        }
    }
    panic!("no answer to {} bytes after 5 tries", payload.len())
}

use futures_lite::FutureExt;

/// A relay, and a connected client with `-L udp:127.0.0.1:0:target` (its address:
/// `locals[0]`), with `idle` as both sides' `--udp-idle-timeout`.
async fn udp_forward_to(
    sp: &burrow::exec::Spawner,
    target: SocketAddr,
    idle: Duration,
) -> (RunningRelay, RunningClient) {
    let relay_cfg = RelayConfig {
        udp_idle_timeout: idle,
        ..RelayConfig::default()
    };
    let relay = start_relay(sp, relay_cfg).await;
    let mut cfg = ClientConfig::new(relay.url());
    cfg.locals = vec![format!("udp:127.0.0.1:0:{target}").parse().unwrap()];
    cfg.udp_idle_timeout = idle;
    let client = start_client(sp, cfg).await;
    client.wait("connected", |e| *e == Event::Connected).await;
    (relay, client)
}

fn flows(m: &Metrics) -> u64 {
    m.udp_flows.load(Relaxed)
}

#[test]
fn local_udp_forward_gives_each_source_its_own_answers() {
    run(|sp| async move {
        let (dns, _got, _t) = start_answerer().await;
        let (relay, c) = udp_forward_to(&sp, dns, Duration::from_secs(60)).await;
        let forward = c.locals[0];
        let mut askers = Vec::new();
        for i in 0..50u32 {
            askers.push(smol::spawn(async move {
                let s = UdpSocket::bind(lo()).await.unwrap();
                for q in 0..3u32 {
                    let query = format!("query {i}.{q}");
                    let answer = ask_retrying(&s, forward, query.as_bytes()).await;
                    assert_eq!(answer, format!("re:{query}").as_bytes());
                }
            }));
        }
        for a in askers {
            within(20, "50 sources answered", a).await;
        }
        // One flow per source address, on both ends.
        assert_eq!(c.metrics.udp_flows_total.load(Relaxed), 50);
        assert_eq!(flows(&c.metrics), 50);
        eventually("50 relay flows", || flows(&relay.metrics) == 50).await;
    });
}

#[test]
fn a_60_kib_datagram_crosses_whole_both_ways() {
    run(|sp| async move {
        let (dns, _got, _t) = start_answerer().await;
        let (_relay, c) = udp_forward_to(&sp, dns, Duration::from_secs(60)).await;
        let s = UdpSocket::bind(lo()).await.unwrap();
        let big: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
        let answer = ask_retrying(&s, c.locals[0], &big).await;
        assert_eq!(
            answer.len(),
            big.len() + 3,
            "one datagram, never split or merged"
        );
        assert_eq!(&answer[..3], b"re:");
        assert!(
            answer[3..] == big[..],
            "the payload arrives intact both ways"
        );
        // The largest a datagram may be.
        let max = vec![7u8; 65_507];
        let answer = ask_retrying(&s, c.locals[0], &max).await;
        assert!(answer == max, "65,507 bytes cross whole");
    });
}

#[test]
fn idle_flows_expire_on_both_ends_and_the_source_gets_a_new_one() {
    run(|sp| async move {
        let (dns, _got, _t) = start_answerer().await;
        let idle = Duration::from_secs(1);
        let (relay, c) = udp_forward_to(&sp, dns, idle).await;
        let s = UdpSocket::bind(lo()).await.unwrap();
        assert_eq!(ask_retrying(&s, c.locals[0], b"one").await, b"re:one");
        assert_eq!(flows(&c.metrics), 1);
        eventually("the client's flow expired", || flows(&c.metrics) == 0).await;
        eventually("the relay's flow closed", || flows(&relay.metrics) == 0).await;
        // The same source again: a new flow.
        assert_eq!(ask_retrying(&s, c.locals[0], b"two").await, b"re:two");
        assert_eq!(c.metrics.udp_flows_total.load(Relaxed), 2);
        eventually("expired again", || flows(&c.metrics) == 0).await;
    });
}

#[test]
fn a_flood_while_the_flow_opens_fills_its_queue_and_drops_the_rest() {
    run(|sp| async move {
        // A relay nobody answers at: the flow waits for a session (--connect-timeout), and
        // what its source sends meanwhile waits in the flow's bounded queue.
        let nobody = closed_port();
        let mut cfg = ClientConfig::new(format!("ws://{nobody}/burrow").parse().unwrap());
        cfg.locals = vec![format!("udp:127.0.0.1:0:{nobody}").parse().unwrap()];
        cfg.connect_timeout = Duration::from_secs(2);
        let c = start_client(&sp, cfg).await;
        let s = UdpSocket::bind(lo()).await.unwrap();
        let sent = 3000u64;
        for i in 0..sent {
            s.send_to(&i.to_be_bytes(), c.locals[0]).await.unwrap();
        }
        let m = c.metrics.clone();
        let full = || m.udp_dropped_count(UdpDrop::QueueFull);
        eventually("datagrams past the queue dropped", || full() > 0).await;
        // The open fails: the queued ones are dropped too, and never more than the queue held.
        let refused = || m.udp_dropped_count(UdpDrop::Invalid);
        eventually("the waiting datagrams dropped", || refused() > 0).await;
        let queued = refused();
        assert!(queued <= 64, "at most the flow's queue waited: {queued}");
        assert!(full() + queued <= sent, "{} + {queued} of {sent}", full());
        assert_eq!(flows(&m), 0, "a refused flow is never counted open");
    });
}

#[test]
fn a_udp_flood_never_stalls_the_tcp_streams_of_the_session() {
    run(|sp| async move {
        // A target that never reads: datagrams to it are lost, as UDP may lose them.
        let sink = UdpSocket::bind(lo()).await.unwrap();
        let (echo, _e) = start_echo().await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.locals = vec![
            format!("udp:127.0.0.1:0:{}", sink.local_addr().unwrap())
                .parse()
                .unwrap(),
            format!("127.0.0.1:0:{echo}").parse().unwrap(),
        ];
        let c = start_client(&sp, cfg).await;
        c.wait("connected", |e| *e == Event::Connected).await;
        let (udp, tcp) = (c.locals[0], c.locals[1]);
        let before = rss_kib();
        let flood = smol::spawn(async move {
            let s = UdpSocket::bind(lo()).await.unwrap();
            let datagram = vec![1u8; 8 * 1024];
            for _ in 0..20_000 {
                s.send_to(&datagram, udp).await.unwrap();
            }
        });
        // Meanwhile a TCP stream of the same session goes on.
        for round in 0..20u8 {
            let mut t = within(10, "connect", TcpStream::connect(tcp))
                .await
                .unwrap();
            let payload = vec![round; 100_000];
            t.write_all(&payload).await.unwrap();
            let mut back = vec![0u8; payload.len()];
            within(10, "tcp echo during a udp flood", t.read_exact(&mut back))
                .await
                .unwrap();
            assert!(back == payload);
        }
        within(20, "flood sent", flood).await;
        let m = &c.metrics;
        let out = m.udp_datagrams_out.load(Relaxed);
        let dropped = m.udp_dropped_count(UdpDrop::QueueFull);
        assert!(out + dropped <= 20_000, "{out} + {dropped}");
        assert!(out > 0, "some datagrams went through");
        // 160 MB offered, and every queue on the way is bounded: memory does not follow.
        let grown = rss_kib().saturating_sub(before);
        assert!(
            grown < 64 * 1024,
            "RSS grew by {grown} KiB during the flood"
        );
        let _sink = sink;
    });
}

#[test]
fn remote_udp_forward_reaches_a_server_of_the_client() {
    run(|sp| async move {
        let (dns, _got, _t) = start_answerer().await;
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.remotes = vec![format!("udp:127.0.0.1:0:{dns}").parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        let public = c.bound().await;
        let s = UdpSocket::bind(lo()).await.unwrap();
        assert_eq!(ask_retrying(&s, public, b"visitor").await, b"re:visitor");
        let big = vec![3u8; 60 * 1024];
        assert_eq!(ask_retrying(&s, public, &big).await.len(), big.len() + 3);
        // Another visitor: a flow of its own.
        let other = UdpSocket::bind(lo()).await.unwrap();
        assert_eq!(ask(&other, public, b"second").await, b"re:second");
        eventually("two relay flows", || flows(&relay.metrics) == 2).await;
    });
}

#[test]
fn a_udp_binding_outside_allow_ports_is_refused() {
    run(|sp| async move {
        let (dns, _got, _t) = start_answerer().await;
        let relay_cfg = RelayConfig {
            allow_ports: (40_000, 40_010),
            ..RelayConfig::default()
        };
        let relay = start_relay(&sp, relay_cfg).await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.remotes = vec![format!("udp:127.0.0.1:2000:{dns}").parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        let refused = c
            .wait("bind answer", |e| {
                matches!(e, Event::Bound { .. } | Event::BindRefused { .. })
            })
            .await;
        match refused {
            Event::BindRefused { reason, .. } => {
                assert!(reason.contains("outside"), "{reason}")
            }
            other => panic!("bound outside --allow-ports: {other:?}"),
        }
    });
}

#[test]
fn a_udp_target_the_rules_deny_is_refused_and_counted() {
    run(|sp| async move {
        let (dns, got, _t) = start_answerer().await;
        let relay_cfg = RelayConfig {
            rules: burrow::dial::rules::Rules {
                allow: Vec::new(),
                deny: vec![format!("127.0.0.1:{}", dns.port()).parse().unwrap()],
            },
            ..RelayConfig::default()
        };
        let relay = start_relay(&sp, relay_cfg).await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.locals = vec![format!("udp:127.0.0.1:0:{dns}").parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        c.wait("connected", |e| *e == Event::Connected).await;
        let s = UdpSocket::bind(lo()).await.unwrap();
        s.send_to(b"denied", c.locals[0]).await.unwrap();
        let m = c.metrics.clone();
        eventually("dropped as forbidden", || {
            m.udp_dropped_count(UdpDrop::Forbidden) >= 1
        })
        .await;
        assert_eq!(got.load(Relaxed), 0, "the target never saw it");
        let refusals = relay.metrics.refusals(burrow::refusal::Refusal::Forbidden);
        assert_eq!(refusals, 1);
    });
}
