//! A UTC time to the second without a date-time crate: the log lines' timestamp and the
//! times `/status` shows.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC time to the second, printed as RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcSecond {
    /// seconds since 1970-01-01T00:00:00Z
    pub secs: u64,
}

impl UtcSecond {
    /// The current time (a clock before 1970 prints as the epoch).
    pub fn now() -> UtcSecond {
        UtcSecond::at(SystemTime::now())
    }

    /// The second of `t` (a time before 1970 is the epoch).
    pub fn at(t: SystemTime) -> UtcSecond {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        UtcSecond { secs }
    }
}

impl fmt::Display for UtcSecond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs / 86_400;
        let rem = self.secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

/// Year, month (1-12) and day (1-31) of the day `days` after 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`, for days >= 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that the leap day ends a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_rfc3339_utc() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (59, "1970-01-01T00:00:59Z"),
            (86_399, "1970-01-01T23:59:59Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_800, "2000-03-01T00:00:00Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (1_798_770_098, "2027-01-01T02:21:38Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(UtcSecond { secs }.to_string(), want, "secs {secs}");
        }
    }

    fn month_len(y: u64, m: u64) -> u64 {
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        match m {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // 1970 to 2400: each day is the next date, so no month or leap year is skipped.
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for days in 1..157_000 {
            let (y, m, d) = civil_from_days(days);
            let next_in_month = (y, m, d) == (prev.0, prev.1, prev.2 + 1);
            let next_month = d == 1
                && prev.2 == month_len(prev.0, prev.1)
                && ((y, m) == (prev.0, prev.1 + 1) || (y, m, prev.1) == (prev.0 + 1, 1, 12));
            assert!(next_in_month || next_month, "{prev:?} -> {:?}", (y, m, d));
            assert!(d <= month_len(y, m), "{:?}", (y, m, d));
            prev = (y, m, d);
        }
    }
}
