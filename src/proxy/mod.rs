//! The proxy door (design 1): one HTTP proxy client connection, `CONNECT` and absolute-form
//! requests, or one SOCKS5 client (CONNECT and UDP ASSOCIATE; the first byte tells them
//! apart), reaching targets through any [`Dialer`](crate::dial::Dialer). `burrow proxy` is
//! [`Proxy`]: this door on a listener with a direct dialer; the relay and the client open the
//! same door on their `:proxy` ports with a dialer that goes through the tunnel. Basic auth,
//! target rules and the upstream chain live in `http` and `dial`.
//!
//! Files, arrows downward: `server` (listener, front door, CONNECT) → `forward` (absolute-form
//! requests), `socks` (SOCKS5 handshake and CONNECT) → `socks_udp` (UDP ASSOCIATE) → `conn`
//! (one client connection's shared state and replies) → `config`.

mod config;
mod conn;
mod forward;
mod reload;
pub mod server;
mod socks;
mod socks_udp;

pub use config::ProxyConfig;
pub use reload::ProxyHandle;
pub use server::{Proxy, serve_connection};
