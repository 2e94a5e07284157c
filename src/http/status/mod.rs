//! An operator's view: `/status` (a small HTML page), `/status.json` (the same data) and
//! `/config` (the running configuration, secrets masked). The relay and the client each
//! describe themselves as a [`Page`] of tables; this module renders it, knowing nothing of
//! either role.

use crate::http::surface::Answer;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod config;
mod html;
mod json;

pub use config::ConfigText;

/// One value of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// text; peer-provided text is fine (both renderers escape it)
    Text(String),
    /// a count
    Num(u64),
    /// not known (yet): `null` in JSON, `-` on the page
    Missing,
}

impl Cell {
    /// Text of anything displayable.
    pub fn text(v: impl fmt::Display) -> Cell {
        Cell::Text(v.to_string())
    }

    /// A moment, as `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn time(t: SystemTime) -> Cell {
        Cell::Text(utc(t))
    }

    /// A duration in whole milliseconds, or missing.
    pub fn millis(d: Option<Duration>) -> Cell {
        match d {
            Some(d) => Cell::Num(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => Cell::Missing,
        }
    }
}

/// Rows under named columns. `name` and the column names are JSON keys; the page shows them
/// with `_` as a space.
#[derive(Debug, Clone)]
pub struct Table {
    /// JSON key and heading (`sessions`)
    pub name: &'static str,
    /// column names (`bytes_in`); every row has one cell per column
    pub columns: &'static [&'static str],
    /// the rows
    pub rows: Vec<Vec<Cell>>,
}

/// Everything one view shows: a header of named values, then tables.
#[derive(Debug, Clone)]
pub struct Page {
    /// what the page is about (`burrow relay`)
    pub title: String,
    /// named values shown above the tables (`version`, `uptime_s`, totals)
    pub header: Vec<(&'static str, Cell)>,
    /// the tables, in order
    pub tables: Vec<Table>,
}

/// How a view gets its page and its configuration text, each time one is asked for.
pub type Source<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// Seconds between the page's refreshes of itself.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The routes `/status`, `/status.json` and `/config`; `None` for any other path (so a
/// caller can fall through to [`crate::http::surface::standard_route`], see
/// [`crate::http::surface::combine`]).
pub fn route(
    page: Source<Page>,
    config: Source<String>,
) -> impl Fn(&str, &str) -> Option<Answer> + Send + Sync + 'static {
    move |method: &str, path: &str| {
        if !matches!(path, "/status" | "/status.json" | "/config") {
            return None;
        }
        if !matches!(method, "GET" | "HEAD") {
            let text = "text/plain; charset=utf-8";
            return Some((405, text, "method not allowed\n".into()));
        }
        Some(match path {
            "/status" => (200, "text/html; charset=utf-8", html::render(&page())),
            "/status.json" => (200, "application/json", json::render(&page())),
            _ => (200, "text/plain; charset=utf-8", config()),
        })
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds; the epoch for a time before it).
pub fn utc(t: SystemTime) -> String {
    crate::time::utc::UtcSecond::at(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn hostile_page() -> Page {
        Page {
            title: "burrow <relay>".into(),
            header: vec![("version", Cell::text("1.0")), ("up", Cell::Num(3))],
            tables: vec![Table {
                name: "sessions",
                columns: &["token", "bytes_in", "rtt_ms"],
                rows: vec![vec![
                    Cell::text("<script>alert(\"x\")</script>&\u{1}\\"),
                    Cell::Num(42),
                    Cell::Missing,
                ]],
            }],
        }
    }

    #[test]
    fn utc_is_rfc3339() {
        assert_eq!(utc(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(utc(t), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn the_three_paths_and_nothing_else() {
        let page: Source<Page> = Arc::new(hostile_page);
        let config: Source<String> = Arc::new(|| "[relay]\n".into());
        let r = route(page, config);
        assert_eq!(r("GET", "/status").map(|a| a.0), Some(200));
        assert_eq!(
            r("GET", "/status.json").map(|a| a.1),
            Some("application/json")
        );
        assert_eq!(r("HEAD", "/config").map(|a| a.2), Some("[relay]\n".into()));
        assert_eq!(r("POST", "/status").map(|a| a.0), Some(405));
        assert!(r("GET", "/metrics").is_none());
        assert!(r("GET", "/status/").is_none());
    }
}
