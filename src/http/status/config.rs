//! `/config`: a running configuration as TOML-like text, with the key names of
//! `docs/CONFIG.md`. Secrets never appear: a token is `"***"`, a token's SHA-256 its first 8
//! hex digits and `…`.

use std::fmt::{Display, Write};

/// Builds the text of `/config`, a key at a time.
#[derive(Debug, Default)]
pub struct ConfigText {
    out: String,
}

impl ConfigText {
    /// An empty text.
    pub fn new() -> Self {
        ConfigText::default()
    }

    /// A `[section]` (or `[[section]]`) line, after a blank line.
    pub fn section(&mut self, header: &str) -> &mut Self {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        self.out.push_str(header);
        self.out.push('\n');
        self
    }

    /// A comment line.
    pub fn comment(&mut self, text: &str) -> &mut Self {
        let _ = writeln!(self.out, "# {}", text.replace('\n', " "));
        self
    }

    /// `key = "value"`.
    pub fn string(&mut self, key: &str, value: impl Display) -> &mut Self {
        let _ = writeln!(self.out, "{key} = {}", quote(&value.to_string()));
        self
    }

    /// `key = value` (a number or a boolean).
    pub fn raw(&mut self, key: &str, value: impl Display) -> &mut Self {
        let _ = writeln!(self.out, "{key} = {value}");
        self
    }

    /// `key = "20s"` (or `"1500ms"` when not whole seconds): the forms the file reads.
    pub fn duration(&mut self, key: &str, d: std::time::Duration) -> &mut Self {
        if d.subsec_millis() == 0 {
            self.string(key, format_args!("{}s", d.as_secs()))
        } else {
            self.string(key, format_args!("{}ms", d.as_millis()))
        }
    }

    /// `key = ["a", "b"]`.
    pub fn list<T: Display>(&mut self, key: &str, items: impl IntoIterator<Item = T>) -> &mut Self {
        let items: Vec<String> = items.into_iter().map(|i| quote(&i.to_string())).collect();
        let _ = writeln!(self.out, "{key} = [{}]", items.join(", "));
        self
    }

    /// `key = "***"` when a secret is set; nothing when it is not.
    pub fn secret(&mut self, key: &str, set: bool) -> &mut Self {
        if set {
            let _ = writeln!(self.out, "{key} = \"***\"");
        }
        self
    }

    /// `key = "9f86d081…"`: the first 8 hex digits of a hash, enough to tell tokens apart.
    pub fn hash_prefix(&mut self, key: &str, hash: &[u8]) -> &mut Self {
        let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(self.out, "{key} = \"{hex}…\"");
        self
    }

    /// The text.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.out)
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_quoting_and_masks() {
        let text = ConfigText::new()
            .section("[relay]")
            .string("listen", "0.0.0.0:8443")
            .raw("max-streams", 100)
            .duration("keepalive", std::time::Duration::from_secs(20))
            .duration("grace", std::time::Duration::from_millis(1500))
            .list("allow", ["a\"b", "c\\d"])
            .secret("token", true)
            .secret("admin-token", false)
            .section("[[relay.tokens]]")
            .hash_prefix("token-sha256", &[0x9f, 0x86, 0xd0, 0x81, 0x88])
            .finish();
        assert_eq!(
            text,
            "[relay]\nlisten = \"0.0.0.0:8443\"\nmax-streams = 100\nkeepalive = \"20s\"\ngrace = \"1500ms\"\n\
             allow = [\"a\\\"b\", \"c\\\\d\"]\ntoken = \"***\"\n\n[[relay.tokens]]\n\
             token-sha256 = \"9f86d081…\"\n"
        );
    }
}
