//! HTTP/1.x heads: our own bounded parser and writer, reading them off streams, and message
//! body framing for the forwarding proxy.

pub mod auth;
pub mod body;
pub mod front;
pub mod head;
pub mod status;
pub mod surface;
