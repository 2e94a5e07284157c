//! The proxy role (design 1): an HTTP CONNECT forward proxy that also forwards absolute-form
//! requests, with Basic auth, target rules and an upstream chain (those live in `dial` and
//! `http`).
//!
//! Files, arrows downward: `server` (listener, front door, CONNECT) → `forward` (absolute-form
//! requests) → `conn` (one client connection's shared state and replies) → `config`.

mod config;
mod conn;
mod forward;
pub mod server;

pub use config::ProxyConfig;
pub use server::{Proxy, serve_connection};
