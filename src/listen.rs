//! Listeners: accepting connections until shutdown drains.

use smol::net::TcpStream;
use std::net::SocketAddr;
use std::time::Duration;

/// Accepts the next connection, or `None` once `shutdown` drains. A failed accept (out of
/// descriptors, a connection reset in the backlog) is logged and retried after a short pause
/// instead of spinning. Cancel-safe.
pub async fn accept(
    listener: &smol::net::TcpListener,
    shutdown: &crate::shutdown::ShutdownSignal,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    use futures_lite::FutureExt;
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shutdown.draining().await;
                None
            })
            .await?;
        match accepted {
            Ok((stream, peer)) => {
                stream.set_nodelay(true).ok();
                return Some((stream, peer));
            }
            Err(e) => {
                log::warn!("{what}: accept failed: {e}");
                smol::Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}
