//! SOCKS5 on `burrow proxy` end to end: real sockets on 127.0.0.1, our own raw RFC 1928 client.

mod common;

use burrow::dial::chain::{Hop, HopKind, Upstream};
use burrow::dial::rules::Rules;
use burrow::proxy::ProxyConfig;
use burrow::socks::Addr;
use common::*;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpStream, UdpSocket};
use std::net::SocketAddr;
use std::time::Duration;

const CONNECT: u8 = 1;
const BIND: u8 = 2;
const UDP: u8 = 3;

fn request(cmd: u8, addr: &Addr) -> Vec<u8> {
    let mut m = vec![5, cmd, 0];
    addr.encode(&mut m);
    m
}

fn auth_msg(user: &str, pass: &str) -> Vec<u8> {
    let mut m = vec![1, user.len() as u8];
    m.extend_from_slice(user.as_bytes());
    m.push(pass.len() as u8);
    m.extend_from_slice(pass.as_bytes());
    m
}

async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    within(10, "socks answer", s.read_exact(&mut buf))
        .await
        .expect("an answer");
    buf
}

/// Reads a reply: its code and bound address.
async fn read_reply(s: &mut TcpStream) -> (u8, Addr) {
    let head = read_n(s, 5).await;
    assert_eq!((head[0], head[2]), (5, 0), "{head:?}");
    let rest = match head[3] {
        1 => 4 + 2 - 1,
        4 => 16 + 2 - 1,
        3 => usize::from(head[4]) + 2,
        t => panic!("reply with address type {t}"),
    };
    let mut all = head[3..].to_vec();
    all.extend(read_n(s, rest).await);
    let (addr, n) = Addr::decode(&all).unwrap();
    assert_eq!(n, all.len());
    (head[1], addr)
}

/// The peer closes: EOF (or a reset) within the deadline.
async fn closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let n = within(10, "close", s.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "more bytes instead of a close: {:?}", &buf[..n]);
}

/// Greets without auth, sends `cmd addr`, and returns the reply and the stream.
async fn ask(proxy: SocketAddr, cmd: u8, addr: &Addr) -> (u8, Addr, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut msg = vec![5, 1, 0];
    msg.extend(request(cmd, addr));
    s.write_all(&msg).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, [5, 0]);
    let (code, bound) = read_reply(&mut s).await;
    (code, bound, s)
}

fn ip(a: SocketAddr) -> Addr {
    Addr::Ip(a)
}

async fn echo_round_trip(s: &mut TcpStream) {
    s.write_all(b"ping through socks").await.unwrap();
    assert_eq!(read_n(s, 18).await, b"ping through socks");
}

fn creds() -> Option<burrow::http::auth::Credentials> {
    Some("alice:s3cret".parse().unwrap())
}

#[test]
fn connect_by_ipv4_name_and_ipv6_reaches_the_target() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let (code, bound, mut s) = ask(p.addr, CONNECT, &ip(echo)).await;
        assert_eq!(code, 0);
        // The bound address is the proxy's socket to the target.
        assert!(matches!(bound, Addr::Ip(a) if a.port() != 0 && a.ip().is_loopback()));
        echo_round_trip(&mut s).await;

        let name = Addr::Domain("localhost".into(), echo.port());
        let (code, _, mut s) = ask(p.addr, CONNECT, &name).await;
        assert_eq!(code, 0, "localhost is resolved by the proxy");
        echo_round_trip(&mut s).await;

        // IPv6 where the machine has it.
        if let Ok(l) = smol::net::TcpListener::bind("[::1]:0").await {
            let v6 = l.local_addr().unwrap();
            let _accept = smol::spawn(async move {
                let (s, _) = l.accept().await.unwrap();
                futures_lite::io::copy(s.clone(), &mut s.clone()).await.ok();
            });
            let (code, _, mut s) = ask(p.addr, CONNECT, &ip(v6)).await;
            assert_eq!(code, 0);
            echo_round_trip(&mut s).await;
        } else {
            eprintln!("no IPv6 loopback here: IPv6 CONNECT not tested");
        }
    });
}

#[test]
fn bytes_behind_the_request_and_half_close_pass_through() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        // Greeting, request and payload in one write (an optimistic client).
        let mut msg = vec![5, 1, 0];
        msg.extend(request(CONNECT, &ip(echo)));
        msg.extend_from_slice(b"early-bytes");
        s.write_all(&msg).await.unwrap();
        assert_eq!(read_n(&mut s, 2).await, [5, 0]);
        assert_eq!(read_reply(&mut s).await.0, 0);
        assert_eq!(read_n(&mut s, 11).await, b"early-bytes");
        s.write_all(&vec![7u8; 200_000]).await.unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        within(10, "echo to end", s.read_to_end(&mut back))
            .await
            .unwrap();
        assert_eq!(back.len(), 200_000);
    });
}

#[test]
fn credentials_are_the_username_and_password() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let cfg = ProxyConfig {
            auth: creds(),
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;

        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(&[5, 2, 0, 2]).await.unwrap();
        assert_eq!(read_n(&mut s, 2).await, [5, 2], "username/password chosen");
        s.write_all(&auth_msg("alice", "s3cret")).await.unwrap();
        assert_eq!(read_n(&mut s, 2).await, [1, 0]);
        s.write_all(&request(CONNECT, &ip(echo))).await.unwrap();
        assert_eq!(read_reply(&mut s).await.0, 0);
        echo_round_trip(&mut s).await;

        for (user, pass) in [("alice", "wrong"), ("bob", "s3cret"), ("alice", "s3cret!")] {
            let mut s = TcpStream::connect(p.addr).await.unwrap();
            s.write_all(&[5, 1, 2]).await.unwrap();
            assert_eq!(read_n(&mut s, 2).await, [5, 2]);
            s.write_all(&auth_msg(user, pass)).await.unwrap();
            assert_eq!(read_n(&mut s, 2).await, [1, 1], "{user}:{pass}");
            closed(&mut s).await;
        }

        // A client that offers only "no authentication" gets "no acceptable methods".
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        assert_eq!(read_n(&mut s, 2).await, [5, 0xFF]);
        closed(&mut s).await;

        // HTTP on the same port still asks for the same credentials.
        let (head, _) = connect_via(p.addr, echo, "").await;
        assert_eq!(head.status, 407);
        let (head, _) = connect_via(p.addr, echo, &basic("alice:s3cret")).await;
        assert_eq!(head.status, 200);
    });
}

#[test]
fn refusals_map_to_reply_codes() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let deny = ProxyConfig {
            rules: Rules {
                allow: vec![],
                deny: vec![format!("127.0.0.1:{}", echo.port()).parse().unwrap()],
            },
            ..Default::default()
        };
        let p = start_proxy(&sp, deny).await;
        let cases = [
            ("forbidden", ip(echo), 0x02),
            (
                "forbidden by address",
                Addr::Domain("localhost".into(), echo.port()),
                0x02,
            ),
            ("refused", ip(closed_port()), 0x05),
            (
                "unresolvable",
                Addr::Domain("no-such-host.invalid".into(), 80),
                0x04,
            ),
        ];
        for (what, addr, want) in cases {
            let (code, bound, mut s) = ask(p.addr, CONNECT, &addr).await;
            assert_eq!(code, want, "{what}");
            assert_eq!(bound, ip("0.0.0.0:0".parse().unwrap()));
            closed(&mut s).await;
        }
        let (code, _, _) = ask(p.addr, BIND, &ip(echo)).await;
        assert_eq!(code, 0x07, "BIND is not supported");
        let (code, _, _) = ask(p.addr, 0x09, &ip(echo)).await;
        assert_eq!(code, 0x07, "unknown command");

        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(&[5, 1, 0, 5, 1, 0, 0x02, 1, 2, 3, 4, 0, 80])
            .await
            .unwrap();
        assert_eq!(read_n(&mut s, 2).await, [5, 0]);
        assert_eq!(read_reply(&mut s).await.0, 0x08, "bad address type");
        closed(&mut s).await;
    });
}

/// An upstream that accepts and never answers.
async fn silent_hop() -> (SocketAddr, smol::Task<()>) {
    let l = smol::net::TcpListener::bind(lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = smol::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

#[test]
fn a_target_that_does_not_answer_in_time_is_ttl_expired() {
    run(|sp| async move {
        let (silent, _t) = silent_hop().await;
        let cfg = ProxyConfig {
            upstream: Upstream {
                hops: vec![Hop {
                    host: silent.ip().to_string(),
                    port: silent.port(),
                    auth: None,
                    kind: HopKind::Http,
                }],
                no_proxy: vec![],
            },
            connect_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        let (code, _, _) = ask(p.addr, CONNECT, &ip(closed_port())).await;
        assert_eq!(code, 0x06);
        // And an upstream chain carries no datagrams: command not supported.
        let (code, _, _) = ask(p.addr, UDP, &ip("0.0.0.0:0".parse().unwrap())).await;
        assert_eq!(code, 0x07);
    });
}

#[test]
fn a_slow_or_truncated_handshake_is_answered_and_closed() {
    run(|sp| async move {
        // Long enough for a byte-at-a-time handshake on a busy machine, short for the stalls.
        let cfg = ProxyConfig {
            head_timeout: Duration::from_secs(3),
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        // Stalls inside the greeting: "no acceptable methods", then the close.
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(&[5, 2, 0]).await.unwrap();
        assert_eq!(read_n(&mut s, 2).await, [5, 0xFF]);
        closed(&mut s).await;
        // Stalls inside the request: a general failure.
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(&[5, 1, 0, 5, 1, 0, 1, 127]).await.unwrap();
        assert_eq!(read_n(&mut s, 2).await, [5, 0]);
        assert_eq!(read_reply(&mut s).await.0, 0x01);
        closed(&mut s).await;
        // A byte at a time, but the whole handshake in time is fine.
        let (echo, _e) = start_echo().await;
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let mut msg = vec![5, 1, 0];
        msg.extend(request(CONNECT, &ip(echo)));
        for b in msg {
            s.write_all(&[b]).await.unwrap();
        }
        assert_eq!(read_n(&mut s, 2).await, [5, 0]);
        assert_eq!(read_reply(&mut s).await.0, 0);
        // Truncated: the client leaves inside the request; nothing else happens.
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(&[5, 1, 0, 5, 1]).await.unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_n(&mut s, 2).await, [5, 0]);
        closed(&mut s).await;
    });
}

/// A UDP echo server on 127.0.0.1.
async fn udp_echo() -> (SocketAddr, smol::Task<()>) {
    let sock = UdpSocket::bind(lo()).await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = smol::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            sock.send_to(&buf[..n], from).await.ok();
        }
    });
    (addr, task)
}

fn datagram(to: &Addr, payload: &[u8]) -> Vec<u8> {
    burrow::socks::udp::encode(to, payload)
}

async fn recv_datagram(sock: &UdpSocket) -> (Addr, Vec<u8>) {
    let mut buf = vec![0u8; 65_536];
    let (n, _) = within(10, "datagram back", sock.recv_from(&mut buf))
        .await
        .unwrap();
    let (from, payload) = burrow::socks::udp::decode(&buf[..n]).unwrap();
    (from, payload.to_vec())
}

#[test]
fn udp_associate_relays_whole_datagrams_and_drops_forbidden_ones() {
    run(|sp| async move {
        let (echo, _e) = udp_echo().await;
        let forbidden = std::net::UdpSocket::bind(lo()).unwrap();
        let cfg = ProxyConfig {
            rules: Rules {
                allow: vec![],
                deny: vec![
                    format!("127.0.0.1:{}", forbidden.local_addr().unwrap().port())
                        .parse()
                        .unwrap(),
                ],
            },
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        let (code, relay, mut control) = ask(p.addr, UDP, &ip("0.0.0.0:0".parse().unwrap())).await;
        assert_eq!(code, 0);
        let Addr::Ip(relay) = relay else {
            panic!("relay address {relay:?}")
        };
        assert_eq!(relay.ip(), p.addr.ip(), "bound where the client reached us");
        let client = UdpSocket::bind(lo()).await.unwrap();

        let denied = ip(forbidden.local_addr().unwrap());
        // Refused on the address, and on the address a name resolves to.
        let port = forbidden.local_addr().unwrap().port();
        for to in [denied, Addr::Domain("localhost".into(), port)] {
            client
                .send_to(&datagram(&to, b"not for you"), relay)
                .await
                .unwrap();
        }
        let big: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
        client
            .send_to(&datagram(&ip(echo), &big), relay)
            .await
            .unwrap();
        let (from, back) = recv_datagram(&client).await;
        assert_eq!(from, ip(echo));
        assert!(back == big, "60 KiB datagram changed: {} bytes", back.len());
        // Sent in order: had the forbidden one gone out, it would be waiting by now.
        forbidden.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            forbidden.recv_from(&mut buf).map_err(|e| e.kind()).err(),
            Some(std::io::ErrorKind::WouldBlock),
            "a forbidden destination got a datagram"
        );

        // A name resolves on the proxy's side; many small datagrams keep their order and size.
        let name = Addr::Domain("127.0.0.1".into(), echo.port());
        for i in 0..20u8 {
            client
                .send_to(&datagram(&name, &vec![i; usize::from(i) + 1]), relay)
                .await
                .unwrap();
            let (_, back) = recv_datagram(&client).await;
            assert_eq!(back, vec![i; usize::from(i) + 1]);
        }

        // Another source port on the client's IP is not the client.
        let other = UdpSocket::bind(lo()).await.unwrap();
        other
            .send_to(&datagram(&ip(echo), b"intruder"), relay)
            .await
            .unwrap();
        client
            .send_to(&datagram(&ip(echo), b"after"), relay)
            .await
            .unwrap();
        assert_eq!(recv_datagram(&client).await.1, b"after");

        // The association ends with its control connection.
        control.shutdown(std::net::Shutdown::Write).unwrap();
        closed(&mut control).await;
    });
}

#[test]
fn an_idle_association_ends_and_closes_its_control_connection() {
    run(|sp| async move {
        let cfg = ProxyConfig {
            idle_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        let (code, _, mut control) = ask(p.addr, UDP, &ip("0.0.0.0:0".parse().unwrap())).await;
        assert_eq!(code, 0);
        closed(&mut control).await;
    });
}

/// One UDP ASSOCIATE on `proxy`: the association's relay address, the control connection and
/// a UDP socket of the client.
async fn associate(proxy: SocketAddr) -> (SocketAddr, TcpStream, UdpSocket) {
    let (code, relay, control) = ask(proxy, UDP, &ip("0.0.0.0:0".parse().unwrap())).await;
    assert_eq!(code, 0, "UDP ASSOCIATE answered");
    let Addr::Ip(relay) = relay else {
        panic!("relay address {relay:?}")
    };
    (relay, control, UdpSocket::bind(lo()).await.unwrap())
}

/// A 60 KiB datagram and small ones to `echo` come back whole through the association, and
/// one to `denied` is never sent.
async fn associate_round_trips(proxy: SocketAddr, echo: SocketAddr, denied: &std::net::UdpSocket) {
    let (relay, mut control, client) = associate(proxy).await;
    let to_denied = ip(denied.local_addr().unwrap());
    client
        .send_to(&datagram(&to_denied, b"not for you"), relay)
        .await
        .unwrap();
    let big: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
    client
        .send_to(&datagram(&ip(echo), &big), relay)
        .await
        .unwrap();
    let (from, back) = recv_datagram(&client).await;
    assert_eq!(from, ip(echo));
    assert!(back == big, "60 KiB datagram changed: {} bytes", back.len());
    // A name travels unresolved and resolves on the egress side.
    for i in 0..10u8 {
        let to = Addr::Domain("localhost".into(), echo.port());
        let payload = vec![i; usize::from(i) + 1];
        client
            .send_to(&datagram(&to, &payload), relay)
            .await
            .unwrap();
        assert_eq!(recv_datagram(&client).await.1, payload);
    }
    denied.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        denied.recv_from(&mut buf).map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "a denied destination got a datagram"
    );
    control.shutdown(std::net::Shutdown::Write).unwrap();
    closed(&mut control).await;
}

#[test]
fn udp_associate_on_a_remote_proxy_port_leaves_from_the_client_under_its_rules() {
    use burrow::client::ClientConfig;
    use burrow::relay::RelayConfig;
    use common::tunnel::*;
    run(|sp| async move {
        let (echo, _e) = udp_echo().await;
        let denied = std::net::UdpSocket::bind(lo()).unwrap();
        let relay = start_relay(&sp, RelayConfig::default()).await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.remotes = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        let deny = format!("127.0.0.1:{}", denied.local_addr().unwrap().port());
        cfg.rules.deny = vec![deny.parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        let proxy = c.bound().await;
        associate_round_trips(proxy, echo, &denied).await;
        // The egress was the client's: its session carried the flow, and the flow ended
        // with the association.
        let flows = || {
            c.metrics
                .udp_flows_total
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert!(flows() >= 1);
        eventually("the flow ends", || {
            relay
                .metrics
                .udp_flows
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
        })
        .await;
    });
}

#[test]
fn udp_associate_on_a_local_proxy_port_leaves_from_the_relay_under_its_rules() {
    use burrow::client::ClientConfig;
    use burrow::relay::RelayConfig;
    use common::tunnel::*;
    run(|sp| async move {
        let (echo, _e) = udp_echo().await;
        let denied = std::net::UdpSocket::bind(lo()).unwrap();
        let mut rcfg = RelayConfig::default();
        let deny = format!("127.0.0.1:{}", denied.local_addr().unwrap().port());
        rcfg.rules.deny = vec![deny.parse().unwrap()];
        let relay = start_relay(&sp, rcfg).await;
        let mut cfg = ClientConfig::new(relay.url());
        cfg.locals = vec!["127.0.0.1:0:proxy".parse().unwrap()];
        let c = start_client(&sp, cfg).await;
        c.wait("connected", |e| *e == burrow::client::Event::Connected)
            .await;
        associate_round_trips(c.locals[0], echo, &denied).await;
        assert!(
            relay
                .metrics
                .udp_flows_total
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
    });
}
