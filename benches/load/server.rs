//! The far end of every path: one loopback listener that sinks or echoes, chosen by the first
//! byte the client sends. One listener (not two) so that a single socat relay reaches both.
//!
//! Blocking sockets on a growing pool of threads: a thread per live connection, reused once
//! its connection ends, so the connections-per-second test does not pay for a thread spawn per
//! connection on the server side.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

/// First byte of a sink connection, followed by the byte count to come as a little-endian
/// `u64`: the server discards that many bytes (or up to EOF), then answers the number it
/// received as a little-endian `u64` and closes. The count up front means the client need not
/// half-close to end the transfer: tinyproxy and squid close both ways on the first EOF.
pub const SINK: u8 = b'S';
/// Length of the byte count after [`SINK`].
pub const SINK_COUNT_LEN: usize = 8;
/// First byte of an echo connection: the server sends back everything after this byte until
/// EOF, then closes.
pub const ECHO: u8 = b'E';
/// First byte of a one-shot echo: the server sends back the first bytes after this one, then
/// closes first. The side that closes first keeps the TIME_WAIT entry; on the accepting
/// side it does not use up the ephemeral ports that tens of thousands of short connections to
/// one port need on the connecting side.
pub const ECHO_ONCE: u8 = b'1';
/// First byte of an HTTP request (`GET …`): the server reads the head up to its blank line
/// and answers `200` with an [`HTTP_BODY`]-byte body and `Connection: close`, then closes
/// first (a visitor's short exchange, for `--scale`).
pub const HTTP_GET: u8 = b'G';
/// The body of the answer to [`HTTP_GET`]: a small page.
pub const HTTP_BODY: usize = 1024;
/// Longest request head the HTTP mode reads.
const HTTP_MAX_HEAD: usize = 8 * 1024;

/// One read on the server side. Allocated per worker thread, touched only as far as reads
/// fill it, so 1,000 idle echo workers cost little.
const READ_BUF: usize = 256 * 1024;
/// Worker thread stack: the buffer is on the heap, so this only needs to hold the call chain.
const WORKER_STACK: usize = 128 * 1024;
/// Back-off after a failed accept (out of descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Starts the server on `127.0.0.1:0` and returns its address. It runs until the process exits.
pub fn start() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel();
    let pool = Pool {
        idle: Arc::new(AtomicUsize::new(0)),
        tx,
        rx: Arc::new(Mutex::new(rx)),
    };
    thread::Builder::new()
        .name("server-accept".into())
        .spawn(move || accept_loop(listener, pool))?;
    Ok(addr)
}

fn accept_loop(listener: TcpListener, pool: Pool) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => pool.dispatch(stream),
            Err(e) => {
                eprintln!("server: accept failed: {e}");
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Worker threads waiting for a connection, and the queue that hands connections to them.
struct Pool {
    /// Workers that are waiting on `rx` and not yet claimed by `dispatch`. `dispatch` claims
    /// one (decrements) before queueing a connection, so a queued connection always has a
    /// worker on its way to take it, never one busy with a long-lived connection.
    idle: Arc<AtomicUsize>,
    tx: mpsc::Sender<TcpStream>,
    rx: Arc<Mutex<mpsc::Receiver<TcpStream>>>,
}

impl Pool {
    fn dispatch(&self, stream: TcpStream) {
        let claimed = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if claimed {
            if self.tx.send(stream).is_err() {
                eprintln!("server: worker queue closed");
            }
            return;
        }
        let (idle, rx) = (self.idle.clone(), self.rx.clone());
        let spawned = thread::Builder::new()
            .name("server-worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || worker(stream, &idle, &rx));
        if let Err(e) = spawned {
            // The stream was moved into the closure and is dropped with it: the client sees
            // the connection close and reports the failure.
            eprintln!("server: cannot start a worker thread: {e}");
        }
    }
}

fn worker(first: TcpStream, idle: &AtomicUsize, rx: &Mutex<mpsc::Receiver<TcpStream>>) {
    let mut buf = vec![0u8; READ_BUF];
    let mut stream = first;
    loop {
        // Errors are the client's to report (it checks every byte count); a hang-up here is
        // the normal end of a connection.
        if let Err(e) = serve(stream, &mut buf) {
            if !matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) {
                eprintln!("server: {e}");
            }
        }
        idle.fetch_add(1, Ordering::AcqRel);
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match next {
            Ok(s) => stream = s,
            Err(_) => return,
        }
    }
}

fn serve(mut s: TcpStream, buf: &mut [u8]) -> io::Result<()> {
    s.set_nodelay(true)?;
    let n = s.read(buf)?;
    let Some((&mode, rest)) = buf[..n].split_first() else {
        return Ok(()); // a readiness probe: connected and closed
    };
    match mode {
        SINK => {
            let mut count = [0u8; SINK_COUNT_LEN];
            let head = rest.len().min(SINK_COUNT_LEN);
            count[..head].copy_from_slice(&rest[..head]);
            s.read_exact(&mut count[head..])?;
            let expected = u64::from_le_bytes(count);
            let mut total = (rest.len() - head) as u64;
            while total < expected {
                let k = s.read(buf)?;
                if k == 0 {
                    break;
                }
                total += k as u64;
            }
            s.write_all(&total.to_le_bytes())
        }
        ECHO => {
            s.write_all(rest)?;
            loop {
                let k = s.read(buf)?;
                if k == 0 {
                    return Ok(());
                }
                s.write_all(&buf[..k])?;
            }
        }
        ECHO_ONCE => {
            if rest.is_empty() {
                let k = s.read(buf)?;
                s.write_all(&buf[..k])
            } else {
                s.write_all(rest)
            }
        }
        HTTP_GET => {
            let mut n = n;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                if n >= HTTP_MAX_HEAD {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
                }
                let k = s.read(&mut buf[n..HTTP_MAX_HEAD])?;
                if k == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                n += k;
            }
            let mut answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {HTTP_BODY}\r\nContent-Type: text/plain\r\n\
                 Connection: close\r\n\r\n"
            )
            .into_bytes();
            answer.resize(answer.len() + HTTP_BODY, b'x');
            s.write_all(&answer)
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown mode byte {other:#04x}"),
        )),
    }
}

/// `burrow-bench --echo-server`: the echo end of the held-streams memory test, in a child
/// process of its own. Ten thousand held streams are a client socket each in the bench and a
/// server socket each wherever the echo server runs: in the bench itself that would be
/// 20,000 descriptors (the usual soft limit) and, with this module's thread per connection,
/// 10,000 threads. Here one thread serves them all (smol, as burrow does: the streams are
/// idle, so the executor competes with nothing). Speaks [`ECHO`] only.
///
/// Prints `echo listening on ADDR` on stdout, and exits when stdin reaches EOF: the bench
/// holds the other end of that pipe, so the child cannot outlive it even if it is killed.
pub fn echo_child() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{ECHO_CHILD_READY}{}", listener.local_addr()?);
    io::stdout().flush()?;
    thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(|| {
            // Read errors end the watch too: either way the bench is gone.
            let _ = io::copy(&mut io::stdin(), &mut io::sink());
            std::process::exit(0);
        })?;
    let listener = smol::Async::new(listener)?;
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        loop {
            match listener.accept().await {
                Ok((s, _)) => ex.spawn(echo_task(s)).detach(),
                Err(e) => {
                    eprintln!("echo server: accept failed: {e}");
                    smol::Timer::after(ACCEPT_BACKOFF).await;
                }
            }
        }
    }))
}

/// The line [`echo_child`] prints before the address.
pub const ECHO_CHILD_READY: &str = "echo listening on ";

/// One held stream: the mode byte, then everything back until EOF. A small buffer: the
/// streams carry a byte each.
async fn echo_task(mut s: smol::Async<TcpStream>) {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 512];
    let mut first = true;
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut data = &buf[..n];
        if first {
            first = false;
            if data[0] != ECHO {
                eprintln!("echo server: unknown mode byte {:#04x}", data[0]);
                return;
            }
            data = &data[1..];
        }
        if s.write_all(data).await.is_err() {
            return;
        }
    }
}
