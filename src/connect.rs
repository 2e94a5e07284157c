//! `burrow connect`: one byte stream joined to a target through a CONNECT chain.
//! With stdin/stdout this is an `ssh -o ProxyCommand`.

use crate::dial::DialError;
use crate::dial::chain::{ChainNames, Upstream};
use crate::dial::rules::Rules;
use futures_lite::FutureExt;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::io;
use std::time::Duration;

/// Why a joined stream ended badly.
#[derive(Debug)]
pub enum ConnectError {
    /// The target could not be reached (which hop, which status: see the error).
    Dial(DialError),
    /// The stream broke after it was established.
    Io(io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Dial(e) => e.fmt(f),
            ConnectError::Io(e) => write!(f, "stream failed: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Dials `host:port` through `upstream`, then [`pipe`]s `input`/`output` to it; returns the
/// bytes received.
pub async fn join<I, O>(
    upstream: &Upstream,
    host: &str,
    port: u16,
    timeout: Duration,
    input: I,
    mut output: O,
) -> Result<u64, ConnectError>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let (stream, early) = upstream
        .connect(host, port, &Rules::default(), ChainNames::ByName, timeout)
        .await
        .map_err(ConnectError::Dial)?;
    log::debug!("connected to {}", crate::dial::host_port(host, port));
    output.write_all(&early).await.map_err(ConnectError::Io)?;
    output.flush().await.map_err(ConnectError::Io)?;
    let received = pipe(stream, input, output)
        .await
        .map_err(ConnectError::Io)?;
    Ok(received + early.len() as u64)
}

/// Copies `input → stream` and `stream → output`. Ends when the stream's far side closes
/// (after passing input's EOF on as a write shutdown, so a half-closed exchange completes).
/// Returns the bytes received from the stream.
pub async fn pipe<S, I, O>(stream: S, mut input: I, mut output: O) -> io::Result<u64>
where
    S: AsyncRead + AsyncWrite + Clone + Unpin,
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut w = stream.clone();
    let up = async {
        futures_lite::io::copy(&mut input, &mut w).await?;
        // Our side is done sending; the target may still answer.
        w.close().await?;
        std::future::pending::<io::Result<u64>>().await
    };
    let down = async {
        // Flush after every chunk: stdout is line-buffered, and ssh's binary packets have no
        // newline to push them out.
        let mut r = stream.clone();
        let mut buf = vec![0u8; 16 * 1024];
        let mut n = 0u64;
        loop {
            let k = r.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            output.write_all(&buf[..k]).await?;
            output.flush().await?;
            n += k as u64;
        }
        Ok(n)
    };
    down.or(up).await
}
