//! One `[[relay.tokens]]` entry into a [`TokenSpec`]: a name, the token or its SHA-256, and
//! limits of its own.

use super::schema::{self, Kind};
use super::walk::Walk;
use crate::dial::rules::{Rule, Rules};
use crate::relay::tokens::{TokenKey, TokenSpec};
use crate::secret::Secret;
use toml::de::DeTable;

/// Reads one entry at `at`; `None` (with the problems noted) when it is not usable.
pub fn token(walk: &mut Walk<'_>, table: &DeTable<'_>, at: usize) -> Option<TokenSpec> {
    let mut name = None;
    let mut key = None;
    let mut spec_ok = true;
    let mut allow_ports = None;
    let (mut allow, mut deny) = (None::<Vec<Rule>>, None::<Vec<Rule>>);
    let (mut max_sessions, mut max_streams) = (None, None);
    for (k, value) in table {
        let k_name = k.get_ref().as_ref();
        let Some(schema_key) = schema::find(schema::TOKEN, k_name) else {
            walk.problem_at(
                k.span().start,
                format!("unknown key `{k_name}` in [[relay.tokens]]"),
            );
            spec_ok = false;
            continue;
        };
        let values = walk.values(schema_key, value);
        let v_at = value.span().start;
        if values.is_empty() && !matches!(schema_key.kind, Kind::List(_)) {
            spec_ok = false;
            continue;
        }
        let first = || values[0].0.clone();
        match k_name {
            "name" => name = Some(first()),
            "token" | "token-sha256" => {
                if key.is_some() {
                    walk.problem_at(v_at, "give `token` or `token-sha256`, not both");
                    spec_ok = false;
                    continue;
                }
                key = if k_name == "token" {
                    Some(TokenKey::Plain(Secret::new(first())))
                } else {
                    match sha256_hex(&first()) {
                        Some(h) => Some(TokenKey::Sha256(h)),
                        None => {
                            walk.problem_at(v_at, "token-sha256: expected 64 hex digits");
                            spec_ok = false;
                            continue;
                        }
                    }
                };
            }
            "allow-ports" => allow_ports = crate::cli::parse_port_range(&first()).ok(),
            "allow" | "deny" => {
                // Checked by the walk already: a rule that does not parse is a problem there.
                let rules: Result<Vec<Rule>, _> = values.iter().map(|(v, _)| v.parse()).collect();
                match rules {
                    Ok(r) if k_name == "allow" => allow = Some(r),
                    Ok(r) => deny = Some(r),
                    Err(_) => spec_ok = false,
                }
            }
            "max-sessions" | "max-streams" => {
                let n: usize = first().parse().unwrap_or(0);
                if n == 0 {
                    walk.problem_at(v_at, format!("{k_name} must be at least 1"));
                    spec_ok = false;
                } else if k_name == "max-sessions" {
                    max_sessions = Some(n);
                } else {
                    max_streams = Some(n);
                }
            }
            _ => {}
        }
    }
    if !spec_ok {
        return None;
    }
    let Some(name) = name else {
        walk.problem_at(at, "[[relay.tokens]]: `name` is required");
        return None;
    };
    let Some(key) = key else {
        walk.problem_at(at, format!("token {name}: give `token` or `token-sha256`"));
        return None;
    };
    let rules = match (allow, deny) {
        (None, None) => None,
        (a, d) => Some(Rules {
            allow: a.unwrap_or_default(),
            deny: d.unwrap_or_default(),
        }),
    };
    Some(TokenSpec {
        name,
        key,
        allow_ports,
        rules,
        max_sessions,
        max_streams,
    })
}

/// 64 hex digits into 32 bytes.
pub fn sha256_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::sha256_hex;

    #[test]
    fn hex_digests() {
        let h = sha256_hex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
        assert_eq!(h.map(|h| (h[0], h[31])), Some((0x9f, 0x08)));
        assert_eq!(
            sha256_hex("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08")
                .map(|h| h[0]),
            Some(0x9f)
        );
        for bad in ["", "9f86", &"g".repeat(64), &"é".repeat(32)] {
            assert_eq!(sha256_hex(bad), None, "{bad}");
        }
    }
}
