//! An in-memory duplex byte pipe (no sockets, no reactor): proof that sessions run over any
//! futures-io stream.

use futures_lite::io::{AsyncRead, AsyncWrite};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Half {
    buf: VecDeque<u8>,
    closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// One end: reads `rx`, writes `tx`.
pub struct End {
    rx: Arc<Mutex<Half>>,
    tx: Arc<Mutex<Half>>,
    cap: usize,
}

pub fn duplex(cap: usize) -> (End, End) {
    let (a, b) = (
        Arc::new(Mutex::new(Half::default())),
        Arc::new(Mutex::new(Half::default())),
    );
    (
        End {
            rx: a.clone(),
            tx: b.clone(),
            cap,
        },
        End { rx: b, tx: a, cap },
    )
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut h = self.rx.lock().unwrap();
        if h.buf.is_empty() {
            if h.closed {
                return Poll::Ready(Ok(0));
            }
            h.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(h.buf.len());
        for (i, b) in h.buf.drain(..n).enumerate() {
            buf[i] = b;
        }
        if let Some(w) = h.writer.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut h = self.tx.lock().unwrap();
        if h.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = self.cap - h.buf.len();
        if room == 0 {
            h.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        h.buf.extend(&buf[..n]);
        if let Some(w) = h.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut h = self.tx.lock().unwrap();
        h.closed = true;
        if let Some(w) = h.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for End {
    fn drop(&mut self) {
        for half in [&self.tx, &self.rx] {
            let mut h = half.lock().unwrap();
            h.closed = true;
            for w in [h.reader.take(), h.writer.take()].into_iter().flatten() {
                w.wake();
            }
        }
    }
}
