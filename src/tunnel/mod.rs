//! Design 2: many TCP streams multiplexed over one WebSocket connection.
//! The protocol is specified in `docs/PROTOCOL.md`.

pub(crate) mod flow;
pub mod frame;
pub(crate) mod outbox;
pub(crate) mod pool;
pub mod session;
pub mod stream;
pub mod watch;
pub mod ws;

pub use frame::{BindMode, BindPool, Frame, OpenTarget, RefuseCode};
pub use session::{
    CloseReason, Driver, Incoming, OpenError, Session, SessionConfig, Side, UdpFlow,
};
pub use stream::MuxStream;
pub use watch::Watch;
