//! The proxy role (design 1): an HTTP CONNECT forward proxy that also forwards absolute-form
//! requests, with Basic auth, target rules and an upstream chain (those live in `dial` and
//! `http`).

mod forward;
pub mod server;

pub use server::{Proxy, ProxyConfig, serve_connection};
