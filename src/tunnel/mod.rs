//! Design 2: many TCP streams multiplexed over one WebSocket connection.
//! The protocol is specified in `docs/PROTOCOL.md`.

pub mod frame;
