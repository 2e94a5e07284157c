//! The real `burrow` binary as a child process, and a blocking echo server.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_burrow");

/// A child process with its stdout and stderr lines collected on threads; killed on drop.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start burrow");
        let (tx, lines) = mpsc::channel();
        forward_lines(child.stderr.take().unwrap(), tx.clone());
        forward_lines(child.stdout.take().unwrap(), tx);
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// A line containing `needle` seen already or coming (bounded): for lines of stdout and
    /// stderr, whose order between the two is not known.
    pub fn saw_or_wait(&mut self, needle: &str) -> String {
        match self.seen.iter().find(|l| l.contains(needle)) {
            Some(l) => l.clone(),
            None => self.wait_line(needle),
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`; returns it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no output line with {needle:?}; saw {:#?}", self.seen)
    }

    pub fn listening(&mut self) -> SocketAddr {
        let line = self.wait_line("proxy listening on ");
        let addr = line.split("proxy listening on ").nth(1).unwrap();
        addr.split_whitespace().next().unwrap().parse().unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits (bounded) for exit; returns the code and all stderr.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, String) {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(l);
                }
                return (status.code(), self.seen.join("\n"));
            }
            assert!(
                Instant::now() < end,
                "burrow did not exit within {limit:?}; log: {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Already exited is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `r`, read on a thread of their own.
pub fn line_reader(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    forward_lines(r, tx);
    lines
}

/// Sends the lines of `r` to `tx`, from a thread of its own.
fn forward_lines(r: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// A blocking echo server on its own thread.
pub fn echo_server() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = s;
                if std::io::copy(&mut r, &mut w).is_ok() {
                    w.shutdown(std::net::Shutdown::Write).ok();
                }
            });
        }
    });
    addr
}
