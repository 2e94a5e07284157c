//! The log line's timestamp, without a date-time crate.
//!
//! env_logger's `humantime` feature pulls in jiff (time zones, parsing) only to print a UTC
//! timestamp; this prints the same `2026-12-02T02:01:38Z` from the seconds since the epoch.

pub use crate::time::utc::UtcSecond;
use std::fmt;
use std::io::{self, Write};

/// Writes one log line as env_logger's default format did without the target:
/// `[2026-12-02T02:01:38Z INFO ] message`.
pub fn write_line(
    out: &mut impl Write,
    at: UtcSecond,
    level: log::Level,
    args: &fmt::Arguments<'_>,
) -> io::Result<()> {
    writeln!(out, "[{at} {level:<5}] {args}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_env_loggers_default_format() {
        let at = UtcSecond {
            secs: 1_798_770_098,
        };
        let mut out = Vec::new();
        write_line(
            &mut out,
            at,
            log::Level::Info,
            &format_args!("relay listening on {}", 7),
        )
        .unwrap();
        write_line(&mut out, at, log::Level::Error, &format_args!("x")).unwrap();
        let want =
            "[2027-01-01T02:21:38Z INFO ] relay listening on 7\n[2027-01-01T02:21:38Z ERROR] x\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}
