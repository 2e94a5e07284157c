//! `burrow connect`: one byte stream spliced to a target through a proxy chain (HTTP CONNECT
//! and SOCKS5 hops).
//! With stdin/stdout this is an `ssh -o ProxyCommand`.

use crate::dial::DialError;
use crate::dial::chain::{ChainNames, Upstream};
use crate::dial::rules::Rules;
use crate::splice::splice_stdio;
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

/// Dials `host:port` through `upstream`, then splices `input`/`output` to it
/// ([`splice_stdio`]); returns the bytes received.
pub async fn run<I, O>(
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
    let received = splice_stdio(stream, input, output)
        .await
        .map_err(ConnectError::Io)?;
    Ok(received + early.len() as u64)
}
