//! `/status`: the page as HTML, one file with inline CSS and no script; it refreshes itself
//! every [`REFRESH`](super::REFRESH). Every value is escaped: most of them come from peers.

use super::{Cell, Page};
use std::fmt::Write;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em;margin:0 0 .4em}h2{font-size:1.05em;margin:1.4em 0 .4em}\
dl{display:flex;flex-wrap:wrap;gap:.3em 1.6em;margin:0}dt{color:#666}dd{margin:0 0 0 .4em;font-weight:600}\
.kv{display:flex}table{border-collapse:collapse;min-width:40%}\
th,td{border-bottom:1px solid #ddd;padding:.25em .8em .25em 0;text-align:left;white-space:nowrap}\
th{color:#555;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
p.none{color:#888;margin:.2em 0}";

/// The page as a complete HTML document.
pub(super) fn render(page: &Page) -> String {
    let mut out = String::with_capacity(4096);
    let title = escape(&page.title);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n<dl>",
        super::REFRESH.as_secs()
    );
    for (name, value) in &page.header {
        let _ = write!(
            out,
            "<div class=\"kv\"><dt>{}</dt><dd id=\"{}\">{}</dd></div>",
            escape(&words(name)),
            escape(name),
            cell(value)
        );
    }
    out.push_str("</dl>\n");
    for table in &page.tables {
        let _ = writeln!(out, "<h2>{}</h2>", escape(&words(table.name)));
        if table.rows.is_empty() {
            let _ = writeln!(out, "<p class=\"none\" id=\"{}\">none</p>", table.name);
            continue;
        }
        let _ = write!(out, "<table id=\"{}\"><tr>", table.name);
        for c in table.columns {
            let _ = write!(out, "<th>{}</th>", escape(&words(c)));
        }
        out.push_str("</tr>\n");
        for row in &table.rows {
            out.push_str("<tr>");
            for value in row {
                let class = if matches!(value, Cell::Num(_)) {
                    " class=\"n\""
                } else {
                    ""
                };
                let _ = write!(out, "<td{class}>{}</td>", cell(value));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

fn cell(c: &Cell) -> String {
    match c {
        Cell::Text(t) => escape(t),
        Cell::Num(n) => n.to_string(),
        Cell::Missing => "-".into(),
    }
}

/// `bytes_in` as `bytes in`.
fn words(name: &str) -> String {
    name.replace('_', " ")
}

/// Text safe in an element and in a quoted attribute; control characters become U+FFFD.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_is_escaped_and_the_page_refreshes_itself() {
        let html = render(&super::super::tests::hostile_page());
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;\u{fffd}\\"));
        assert!(html.contains("<title>burrow &lt;relay&gt;</title>"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(html.contains("<th>bytes in</th>"));
        assert!(html.contains("<td class=\"n\">42</td><td>-</td>"));
        // No external assets: nothing is loaded from anywhere.
        for asset in ["src=", "href=", "<script", "url("] {
            assert!(!html.contains(asset), "{asset}");
        }
    }
}
