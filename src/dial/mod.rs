//! Reaching targets: resolving names, target rules on names and every address, the [`Dialer`]
//! seam, [`DialError`], the upstream chain client, HTTP CONNECT and SOCKS5 hops (`connect`,
//! `--via` and `--upstream` all use it), and `host:port` parsing and printing.

pub mod addr;
pub mod chain;
pub mod dialer;
pub mod error;
pub mod hop;
pub mod resolve;
pub mod rules;
pub mod udp;

pub use addr::{host_port, split_host_port};
pub use dialer::{Dialer, DirectDialer};
pub use error::DialError;
pub use resolve::{BY_RULES, UNSPECIFIED, connect_any, dial, dialable, permitted, resolve};
