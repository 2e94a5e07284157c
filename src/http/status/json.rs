//! `/status.json`: the page as one JSON object, written by hand (no serde): the header's
//! values as keys, then each table as an array of objects keyed by its columns.

use super::{Cell, Page};
use std::fmt::Write;

/// `{"title": …, <header…>, "<table>": [{<column>: …}, …], …}`.
pub(super) fn render(page: &Page) -> String {
    let mut out = String::with_capacity(2048);
    out.push_str("{\"title\":");
    string(&mut out, &page.title);
    for (name, value) in &page.header {
        out.push(',');
        string(&mut out, name);
        out.push(':');
        cell(&mut out, value);
    }
    for table in &page.tables {
        out.push(',');
        string(&mut out, table.name);
        out.push_str(":[");
        for (i, row) in table.rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            for (j, (column, value)) in table.columns.iter().zip(row).enumerate() {
                if j > 0 {
                    out.push(',');
                }
                string(&mut out, column);
                out.push(':');
                cell(&mut out, value);
            }
            out.push('}');
        }
        out.push(']');
    }
    out.push_str("}\n");
    out
}

fn cell(out: &mut String, c: &Cell) {
    match c {
        Cell::Text(t) => string(out, t),
        // Writing to a String cannot fail.
        Cell::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Cell::Missing => out.push_str("null"),
    }
}

/// A JSON string: quotes, backslashes and control characters escaped (RFC 8259 §7); `<`, `>`
/// and `&` too, so the text is also safe pasted into a page.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '<' | '>' | '&') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_shape() {
        let json = render(&super::super::tests::hostile_page());
        assert_eq!(
            json,
            "{\"title\":\"burrow \\u003crelay\\u003e\",\"version\":\"1.0\",\"up\":3,\
             \"sessions\":[{\"token\":\"\\u003cscript\\u003ealert(\\\"x\\\")\\u003c/script\\u003e\
             \\u0026\\u0001\\\\\",\"bytes_in\":42,\"rtt_ms\":null}]}\n"
        );
    }
}
