//! burrow: a small, fast, dependable HTTP tunnel.
//!
//! Two tunnel designs share one core:
//! - **HTTP CONNECT** ([`proxy`], [`connect`]): a forward proxy with upstream chains, auth and
//!   target rules, and a stdio client for `ssh -o ProxyCommand`.
//! - **WebSocket tunnel** ([`relay`], [`client`]): many TCP streams multiplexed over one
//!   WebSocket connection between a public relay and a client inside a private network.
//!
//! The code is in four parts, arrows only downward: Face ([`cli`], [`demo`]) → Roles
//! ([`relay`], [`client`], [`connect`]) → Core ([`proxy`], [`http`], [`dial`], [`tunnel`],
//! [`splice`], [`bridge`]) → Edges ([`exec`], [`listen`], [`time`], [`shutdown`], [`metrics`],
//! [`refusal`], `tls`, [`secret`]). `docs/ARCHITECTURE.md` walks through them.
//!
//! The protocol code is written against futures-io streams and spawns only through an
//! [`exec::Spawner`] it is given; smol appears where bytes meet the OS.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(missing_debug_implementations)]

pub mod bridge;
pub mod cli;
pub mod client;
pub mod config;
pub mod connect;
pub mod demo;
pub mod dial;
pub mod exec;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod proxy;
pub mod refusal;
pub mod relay;
pub mod reload;
pub mod secret;
pub mod shutdown;
pub mod socks;
pub mod splice;
pub mod time;
#[cfg(feature = "tls")]
pub mod tls;
pub mod tunnel;
