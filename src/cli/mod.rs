//! The Face: the command line ([`args`]: argh structs and the parsers for values users type)
//! and the checks that turn it into the roles' configs ([`configs`]).

pub mod args;
pub mod configs;
pub mod log_line;
pub mod run;

pub use args::*;
pub use configs::{Usage, usage};
