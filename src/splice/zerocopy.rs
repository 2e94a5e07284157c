//! Zero-copy splice between two TCP sockets: splice(2) moves the bytes from one socket into a
//! pipe and from the pipe into the other socket, so they never cross into user space.
//!
//! - One pipe per direction, at most two per tunnel, created on the first byte that direction
//!   carries (an idle tunnel, or one that only ever talks one way, holds none) and closed with
//!   the tunnel. A pipe costs two descriptors, and its pages only while it holds bytes: a
//!   tunnel that moved data both ways uses 6 descriptors (2 sockets + 2 pipes) instead of 2.
//! - Readiness comes from the reactor (`Async<TcpStream>` readable and writable events), the
//!   calls are non-blocking (`SPLICE_F_NONBLOCK` and non-blocking sockets).
//! - The first [`WARM_UP`] bytes of each direction are copied in user space: most connections
//!   are short exchanges, for which two pipes (`pipe2`, and four more `close`s) and the splice
//!   calls cost more system calls than the copy saves. A direction that carries more is
//!   handed over to splice(2) between two reads, with nothing parked.
//! - Falls back to the user-space copy of [`super::splice`], per direction, when the kernel
//!   refuses splice(2) for these sockets at the first call (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`),
//!   or when no pipe can be created (descriptor limit): the tunnel works, only slower.

use super::{Outcome, Pump, Report, drive};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice as sys_splice};
use smol::Async;
use smol::net::TcpStream;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// Most bytes one splice(2) call moves: the default pipe capacity on Linux (16 pages), so a
/// pipe is used as the kernel makes it, without a resizing fcntl per tunnel. A larger pipe
/// would mean fewer calls but more pages pinned per stalled tunnel. (Past the per-user pipe
/// budget, `fs.pipe-user-pages-soft`, about 1,000 such pipes for a user without
/// CAP_SYS_RESOURCE, the kernel makes pipes of a page or two: splice then moves that much per
/// call, still without a copy.)
const PIPE_CHUNK: usize = 64 * 1024;

/// Most bytes one direction moves in one poll before it yields to the executor, so a bulk
/// transfer cannot starve the other direction or the other connections on this thread.
const BUDGET: usize = 16 * PIPE_CHUNK;

/// Bytes each direction copies in user space before it moves to splice(2) (see the module doc).
pub const WARM_UP: u64 = 128 * 1024;

/// Bytes moved by splice(2) in this process, all tunnels.
static ZERO_COPY_BYTES: AtomicU64 = AtomicU64::new(0);

/// Set once a pipe could not be created, so the reason is logged once per process.
static PIPE_FAILED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Bytes this process moved between sockets with splice(2), without a copy through user space
/// (all tunnels since start).
pub fn zero_copy_bytes() -> u64 {
    ZERO_COPY_BYTES.load(Relaxed)
}

type Sock = Async<std::net::TcpStream>;

/// A direction's pipe and how many bytes it holds.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    held: usize,
}

/// What a direction found before it had a pipe.
enum First {
    /// EOF before any byte (recorded; no pipe needed).
    Eof,
    /// Bytes are waiting: here is the pipe for them.
    Data(Pipe),
    /// Bytes are waiting but no pipe could be created: copy in user space.
    NoPipe,
}

/// Why a direction cannot splice: it falls back to the user-space copy (no byte was lost).
struct Unsupported;

/// One direction moved with splice(2).
struct ZeroPump {
    /// Created on the first byte (see the module doc).
    pipe: Option<Pipe>,
    eof: bool,
    done: bool,
    /// bytes this direction moved, the warm-up's included
    bytes: u64,
    /// of them, bytes moved by splice(2)
    spliced: u64,
    /// The last read (or look) found nothing: wait for a readable event before the next
    /// system call, so polls made for the other direction's sake cost none.
    read_wait: bool,
    /// The same for a full writer.
    write_wait: bool,
}

impl ZeroPump {
    /// Takes over a direction that already moved `bytes` (in its warm-up).
    fn after(bytes: u64) -> Self {
        ZeroPump {
            bytes,
            ..ZeroPump::new()
        }
    }

    fn new() -> Self {
        ZeroPump {
            pipe: None,
            eof: false,
            done: false,
            bytes: 0,
            spliced: 0,
            read_wait: false,
            write_wait: false,
        }
    }

    /// Drives this direction; `Ready(Ok(Ok))` once EOF was passed on as a write shutdown,
    /// `Ready(Ok(Err(Unsupported)))` when it must fall back (only before its first spliced byte).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &Sock,
        dst: &Sock,
        moved: &mut bool,
    ) -> Poll<io::Result<Result<(), Unsupported>>> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        let mut budget = BUDGET;
        loop {
            if self.done {
                return Poll::Ready(Ok(Ok(())));
            }
            if let Some(pipe) = self.pipe.as_mut().filter(|p| p.held > 0) {
                ready!(wait(&mut self.write_wait, || dst.poll_writable(cx)))?;
                match sys_splice(&pipe.r, None, dst.get_ref(), None, pipe.held, flags) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        // The kernel never moves more than asked; checked all the same.
                        pipe.held = pipe.held.checked_sub(n).ok_or(io::ErrorKind::InvalidData)?;
                        self.bytes += n as u64;
                        self.spliced += n as u64;
                        ZERO_COPY_BYTES.fetch_add(n as u64, Relaxed);
                        *moved = true;
                    }
                    Err(Errno::AGAIN) => self.write_wait = true,
                    Err(e) => return Poll::Ready(Err(e.into())),
                }
                continue;
            }
            if self.eof {
                dst.get_ref().shutdown(Shutdown::Write)?;
                self.done = true;
                continue;
            }
            if budget == 0 {
                // Yield: come back at once, after the others had their turn.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let pipe = match self.pipe.as_mut() {
                Some(pipe) => pipe,
                None => match self.first_data(cx, src) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(First::Eof)) => continue,
                    Poll::Ready(Ok(First::NoPipe)) => {
                        return Poll::Ready(Ok(Err(Unsupported)));
                    }
                    Poll::Ready(Ok(First::Data(pipe))) => self.pipe.insert(pipe),
                },
            };
            ready!(wait(&mut self.read_wait, || src.poll_readable(cx)))?;
            match sys_splice(src.get_ref(), None, &pipe.w, None, PIPE_CHUNK, flags) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    pipe.held = n;
                    budget = budget.saturating_sub(n);
                }
                Err(Errno::AGAIN) => self.read_wait = true,
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if self.spliced == 0 => {
                    log::debug!("splice(2) refused for this socket: copying in user space");
                    return Poll::Ready(Ok(Err(Unsupported)));
                }
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// Before the pipe exists: waits for the first byte (or EOF, which needs no pipe), then
    /// creates the pipe.
    fn first_data(&mut self, cx: &mut Context<'_>, src: &Sock) -> Poll<io::Result<First>> {
        loop {
            ready!(wait(&mut self.read_wait, || src.poll_readable(cx)))?;
            match src.get_ref().peek(&mut [0u8; 1]) {
                Ok(0) => {
                    self.eof = true;
                    return Poll::Ready(Ok(First::Eof));
                }
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_wait = true,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        match pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK) {
            Ok((r, w)) => Poll::Ready(Ok(First::Data(Pipe { r, w, held: 0 }))),
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE): this direction copies in user space.
                if !PIPE_FAILED_LOGGED.swap(true, Relaxed) {
                    log::warn!("no pipe for splice(2) ({e}): copying in user space (logged once)");
                }
                Poll::Ready(Ok(First::NoPipe))
            }
        }
    }
}

/// When `waiting` (the last call would have blocked), polls for the readiness event first and
/// clears it once the event came; `Ready` means: try the system call.
fn wait(waiting: &mut bool, poll: impl FnOnce() -> Poll<io::Result<()>>) -> Poll<io::Result<()>> {
    if *waiting {
        ready!(poll())?;
        *waiting = false;
    }
    Poll::Ready(Ok(()))
}

/// One direction: its warm-up in user space, then in the kernel while it can, in user space
/// again if it fell back.
enum Dir {
    /// Boxed, as `Copy`: every tunnel's task would otherwise carry a pump's size twice.
    Warm(Box<Copied>),
    Zero(ZeroPump),
    /// Boxed: the fallback is rare.
    Copy(Box<Copied>),
}

/// A direction copied in user space. It owns its handles: their readiness registrations must
/// outlive a poll.
struct Copied {
    pump: Pump,
    r: TcpStream,
    w: TcpStream,
}

impl Copied {
    fn new(pump: Pump, src: &TcpStream, dst: &TcpStream) -> Box<Self> {
        Box::new(Copied {
            pump,
            r: src.clone(),
            w: dst.clone(),
        })
    }

    fn poll(&mut self, cx: &mut Context<'_>, moved: &mut bool) -> Poll<io::Result<()>> {
        self.pump
            .poll(cx, Pin::new(&mut self.r), Pin::new(&mut self.w), moved)
    }
}

impl Dir {
    fn new(src: &TcpStream, dst: &TcpStream) -> Self {
        Dir::Warm(Copied::new(Pump::handing_off_at(WARM_UP), src, dst))
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        socks: (&Sock, &Sock),
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        loop {
            match self {
                Dir::Warm(c) => {
                    ready!(c.poll(cx, moved))?;
                    if c.pump.done {
                        return Poll::Ready(Ok(()));
                    }
                    // Past the warm-up with nothing parked: on to splice(2).
                    *self = Dir::Zero(ZeroPump::after(c.pump.bytes));
                }
                Dir::Zero(zero) => match ready!(zero.poll(cx, socks.0, socks.1, moved))? {
                    Ok(()) => return Poll::Ready(Ok(())),
                    Err(Unsupported) => {
                        let mut pump = Pump::new();
                        pump.bytes = zero.bytes;
                        *self = Dir::Copy(Copied::new(pump, src, dst));
                    }
                },
                Dir::Copy(c) => return c.poll(cx, moved),
            }
        }
    }

    /// Bytes moved, and whether any went through splice(2).
    fn bytes(&self) -> (u64, bool) {
        match self {
            Dir::Zero(z) => (z.bytes, z.spliced > 0),
            Dir::Warm(c) | Dir::Copy(c) => (c.pump.bytes, false),
        }
    }
}

/// [`splice`](super::splice) for two TCP sockets, moving bytes with splice(2): same half-close,
/// idle timeout, outcomes and byte counts; the report says whether the zero-copy path carried
/// the bytes.
///
/// splice(2) into a socket whose peer is gone raises SIGPIPE: Rust binaries ignore it (std
/// does so before `main`); a host program that embeds this must ignore it too.
pub async fn splice_tcp(a: &TcpStream, b: &TcpStream, idle: Option<Duration>) -> Report {
    let sa: Arc<Sock> = a.clone().into();
    let sb: Arc<Sock> = b.clone().into();
    let mut up = Dir::new(a, b);
    let mut down = Dir::new(b, a);
    let outcome: Outcome = drive(
        idle,
        |cx, moved| up.poll(cx, a, b, (&sa, &sb), moved),
        |cx, moved| down.poll(cx, b, a, (&sb, &sa), moved),
    )
    .await;
    let ((a_to_b, up_zero), (b_to_a, down_zero)) = (up.bytes(), down.bytes());
    Report {
        outcome,
        a_to_b,
        b_to_a,
        zero_copy: up_zero || down_zero,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::FutureExt;
    use std::io::{Read, Write};

    /// A connected pair of sockets: (ours, registered with the reactor; the far end, blocking).
    fn pair() -> (Sock, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let far = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let ours = Async::new(l.accept().unwrap().0).unwrap();
        (ours, far)
    }

    /// Polls `pump` until `done(pump)` holds, within a deadline.
    async fn until(pump: &mut ZeroPump, src: &Sock, dst: &Sock, done: impl Fn(&ZeroPump) -> bool) {
        let mut moved = false;
        let polled = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = pump.poll(cx, src, dst, &mut moved) {
                assert!(matches!(r, Ok(Ok(()))), "the direction failed");
            }
            if done(pump) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        polled
            .or(async {
                smol::Timer::after(Duration::from_secs(10)).await;
                panic!("no progress within 10s")
            })
            .await
    }

    #[test]
    fn a_pipe_is_made_on_the_first_byte_and_never_for_an_idle_or_ended_direction() {
        smol::block_on(async {
            let (src, mut writer) = pair();
            let (dst, mut reader) = pair();
            let mut pump = ZeroPump::new();
            let mut moved = false;
            let idle =
                std::future::poll_fn(|cx| Poll::Ready(pump.poll(cx, &src, &dst, &mut moved)));
            assert!(idle.await.is_pending());
            assert!(pump.pipe.is_none(), "an idle direction holds no pipe");

            writer.write_all(b"first").unwrap();
            until(&mut pump, &src, &dst, |p| p.bytes == 5).await;
            assert!(pump.pipe.is_some(), "bytes moved through a pipe");
            let mut got = [0u8; 5];
            reader.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"first");
            assert_eq!(pump.pipe.as_ref().map(|p| p.held), Some(0));

            // A direction that ends before its first byte never makes a pipe.
            let (src, writer) = pair();
            let (dst, mut reader) = pair();
            let mut pump = ZeroPump::new();
            writer.shutdown(Shutdown::Write).unwrap();
            until(&mut pump, &src, &dst, |p| p.done).await;
            assert!(pump.pipe.is_none());
            assert_eq!(reader.read(&mut [0u8; 1]).unwrap(), 0, "EOF passed on");
        });
    }
}
