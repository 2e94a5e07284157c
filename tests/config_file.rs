//! The config file through the real binary: `burrow check` (every error placed, exit 2; every
//! example accepted), `--config` with flags that override it, and `burrow run` applying a
//! changed file live (roles added and removed, an invalid file refused, SIGHUP).

mod common;

use common::certs::{Ca, TempDir};
use common::proc::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Runs `burrow ARGS` to its end (bounded); returns the exit code and stdout + stderr.
fn burrow(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut p = Proc::start(args, env);
    p.wait_exit(Duration::from_secs(30))
}

#[test]
fn check_reports_every_error_with_its_place_and_exits_2() {
    let dir = TempDir::new("check");
    let file = dir.path("bad.toml");
    std::fs::write(
        &file,
        "[relay]\ntoken = \"t\"\nkeepalive = \"5x\"\nbogus = 1\n\n[[client]]\nrelays = [\"ws://127.0.0.1:1\"]\nforward = [\"nonsense\"]\n",
    )
    .unwrap();
    let (code, out) = burrow(&["check", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{out}");
    let f = file.display();
    for want in [
        format!("{f}:3:13: keepalive: bad duration"),
        format!("{f}:4:1: unknown key `bogus` in [relay]"),
        format!("{f}:8:12: forward: bad -L \"nonsense\""),
    ] {
        assert!(out.contains(&want), "{want:?} missing from:\n{out}");
    }
    // `burrow run` refuses to start on the same errors.
    let (code, out2) = burrow(&["run", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{out2}");
    assert!(out2.contains(&format!("{f}:3:13: keepalive")), "{out2}");
    assert!(!out2.contains("listening"), "{out2}");
}

/// Every file in examples/, with its /etc/burrow/ paths pointed at test files (a certificate,
/// a key, a CA and secrets made here) and its `env:` secrets set.
#[test]
fn check_accepts_every_example() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "examples: {files:?}");
    let dir = TempDir::new("examples");
    let ca = Ca::new("examples");
    let (cert, key) = ca.leaf(&["relay.example.com"], false);
    let etc = dir.0.display().to_string();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let text = text.replace("/etc/burrow/", &format!("{etc}/"));
        // Whatever the example reads from /etc/burrow/: a certificate, a key, a CA or a secret.
        for part in text.split(&format!("{etc}/")).skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                .collect();
            let content = match name.rsplit('.').next() {
                _ if name.contains("key") => key.clone(),
                Some("pem" | "crt") if name.contains("ca") => ca.pem.clone(),
                Some("pem" | "crt") => cert.clone(),
                _ => "user:example-secret\n".to_string(),
            };
            std::fs::write(dir.path(&name), content).unwrap();
        }
        let copy = dir.path(file.file_name().unwrap().to_str().unwrap());
        std::fs::write(&copy, &text).unwrap();
        let mut env = Vec::new();
        for part in text.split("\"env:").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            env.push(name);
        }
        // A proxy URL for the upstream hops, credentials for the rest.
        let value = |n: &str| match n.ends_with("_PROXY") {
            true => "http://user:example@proxy.example:3128",
            false => "user:example",
        };
        let env: Vec<(&str, &str)> = env.iter().map(|n| (n.as_str(), value(n))).collect();
        let (code, out) = burrow(&["check", copy.to_str().unwrap()], &env);
        assert_eq!(code, Some(0), "{}:\n{out}", file.display());
        assert!(out.contains(": ok: "), "{out}");
    }
}

#[test]
fn config_flag_reads_the_section_and_flags_override_it() {
    let dir = TempDir::new("override");
    let file = dir.path("proxy.toml");
    // As written, an open proxy on every address: refused.
    std::fs::write(
        &file,
        "[proxy]\nlisten = \"0.0.0.0:0\"\nconnect-timeout = \"3s\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (code, out) = burrow(&["proxy", "--config", path], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!("{path}:1:2: refusing to run an open proxy")),
        "{out}"
    );
    // The flag wins: loopback, and the file's other keys still apply.
    let mut p = Proc::start(&["proxy", "--config", path, "--listen", "127.0.0.1:0"], &[]);
    let addr = p.listening();
    assert!(addr.ip().is_loopback());
    let echo = echo_server();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

/// A `burrow run` process and the addresses it reports.
struct Run {
    p: Proc,
}

impl Run {
    fn start(file: &std::path::Path) -> Run {
        Run {
            p: Proc::start(&["run", file.to_str().unwrap()], &[("RUST_LOG", "info")]),
        }
    }
    /// A relay in `burrow run` of its own, on 127.0.0.1:0, its token in `dir/token` (which
    /// the clients' files name too); returns it with its address.
    fn relay(dir: &TempDir) -> (Run, SocketAddr) {
        std::fs::write(dir.path("token"), "run-secret\n").unwrap();
        let file = dir.path("relay.toml");
        let text =
            "[relay]\nlisten = \"127.0.0.1:0\"\ntoken = \"file:token\"\nlame-duck = \"0s\"\n";
        std::fs::write(&file, text).unwrap();
        let mut relay = Run::start(&file);
        let addr = relay.addr_after("relay listening on ");
        (relay, addr)
    }

    /// SIGTERM: every role drains, the process exits 0 (bounded); returns its output.
    fn terminate(&mut self) -> String {
        self.p.signal("-TERM");
        let (code, log) = self.p.wait_exit(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{log}");
        log
    }

    /// The address in the line with `needle`, right after it.
    fn addr_after(&mut self, needle: &str) -> SocketAddr {
        let line = self.p.saw_or_wait(needle);
        let rest = line.split(needle).nth(1).unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }
}

/// Polls (bounded: 200 tries, 50 ms apart) until `addr` refuses connections.
fn assert_refuses(addr: SocketAddr, what: &str) {
    let refused = (0..200).any(|_| {
        // Each try bounded too: a listener that no longer accepts fills its backlog, then a
        // connect would hang.
        let gone = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err();
        if !gone {
            std::thread::sleep(Duration::from_millis(50));
        }
        gone
    });
    assert!(refused, "{what} still accepts connections");
}

fn echo_roundtrip(addr: SocketAddr, msg: &str) -> Result<String, std::io::Error> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(msg.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut back = String::new();
    s.read_to_string(&mut back)?;
    Ok(back)
}

#[test]
fn run_applies_a_changed_file_and_refuses_an_invalid_one() {
    let dir = TempDir::new("run");
    // The relay in one process (its port is known once it listens) ...
    let (mut relay, relay_addr) = Run::relay(&dir);
    // ... and a proxy in another, to which a client is added, then removed.
    let echo = echo_server();
    let file = dir.path("edge.toml");
    let proxy_only = "[proxy]\nlisten = \"127.0.0.1:0\"\n".to_string();
    std::fs::write(&file, &proxy_only).unwrap();
    let mut edge = Run::start(&file);
    let proxy = edge.addr_after("proxy listening on ");
    let client = format!(
        "{proxy_only}\n[[client]]\nname = \"app\"\nrelays = [\"ws://{relay_addr}/burrow\"]\ntoken = \"file:token\"\nforward = [\"127.0.0.1:0:{echo}\"]\n"
    );
    // Noticed on disk (no signal).
    std::fs::write(&file, &client).unwrap();
    let local = edge.addr_after("[app] listening L ");
    edge.p.saw_or_wait("[app] connected");
    edge.p
        .saw_or_wait("reload (the file changed): 1 added, 0 removed, 0 changed, 1 unchanged");
    assert_eq!(
        echo_roundtrip(local, "through the new client").unwrap(),
        "through the new client"
    );
    // The proxy was not touched: the same port still serves.
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // An invalid file is refused with its errors; what runs stays.
    std::fs::write(&file, format!("{client}keepalive = \"never\"\n")).unwrap();
    edge.p
        .saw_or_wait(&format!("{}:9:13: keepalive: bad duration", file.display()));
    edge.p
        .saw_or_wait("refused: 1 errors; the running configuration stays");
    assert_eq!(echo_roundtrip(local, "still here").unwrap(), "still here");

    // SIGHUP after the client's removal: it stops, its port refuses.
    std::fs::write(&file, &proxy_only).unwrap();
    edge.p.signal("-HUP");
    edge.p.saw_or_wait("reload: app removed");
    edge.p
        .saw_or_wait("0 added, 1 removed, 0 changed, 1 unchanged");
    assert_refuses(local, "the removed client's -L port");

    // SIGTERM drains every role and exits 0.
    edge.terminate();
    relay.terminate();
}

/// A server that sends `len` bytes of a known pattern to each connection, then closes.
fn pattern_server(len: usize) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut s = s;
                let block: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
                let mut left = len;
                while left > 0 {
                    let n = left.min(block.len());
                    if s.write_all(&block[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    addr
}

/// The test: a download runs through a tunnel the reload leaves alone while another
/// tunnel is added and a third removed; the download completes intact, the new tunnel works,
/// the removed one refuses.
#[test]
fn run_reload_leaves_an_unchanged_tunnel_alone() {
    const LEN: usize = 64 << 20;
    let dir = TempDir::new("reload-download");
    let (mut relay, relay_addr) = Run::relay(&dir);
    let (download, kept, added) = (pattern_server(LEN), echo_server(), echo_server());
    let file = dir.path("client.toml");
    let client = |forwards: &[SocketAddr]| {
        let list: Vec<String> = forwards
            .iter()
            .map(|t| format!("\"127.0.0.1:0:{t}\""))
            .collect();
        format!(
            "[[client]]\nname = \"app\"\nrelays = [\"ws://{relay_addr}/burrow\"]\ntoken = \"file:token\"\nforward = [{}]\n",
            list.join(", ")
        )
    };
    let removed = echo_server();
    std::fs::write(&file, client(&[download, kept, removed])).unwrap();
    let mut run = Run::start(&file);
    let local = |run: &mut Run, target: SocketAddr| -> SocketAddr {
        let line = run.p.saw_or_wait(&format!("({target})"));
        let addr = line.split("listening L ").nth(1).unwrap();
        addr.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (dl_local, kept_local, removed_local) = (
        local(&mut run, download),
        local(&mut run, kept),
        local(&mut run, removed),
    );
    run.p.saw_or_wait("connected");
    // The download starts and is read a little ...
    let mut dl = TcpStream::connect(dl_local).unwrap();
    dl.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = vec![0u8; 1 << 20];
    dl.read_exact(&mut got).unwrap();
    let mut total = got.len();
    // ... while the reload adds one tunnel and removes another.
    std::fs::write(&file, client(&[download, kept, added])).unwrap();
    run.p.signal("-HUP");
    run.p
        .saw_or_wait(&format!("app: forward 127.0.0.1:0:{removed} removed"));
    run.p
        .saw_or_wait(&format!("app: forward 127.0.0.1:0:{added} added"));
    run.p
        .saw_or_wait("0 added, 0 removed, 1 changed, 0 unchanged");
    let added_local = local(&mut run, added);
    assert_eq!(echo_roundtrip(added_local, "new").unwrap(), "new");
    assert_eq!(echo_roundtrip(kept_local, "kept").unwrap(), "kept");
    assert_refuses(removed_local, "the removed tunnel's port");
    // The download finishes, every byte in its place.
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = dl.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            let at = total + i;
            assert_eq!(*b, ((at % 65536) % 251) as u8, "byte {at}");
        }
        total += n;
    }
    for (i, b) in got.iter().enumerate() {
        assert_eq!(*b, ((i % 65536) % 251) as u8, "byte {i}");
    }
    assert_eq!(total, LEN);
    let log = run.terminate();
    assert!(!log.contains("restarting"), "{log}");
    relay.terminate();
}
