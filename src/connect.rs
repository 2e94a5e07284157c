//! `burrow connect`: one byte stream joined to a target through a CONNECT chain.
//! With stdin/stdout this is an `ssh -o ProxyCommand`.

use crate::net::DialError;
use crate::proxy::chain::Upstream;
use crate::proxy::rules::Rules;
use futures_lite::FutureExt;
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
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

/// Dials `host:port` through `upstream`, then copies `input → target` and `target → output`.
/// Ends when the target closes (after passing on input's EOF as a write shutdown, so a
/// half-closed exchange still completes). Returns the bytes moved each way.
pub async fn join<I, O>(
    upstream: &Upstream,
    host: &str,
    port: u16,
    timeout: Duration,
    mut input: I,
    mut output: O,
) -> Result<(u64, u64), ConnectError>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let (stream, early) = upstream
        .connect(host, port, &Rules::default(), timeout)
        .await
        .map_err(ConnectError::Dial)?;
    log::debug!("connected to {}", crate::net::host_port(host, port));
    output.write_all(&early).await.map_err(ConnectError::Io)?;
    let mut w = stream.clone();
    let up = async {
        let n = futures_lite::io::copy(&mut input, &mut w).await?;
        // Our side is done sending; the target may still answer.
        w.close().await?;
        std::future::pending::<io::Result<(u64, u64)>>().await?;
        Ok((n, 0))
    };
    let down = async {
        let n = futures_lite::io::copy(stream.clone(), &mut output).await?;
        output.flush().await?;
        Ok((0, n + early.len() as u64))
    };
    down.or(up).await.map_err(ConnectError::Io)
}
