//! CONNECT tunnels between plain TCP sockets move their bytes with splice(2): real `burrow proxy`
//! instances and targets on 127.0.0.1, checked for intact bytes, half-close, idle timeout, a
//! reset target, byte counts, and that the zero-copy path (not the fallback copy) carried them.

mod common;

use burrow::dial::chain::{Hop, HopKind, Upstream};
use burrow::proxy::ProxyConfig;
use burrow::splice::{Outcome, WARM_UP, splice_tcp, zero_copy_bytes};
use common::*;
use futures_lite::future::zip;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

/// Bytes sent each way in the bulk tests: many pipe-fulls, small enough for a debug build.
const BULK: usize = 8 << 20;

/// A deterministic byte pattern that differs per position (not one repeated chunk), so a
/// reordered, dropped or doubled chunk changes the checksum.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a over the bytes.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Writes all of `data` then shuts down the write half, while reading the other way to EOF.
async fn exchange(s: &TcpStream, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = (s.clone(), s.clone());
    let send = async {
        w.write_all(data).await.unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    };
    let mut got = Vec::new();
    let recv = async { r.read_to_end(&mut got).await.unwrap() };
    zip(send, recv).await;
    got
}

/// A target that takes one connection and runs `exchange` with `data` on it; returns what it got.
async fn start_exchanger(data: Vec<u8>) -> (SocketAddr, smol::Task<Vec<u8>>) {
    let l = TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = smol::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        exchange(&s, &data).await
    });
    (addr, task)
}

/// CONNECTs through `proxy` to `target` and checks the bulk both ways.
async fn bulk_through(proxy: SocketAddr, target: SocketAddr, server: smol::Task<Vec<u8>>) {
    let (up, down) = (pattern(1, BULK), pattern(2, BULK));
    let (head, r) = connect_via(proxy, target, "").await;
    assert_eq!(head.status, 200);
    // The target sends at once: its first bytes may sit in the reader behind the 200.
    let mut got = r.buffer().to_vec();
    let client = r.into_inner();
    got.extend(within(20, "bulk exchange", exchange(&client, &up)).await);
    let at_server = within(20, "server side", server).await;
    assert_eq!(got.len(), BULK);
    assert_eq!(checksum(&got), checksum(&down), "target -> client bytes");
    assert_eq!(at_server.len(), BULK);
    assert_eq!(
        checksum(&at_server),
        checksum(&up),
        "client -> target bytes"
    );
}

#[test]
fn bulk_bytes_arrive_intact_both_ways_through_the_kernel() {
    run(|sp| async move {
        let (target, server) = start_exchanger(pattern(2, BULK)).await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let before = zero_copy_bytes();
        bulk_through(p.addr, target, server).await;
        // Other tests in this binary move a few bytes at most: 2 x 8 MiB are this tunnel's.
        let moved = zero_copy_bytes() - before;
        // Each direction copies its first WARM_UP bytes in user space.
        assert!(
            moved + 2 * WARM_UP >= 2 * BULK as u64,
            "only {moved} bytes went through splice(2): the tunnel fell back to copying"
        );
    });
}

#[test]
fn a_chain_through_an_upstream_proxy_is_zero_copy_at_every_hop() {
    run(|sp| async move {
        let (target, server) = start_exchanger(pattern(2, BULK)).await;
        let last = start_proxy(&sp, ProxyConfig::default()).await;
        let hop = Hop {
            kind: HopKind::Http,
            host: last.addr.ip().to_string(),
            port: last.addr.port(),
            auth: None,
        };
        let first = ProxyConfig {
            upstream: Upstream {
                hops: vec![hop],
                no_proxy: vec![],
            },
            ..Default::default()
        };
        let first = start_proxy(&sp, first).await;
        let before = zero_copy_bytes();
        bulk_through(first.addr, target, server).await;
        let moved = zero_copy_bytes() - before;
        // The target speaks at once, so its first bytes may arrive at the first hop together
        // with the upstream's 200: those are handshake leftovers, written before the zero-copy
        // loop starts. At most one read of them (64 KiB) per direction and hop.
        let leftovers = 4 * 64 * 1024;
        assert!(
            moved + leftovers + 4 * WARM_UP >= 4 * BULK as u64,
            "only {moved} bytes went through splice(2) at two hops"
        );
    });
}

#[test]
fn a_half_closed_tunnel_still_carries_the_answer() {
    run(|sp| async move {
        let l = TcpListener::bind(lo()).await.unwrap();
        let target = l.local_addr().unwrap();
        let server = smol::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            s.read_to_end(&mut req).await.unwrap();
            // The request ended (EOF) and the answer still flows, large and after a pause.
            let answer = pattern(req.len() as u64, 1 << 20);
            s.write_all(&answer).await.unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            (req, answer)
        });
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let (head, r) = connect_via(p.addr, target, "").await;
        assert_eq!(head.status, 200);
        let mut client = r.into_inner();
        client.write_all(b"request").await.unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        within(10, "answer", client.read_to_end(&mut got))
            .await
            .unwrap();
        let (req, answer) = within(10, "server", server).await;
        assert_eq!(req, b"request");
        assert_eq!(checksum(&got), checksum(&answer));
    });
}

#[test]
fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let cfg = ProxyConfig {
            idle_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        let (head, r) = connect_via(p.addr, echo, "").await;
        assert_eq!(head.status, 200);
        let mut client = r.into_inner();
        client.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        within(10, "echo", client.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(&back, b"ping");
        // Nothing more moves: the proxy ends the tunnel, the client sees EOF.
        let mut rest = Vec::new();
        let n = within(10, "idle close", client.read_to_end(&mut rest)).await;
        assert_eq!(n.unwrap(), 0);
    });
}

#[test]
fn a_target_that_resets_ends_the_tunnel() {
    run(|sp| async move {
        let l = TcpListener::bind(lo()).await.unwrap();
        let target = l.local_addr().unwrap();
        let server = smol::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut first = [0u8; 1];
            s.read_exact(&mut first).await.unwrap();
            // Closing with unread bytes in the receive buffer sends a reset.
            drop(s);
        });
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let (head, r) = connect_via(p.addr, target, "").await;
        assert_eq!(head.status, 200);
        let mut client = r.into_inner();
        client.write_all(&[0u8; 64 * 1024]).await.unwrap();
        within(10, "server", server).await;
        // The proxy passes the end on: writes fail or reads end, and nothing hangs.
        let ended = async {
            let mut buf = [0u8; 4096];
            loop {
                if client.write_all(&[0u8; 64 * 1024]).await.is_err() {
                    return;
                }
                if let Ok(0) | Err(_) = client.read(&mut buf).await {
                    return;
                }
            }
        };
        within(10, "tunnel end after reset", ended).await;
    });
}

/// client <-> [a | splice_tcp | b] <-> server, without a proxy: the report's counts.
#[test]
fn the_report_counts_every_byte_each_way_and_says_zero_copy() {
    run(|_sp| async move {
        async fn pair() -> (TcpStream, TcpStream) {
            let l = TcpListener::bind(lo()).await.unwrap();
            let (c, s) = zip(TcpStream::connect(l.local_addr().unwrap()), l.accept()).await;
            (c.unwrap(), s.unwrap().0)
        }
        let (client, a) = pair().await;
        let (b, server) = pair().await;
        let task = smol::spawn(async move { splice_tcp(&a, &b, None).await });
        let (up, down) = (pattern(3, 3 << 20), pattern(4, (1 << 20) + 17));
        let (at_server, at_client) = within(
            20,
            "exchange",
            zip(exchange(&server, &down), exchange(&client, &up)),
        )
        .await;
        assert_eq!(checksum(&at_server), checksum(&up));
        assert_eq!(checksum(&at_client), checksum(&down));
        let report = within(10, "report", task).await;
        assert!(matches!(report.outcome, Outcome::Closed), "{report:?}");
        assert_eq!(report.a_to_b, up.len() as u64);
        assert_eq!(report.b_to_a, down.len() as u64);
        assert!(report.zero_copy, "{report:?}");
    });
}

/// Bytes that arrive right behind the CONNECT head are written before the zero-copy loop.
#[test]
fn early_bytes_come_first_then_the_zero_copy_stream() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let req = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\nearly");
        let (head, r) = send_raw(p.addr, req.as_bytes()).await;
        assert_eq!(head.status, 200);
        let mut r: BufReader<TcpStream> = r;
        r.get_mut().write_all(b"-late").await.unwrap();
        let mut got = [0u8; 10];
        within(10, "echo", r.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"early-late");
    });
}
