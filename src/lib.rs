//! burrow: a small, fast, dependable HTTP tunnel.
//!
//! Two tunnel designs share one core:
//! - **HTTP CONNECT** ([`proxy`]): a forward proxy with upstream chains, auth and target rules.
//! - **WebSocket tunnel** (later): many TCP streams multiplexed over one WebSocket connection.
//!
//! The protocol code is written against futures-io streams and spawns only through an
//! [`exec::Spawner`] it is given; smol appears where bytes meet the OS.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod connect;
pub mod demo;
pub mod exec;
pub mod http;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod relay;
pub mod secret;
pub mod server;
pub mod shutdown;
#[cfg(feature = "tls")]
pub mod tls;
pub mod tunnel;
