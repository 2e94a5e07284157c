//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929): the wire format
//! ([`wire`]) shared by the server side (every proxy door speaks it beside HTTP, told apart by
//! the first byte) and the client side ([`client`]: upstream hops `socks5://`).
//!
//! Core: imports `dial` (targets and refusals) but no role.

pub mod client;
pub mod wire;

pub use wire::{Addr, AddrError, Reply};
