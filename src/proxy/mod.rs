//! Design 1: the HTTP CONNECT forward proxy, its auth, target rules and upstream chain.

pub mod auth;
pub mod chain;
pub mod dial;
mod forward;
pub mod rules;
pub mod server;

pub use server::{Proxy, ProxyConfig, serve_connection};
