//! `burrow proxy` end to end: real sockets on 127.0.0.1, our own raw client.

mod common;

use burrow::dial::chain::{Hop, HopKind, Upstream};
use burrow::proxy::ProxyConfig;
use common::*;
use futures_lite::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use std::time::Duration;

fn hop(addr: std::net::SocketAddr, auth: Option<&str>) -> Hop {
    Hop {
        kind: HopKind::Http,
        host: addr.ip().to_string(),
        port: addr.port(),
        auth: auth.map(|a| a.parse().unwrap()),
    }
}

#[test]
fn connect_tunnel_reaches_origin() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let (head, mut r) = connect_via(p.addr, origin, "").await;
        assert_eq!(head.status, 200);
        assert_eq!(head.reason, "Connection established");
        r.get_mut()
            .write_all(b"GET /x HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let body = String::from_utf8(read_all(&mut r).await).unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.ends_with("hello from burrow\nGET /x\n"), "{body}");
    });
}

#[test]
fn bytes_sent_right_behind_the_connect_head_are_forwarded() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        // Head and payload in one write, as a TLS client sends its ClientHello.
        let req = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\nearly-bytes");
        let (head, mut r) = send_raw(p.addr, req.as_bytes()).await;
        assert_eq!(head.status, 200);
        let mut got = [0u8; 11];
        within(10, "echo", r.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"early-bytes");
    });
}

#[test]
fn http10_connect_gets_http10_answer() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let (head, _r) = send_raw(
            p.addr,
            format!("CONNECT {echo} HTTP/1.0\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(
            (head.status, head.version),
            (200, burrow::http::head::Version::Http10)
        );
    });
}

#[test]
fn half_close_passes_through_the_tunnel() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let (head, mut r) = connect_via(p.addr, echo, "").await;
        assert_eq!(head.status, 200);
        let payload = vec![42u8; 300_000];
        r.get_mut().write_all(&payload).await.unwrap();
        // Our write side ends; the echo's answer must still come back in full, then EOF.
        r.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
        let back = read_all(&mut r).await;
        assert_eq!(back.len(), payload.len());
    });
}

#[test]
fn absolute_form_keep_alive_and_chunked_bodies() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let req = format!(
            "POST http://{origin}/first HTTP/1.1\r\nHost: {origin}\r\nTransfer-Encoding: chunked\r\nProxy-Connection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
             GET http://{origin}/bytes/100000 HTTP/1.1\r\nHost: {origin}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut r = futures_lite::io::BufReader::new(s);
        let h1 = within(
            10,
            "first",
            burrow::http::front::read_response(&mut r, Duration::from_secs(10)),
        )
        .await
        .unwrap();
        assert_eq!(h1.status, 200);
        let n: usize = h1.headers.get("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; n];
        r.read_exact(&mut body).await.unwrap();
        assert_eq!(body, b"hello from burrow\nPOST /first\n");
        let h2 = within(
            10,
            "second",
            burrow::http::front::read_response(&mut r, Duration::from_secs(10)),
        )
        .await
        .unwrap();
        assert_eq!(h2.headers.get("content-length"), Some("100000"));
        let mut body = vec![0; 100_000];
        r.read_exact(&mut body).await.unwrap();
        assert!(body.iter().all(|&b| b == b'x'));
        // Same connection, a third request, then close.
        let req = format!("GET http://{origin}/third HTTP/1.1\r\nConnection: close\r\n\r\n");
        r.get_mut().write_all(req.as_bytes()).await.unwrap();
        let rest = String::from_utf8(read_all(&mut r).await).unwrap();
        assert!(rest.contains("GET /third"), "{rest}");
        assert!(
            rest.to_ascii_lowercase().contains("connection: close"),
            "{rest}"
        );
    });
}

#[test]
fn auth_is_required_and_checked() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let cfg = ProxyConfig {
            auth: Some("alice:s3cret".parse().unwrap()),
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        let (head, _) = connect_via(p.addr, origin, "").await;
        assert_eq!(head.status, 407);
        assert_eq!(
            head.headers.get("proxy-authenticate"),
            Some("Basic realm=\"burrow\"")
        );
        let (head, _) = connect_via(p.addr, origin, &basic("alice:wrong")).await;
        assert_eq!(head.status, 407);
        let (head, _) = connect_via(p.addr, origin, &basic("alice:s3cret")).await;
        assert_eq!(head.status, 200);
        // Absolute-form: accepted with credentials, and they never reach the origin.
        let req = format!(
            "GET http://{origin}/ HTTP/1.1\r\n{}Connection: close\r\n\r\n",
            basic("alice:s3cret")
        );
        let (head, _) = send_raw(p.addr, req.as_bytes()).await;
        assert_eq!(head.status, 200);
    });
}

#[test]
fn proxy_authorization_never_reaches_the_origin() {
    run(|sp| async move {
        // A raw origin that records the request head it receives.
        let l = smol::net::TcpListener::bind(lo()).await.unwrap();
        let origin = l.local_addr().unwrap();
        let seen = smol::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut r = futures_lite::io::BufReader::new(s);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            r.get_mut()
                .write_all(b"HTTP/1.0 200 OK\r\n\r\nclose-delimited body")
                .await
                .unwrap();
            head
        });
        let cfg = ProxyConfig {
            auth: Some("u:p".parse().unwrap()),
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        let req = format!(
            "GET http://{origin}/path?q=1 HTTP/1.1\r\nHost: {origin}\r\n{}Proxy-Connection: keep-alive\r\nX-Keep: yes\r\n\r\n",
            basic("u:p")
        );
        let (head, mut r) = send_raw(p.addr, req.as_bytes()).await;
        assert_eq!(head.status, 200);
        assert_eq!(
            read_all(&mut r).await,
            b"close-delimited body",
            "HTTP/1.0 close-delimited body passes through"
        );
        let got = within(10, "origin head", seen).await;
        assert!(got.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{got}");
        let lower = got.to_ascii_lowercase();
        assert!(!lower.contains("proxy-authorization"), "{got}");
        assert!(!lower.contains("proxy-connection"), "{got}");
        assert!(lower.contains("x-keep: yes"), "{got}");
    });
}

#[test]
fn three_hop_chain_with_auth_on_one_hop() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let last = start_proxy(
            &sp,
            ProxyConfig {
                auth: Some("hop:pw".parse().unwrap()),
                ..Default::default()
            },
        )
        .await;
        let middle = start_proxy(&sp, ProxyConfig::default()).await;
        let chain = |auth: Option<&str>| ProxyConfig {
            upstream: Upstream {
                hops: vec![hop(middle.addr, None), hop(last.addr, auth)],
                no_proxy: vec![],
            },
            ..Default::default()
        };
        let first = start_proxy(&sp, chain(Some("hop:pw"))).await;
        let (head, mut r) = connect_via(first.addr, origin, "").await;
        assert_eq!(head.status, 200);
        r.get_mut()
            .write_all(b"GET /chained HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let body = String::from_utf8(read_all(&mut r).await).unwrap();
        assert!(body.contains("GET /chained"), "{body}");
        // Absolute-form through the same chain.
        let req = format!("GET http://{origin}/abs HTTP/1.1\r\nConnection: close\r\n\r\n");
        let (head, mut r) = send_raw(first.addr, req.as_bytes()).await;
        assert_eq!(head.status, 200);
        assert!(
            String::from_utf8(read_all(&mut r).await)
                .unwrap()
                .contains("GET /abs")
        );
        // Wrong credentials at hop 2: the client learns which hop said what.
        let bad = start_proxy(&sp, chain(Some("hop:nope"))).await;
        let (head, mut r) = connect_via(bad.addr, origin, "").await;
        assert_eq!(head.status, 502);
        let why = String::from_utf8(read_all(&mut r).await).unwrap();
        assert!(
            why.contains(&format!("upstream hop 2 ({})", last.addr)) && why.contains("407"),
            "{why}"
        );
    });
}

#[test]
fn upstream_answering_http10_200_is_accepted() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        // A minimal upstream that answers HTTP/1.0 200 and then sends data right behind it.
        let l = smol::net::TcpListener::bind(lo()).await.unwrap();
        let up = l.local_addr().unwrap();
        let _srv = smol::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut r = futures_lite::io::BufReader::new(s);
            let _ = burrow::http::front::read_request(&mut r, Duration::from_secs(5))
                .await
                .unwrap();
            r.get_mut()
                .write_all(b"HTTP/1.0 200 OK\r\nX-Y: z\r\n\r\nSSH-2.0-banner\r\n")
                .await
                .unwrap();
            smol::Timer::after(Duration::from_secs(5)).await;
        });
        let cfg = ProxyConfig {
            upstream: Upstream {
                hops: vec![hop(up, None)],
                no_proxy: vec![],
            },
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        let (head, mut r) = connect_via(p.addr, echo, "").await;
        assert_eq!(head.status, 200);
        let mut line = String::new();
        within(10, "banner", r.read_line(&mut line)).await.unwrap();
        assert_eq!(
            line, "SSH-2.0-banner\r\n",
            "bytes behind the upstream's 200 are not lost"
        );
    });
}

#[test]
fn error_statuses() {
    run(|sp| async move {
        let (origin, _o) = start_origin(&sp).await;
        let deny = ProxyConfig {
            rules: burrow::dial::rules::Rules {
                allow: vec![],
                deny: vec!["127.0.0.0/8".parse().unwrap()],
            },
            ..Default::default()
        };
        let p = start_proxy(
            &sp,
            ProxyConfig {
                head_timeout: Duration::from_millis(300),
                ..Default::default()
            },
        )
        .await;
        let denying = start_proxy(&sp, deny).await;
        let long_target = "a".repeat(9000);
        let many_headers: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let cases: Vec<(String, Vec<u8>, u16)> = vec![
            ("garbage".into(), b"HELLO\r\n\r\n".to_vec(), 400),
            (
                "origin-form".into(),
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                400,
            ),
            (
                "version".into(),
                format!("CONNECT {origin} HTTP/2.0\r\n\r\n").into_bytes(),
                505,
            ),
            (
                "long line".into(),
                format!("GET http://x/{long_target} HTTP/1.1\r\n\r\n").into_bytes(),
                414,
            ),
            (
                "many headers".into(),
                format!("CONNECT {origin} HTTP/1.1\r\n{many_headers}\r\n").into_bytes(),
                431,
            ),
            (
                "refused port".into(),
                format!("CONNECT {} HTTP/1.1\r\n\r\n", closed_port()).into_bytes(),
                502,
            ),
            (
                "dns failure".into(),
                b"CONNECT no-such-host.invalid:80 HTTP/1.1\r\n\r\n".to_vec(),
                502,
            ),
            (
                "slow head".into(),
                b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n".to_vec(),
                408,
            ),
        ];
        assert!(!cases.is_empty());
        for (name, req, want) in cases {
            let (head, _) = send_raw(p.addr, &req).await;
            assert_eq!(head.status, want, "{name}");
        }
        let (head, mut r) = connect_via(denying.addr, origin, "").await;
        assert_eq!(head.status, 403);
        assert!(
            String::from_utf8(read_all(&mut r).await)
                .unwrap()
                .contains("not allowed")
        );
        // A name that resolves to loopback does not slip past a deny on the address.
        let (head, _) = send_raw(
            denying.addr,
            format!("CONNECT localhost:{} HTTP/1.1\r\n\r\n", origin.port()).as_bytes(),
        )
        .await;
        assert_eq!(head.status, 403);
        let req = format!("GET http://{origin}/ HTTP/1.1\r\n\r\n");
        let (head, _) = send_raw(denying.addr, req.as_bytes()).await;
        assert_eq!(head.status, 403, "absolute-form obeys the rules too");
    });
}

#[test]
fn connect_timeout_at_a_silent_hop_is_504() {
    run(|sp| async move {
        // An upstream that accepts and never answers.
        let l = smol::net::TcpListener::bind(lo()).await.unwrap();
        let silent = l.local_addr().unwrap();
        let _hold = smol::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let cfg = ProxyConfig {
            upstream: Upstream {
                hops: vec![hop(silent, None)],
                no_proxy: vec![],
            },
            connect_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let p = start_proxy(&sp, cfg).await;
        let (head, _) = connect_via(p.addr, closed_port(), "").await;
        assert_eq!(head.status, 504);
    });
}

#[test]
fn max_connections_answers_503() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(
            &sp,
            ProxyConfig {
                max_connections: 2,
                ..Default::default()
            },
        )
        .await;
        let (a, _ra) = connect_via(p.addr, echo, "").await;
        let (b, _rb) = connect_via(p.addr, echo, "").await;
        assert_eq!((a.status, b.status), (200, 200));
        let (c, _) = connect_via(p.addr, echo, "").await;
        assert_eq!(c.status, 503);
    });
}

#[test]
fn slowloris_gets_408_while_others_are_served() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(
            &sp,
            ProxyConfig {
                head_timeout: Duration::from_millis(500),
                ..Default::default()
            },
        )
        .await;
        let mut slow = TcpStream::connect(p.addr).await.unwrap();
        let dripper = smol::spawn(async move {
            for b in b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nX: yyyyyyyyyyyyyyyyyyyyyyyy" {
                if slow.write_all(&[*b]).await.is_err() {
                    break;
                }
                smol::Timer::after(Duration::from_millis(50)).await;
            }
            slow
        });
        // Meanwhile a normal client is served at once.
        let (head, _) = connect_via(p.addr, echo, "").await;
        assert_eq!(head.status, 200);
        let slow = within(10, "dripper", dripper).await;
        let mut r = futures_lite::io::BufReader::new(slow);
        let head = burrow::http::front::read_response(&mut r, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(head.status, 408);
    });
}

#[test]
fn a_thousand_concurrent_connects() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let clients: Vec<_> = (0..1000u32)
            .map(|i| {
                smol::spawn(async move {
                    let (head, mut r) = connect_via(p.addr, echo, "").await;
                    assert_eq!(head.status, 200);
                    let msg = i.to_be_bytes();
                    r.get_mut().write_all(&msg).await.unwrap();
                    let mut back = [0u8; 4];
                    r.read_exact(&mut back).await.unwrap();
                    assert_eq!(back, msg);
                    r
                })
            })
            .collect();
        let mut held = Vec::new();
        for c in clients {
            held.push(within(20, "client", c).await);
        }
        assert_eq!(held.len(), 1000);
    });
}

#[test]
fn drain_lets_a_transfer_finish_and_refuses_new_connections() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(
            &sp,
            ProxyConfig {
                drain_timeout: Duration::from_secs(10),
                ..Default::default()
            },
        )
        .await;
        let (head, mut r) = connect_via(p.addr, echo, "").await;
        assert_eq!(head.status, 200);
        r.get_mut().write_all(b"before").await.unwrap();
        p.shutdown.drain();
        // New connections are refused once the listener is gone.
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(p.addr).await.is_err() {
                refused = true;
                break;
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        assert!(refused, "listener still accepting after drain");
        // The open tunnel still works, then closes cleanly.
        r.get_mut().write_all(b"-after").await.unwrap();
        r.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut r).await, b"before-after");
        within(10, "proxy ends after the drain", p.task).await;
    });
}

#[test]
fn drain_timeout_cancels_stuck_connections() {
    run(|sp| async move {
        let (echo, _e) = start_echo().await;
        let p = start_proxy(
            &sp,
            ProxyConfig {
                drain_timeout: Duration::from_millis(200),
                ..Default::default()
            },
        )
        .await;
        let (head, mut r) = connect_via(p.addr, echo, "").await;
        assert_eq!(head.status, 200);
        p.shutdown.drain();
        within(10, "proxy ends at the drain deadline", p.task).await;
        // The tunnel task was cancelled: our side sees the connection end.
        let rest = read_all(&mut r).await;
        assert!(rest.is_empty());
    });
}

#[test]
fn keep_alive_connection_can_switch_origins() {
    run(|sp| async move {
        let (a, _oa) = start_origin(&sp).await;
        let (b, _ob) = start_origin(&sp).await;
        let p = start_proxy(&sp, ProxyConfig::default()).await;
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let req = format!(
            "GET http://{a}/first HTTP/1.1\r\nHost: {a}\r\n\r\nGET http://{b}/second HTTP/1.1\r\nHost: {b}\r\n\r\nGET http://{a}/third HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut r = futures_lite::io::BufReader::new(s);
        let all = String::from_utf8(read_all(&mut r).await).unwrap();
        let order: Vec<&str> = ["GET /first", "GET /second", "GET /third"]
            .into_iter()
            .filter(|m| all.contains(m))
            .collect();
        assert_eq!(order.len(), 3, "{all}");
        assert!(
            all.find("GET /first") < all.find("GET /second")
                && all.find("GET /second") < all.find("GET /third")
        );
    });
}
