//! The copy between a TCP socket and a mux stream, with no copy of our own in between.
//!
//! - TCP → stream: the socket is read straight into a pooled DATA frame buffer behind the
//!   frame header, never more than the stream's credit, so nothing is parked here: what the
//!   peer cannot take yet stays in the kernel's socket buffer.
//! - Stream → TCP: the received payload (a slice of the WebSocket message) is written to the
//!   socket as it is, and consumed (returning credit) only once written.
//! - Half-close both ways, as `splice::splice`: TCP EOF sends FIN; the stream's FIN shuts
//!   down the socket's write half.

use crate::splice::Outcome;
use crate::tunnel::stream::MuxStream;
use futures_lite::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// What [`splice`] did.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) outcome: Outcome,
    /// bytes from the socket into the stream
    pub(crate) sent: u64,
    /// bytes from the stream to the socket
    pub(crate) received: u64,
}

/// One direction's progress.
#[derive(Default)]
struct Dir {
    eof: bool,
    done: bool,
    bytes: u64,
}

/// Copies both ways until both ended (FIN each way) or one failed.
///
/// One socket handle serves both directions (its read and write wait in slots of their own):
/// a `TcpStream` handle carries its readiness futures, about 350 bytes, and a second one made
/// every stream's task that much larger.
pub(crate) async fn splice(mut tcp: TcpStream, mut stream: MuxStream) -> Report {
    let mut up = Dir::default();
    let mut down = Dir::default();
    let outcome = std::future::poll_fn(|cx| {
        let a = up.tcp_to_stream(cx, &mut tcp, &mut stream);
        if let Poll::Ready(Err(e)) = a {
            return Poll::Ready(Outcome::Error(e));
        }
        let b = down.stream_to_tcp(cx, &stream, &mut tcp);
        if let Poll::Ready(Err(e)) = b {
            return Poll::Ready(Outcome::Error(e));
        }
        if a.is_ready() && b.is_ready() {
            return Poll::Ready(Outcome::Closed);
        }
        Poll::Pending
    })
    .await;
    Report {
        outcome,
        sent: up.bytes,
        received: down.bytes,
    }
}

impl Dir {
    /// Reads the socket into DATA frames while the stream has credit; `Ready(Ok)` once the
    /// socket's EOF was passed on as FIN.
    fn tcp_to_stream(
        &mut self,
        cx: &mut Context<'_>,
        tcp: &mut TcpStream,
        stream: &mut MuxStream,
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        while !self.eof {
            let room = ready!(stream.poll_send_room(cx))?;
            let mut buf = stream.frame_buf();
            match Pin::new(&mut *tcp).poll_read(cx, &mut buf.payload_mut()[..room]) {
                Poll::Ready(Ok(0)) => {
                    stream.give_back(buf);
                    self.eof = true;
                }
                Poll::Ready(Ok(n)) => {
                    stream.send_buf(buf, n)?;
                    self.bytes += n as u64;
                }
                Poll::Ready(Err(e)) => {
                    stream.give_back(buf);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    stream.give_back(buf);
                    return Poll::Pending;
                }
            }
        }
        ready!(Pin::new(stream).poll_close(cx))?;
        self.done = true;
        Poll::Ready(Ok(()))
    }

    /// Writes what the stream received to the socket; `Ready(Ok)` once the stream's FIN was
    /// passed on as a write shutdown.
    fn stream_to_tcp(
        &mut self,
        cx: &mut Context<'_>,
        stream: &MuxStream,
        tcp: &mut TcpStream,
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        while !self.eof {
            let Some(chunk) = ready!(stream.poll_chunk(cx))? else {
                self.eof = true;
                break;
            };
            let n = ready!(Pin::new(&mut *tcp).poll_write(cx, &chunk))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            stream.consume(n);
            self.bytes += n as u64;
        }
        ready!(Pin::new(&mut *tcp).poll_close(cx))?;
        self.done = true;
        Poll::Ready(Ok(()))
    }
}
