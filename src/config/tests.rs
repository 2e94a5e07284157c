//! The file's contract: keys are the flags, errors are placed, secrets resolve, flags override.

use super::build;
use super::schema::{self, Key, Kind};
use super::walk::Section;
use super::*;
use crate::cli::{ClientArgs, ProxyArgs, ServerArgs};
use argh::FromArgs;
use std::collections::BTreeSet;
use std::time::Duration;

/// The `--flags` argh lists in `burrow SUB --help`.
fn help_flags<T: FromArgs>(sub: &str) -> BTreeSet<String> {
    let out = match T::from_args(&["burrow", sub], &["--help"]) {
        Err(e) => e.output,
        Ok(_) => panic!("--help parsed"),
    };
    let options = out.split("Options:").nth(1).expect("an Options section");
    options
        .split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .filter(|w| {
            w.starts_with("--") && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .map(String::from)
        .filter(|f| f != "--help" && f != "--config")
        .collect()
}

fn schema_flags(keys: &[Key]) -> BTreeSet<String> {
    keys.iter()
        .filter(|k| !k.flag.is_empty())
        .map(|k| match k.flag {
            "-L" => "--local".to_string(),
            "-R" => "--remote".to_string(),
            f => f.to_string(),
        })
        .collect()
}

#[test]
fn every_flag_is_a_key_and_every_key_a_flag() {
    assert_eq!(
        schema_flags(schema::PROXY),
        help_flags::<ProxyArgs>("proxy")
    );
    assert_eq!(
        schema_flags(schema::RELAY),
        help_flags::<ServerArgs>("server")
    );
    assert_eq!(
        schema_flags(schema::CLIENT),
        help_flags::<ClientArgs>("client")
    );
    // ... spelled the same: the key is the long flag without its dashes.
    for k in schema::PROXY
        .iter()
        .chain(schema::RELAY)
        .chain(schema::CLIENT)
    {
        if k.flag.starts_with("--") {
            assert_eq!(k.flag, format!("--{}", k.name));
        }
    }
    // Switches in the schema are switches on the command line (they take no value).
    for k in schema::RELAY.iter().filter(|k| k.kind == Kind::Switch) {
        let args = ServerArgs::from_args(&["burrow", "server"], &[k.flag]);
        assert!(args.is_ok(), "{} is not a switch", k.flag);
    }
}

fn env(k: &str) -> Option<String> {
    match k {
        "T_TOKEN" => Some("from-env".into()),
        "T_EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn load_text(text: &str) -> Result<FileConfig, ConfigErrors> {
    from_text(Path::new("/nonexistent/dir/b.toml"), text, &env)
}

fn errors(text: &str) -> Vec<(usize, usize, String)> {
    match load_text(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.list,
    }
}

/// Asserts the errors' positions, and that each message contains its fragment.
fn assert_errors(text: &str, want: &[(usize, usize, &str)]) {
    let got = errors(text);
    let shown = format!("{got:#?}");
    assert_eq!(got.len(), want.len(), "{shown}");
    for ((l, c, m), (wl, wc, wm)) in got.iter().zip(want) {
        assert_eq!((l, c), (wl, wc), "{shown}");
        assert!(m.contains(wm), "{m:?} lacks {wm:?}");
    }
}

#[test]
fn every_error_at_once_with_its_line_and_column() {
    let text = r#"
[relay]
listen = "127.0.0.1:0"
token = "t"
keepalive = "5x"
colour = "blue"
max-streams = "many"
allow = ["10.0.0.0/8", "10.0.0.0/33"]
no-resume = "yes"

[[client]]
relays = ["ws://127.0.0.1:1"]
forward = ["nonsense"]
keepalive = true

[proxy]
listen = "0.0.0.0:3128"

[extra]
"#;
    assert_errors(
        text,
        &[
            (5, 13, "keepalive: bad duration"),
            (6, 1, "unknown key `colour` in [relay]"),
            (7, 15, "max-streams: expected a whole number"),
            (8, 24, "allow: bad rule \"10.0.0.0/33\""),
            (9, 13, "no-resume: expected true or false"),
            (13, 12, "forward: bad -L \"nonsense\""),
            (14, 13, "keepalive: expected a duration"),
            (16, 2, "refusing to run an open proxy"),
            (19, 2, "unknown section `extra`"),
        ],
    );
}

#[test]
fn syntax_errors_are_placed_too() {
    let got = errors("[relay]\nlisten = \"127.0.0.1:0\nkeepalive = 5\n");
    assert!(!got.is_empty());
    assert_eq!(got[0].0, 2, "{got:?}");
    assert!(errors("").iter().any(|e| e.2.contains("nothing to run")));
}

#[test]
fn a_role_error_names_the_key_not_the_flag() {
    // --keepalive 0 passes the value check and is refused by the role's own check.
    assert_errors(
        "[relay]\ntoken = \"t\"\nkeepalive = 0\n",
        &[(3, 13, "`keepalive` must be more than 0")],
    );
    assert_errors(
        "[relay]\nlisten = \"127.0.0.1:0\"\n",
        &[(1, 2, "needs `token`, [[relay.tokens]] or `no-auth = true`")],
    );
    assert_errors(
        "[[client]]\nforward = [\"1:a:1\"]\n",
        &[(1, 1, "needs `relays`")],
    );
    assert_errors(
        "[[client]]\nrelays = [\"http://x\"]\nforward = [\"1:a:1\"]\n",
        &[(2, 11, "")],
    );
    // A pool shares explicit ports: the refusal is placed at `pool`.
    assert_errors(
        "[[client]]\nrelays = [\"ws://a\"]\nexpose = [\"0:a:1\"]\npool = \"web\"\n",
        &[(4, 8, "a pool shares an explicit port")],
    );
}

#[test]
fn a_pool_and_several_relays_from_the_file() {
    let text = "[[client]]\nrelays = [\"ws://a:1\", \"ws://b:2\"]\nexpose = [\"8080:a:1\"]\npool = \"web\"\n";
    let cfg = load_text(text).unwrap();
    let c = &cfg.clients[0].role.config;
    assert_eq!(c.pool.as_deref(), Some("web"));
    let relays: Vec<String> = c.relays().map(|u| u.to_string()).collect();
    assert_eq!(relays, ["ws://a:1/burrow", "ws://b:2/burrow"]);
}

#[test]
fn secrets_from_the_environment_and_from_files() {
    let dir = std::env::temp_dir().join(format!("burrow-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tok"), "from-file\n").unwrap();
    std::fs::write(dir.join("two"), "two-lines\n\n").unwrap();
    let path = dir.join("c.toml");
    let load = |text: &str| from_text(&path, text, &env);
    let token = |text: &str| -> String {
        let cfg = load(text).unwrap_or_else(|e| panic!("{e}"));
        cfg.relay
            .unwrap()
            .role
            .config
            .token
            .unwrap()
            .expose()
            .to_string()
    };
    assert_eq!(token("[relay]\ntoken = \"env:T_TOKEN\""), "from-env");
    // Relative to the file's directory; one trailing newline trimmed, no more.
    assert_eq!(token("[relay]\ntoken = \"file:tok\""), "from-file");
    assert_eq!(token("[relay]\ntoken = \"file:two\""), "two-lines\n");
    let abs = format!("[relay]\ntoken = \"file:{}\"", dir.join("tok").display());
    assert_eq!(token(&abs), "from-file");
    for (bad, msg) in [
        ("[relay]\ntoken = \"env:T_UNSET\"", "T_UNSET is not set"),
        ("[relay]\ntoken = \"env:T_EMPTY\"", "the secret is empty"),
        ("[relay]\ntoken = \"file:missing\"", "cannot read"),
    ] {
        let e = load(bad).expect_err(bad);
        assert_eq!((e.list[0].0, e.list[0].1), (2, 9), "{e}");
        assert!(e.list[0].2.contains(msg), "{e}");
        // Never the secret's value in an error.
        assert!(!e.to_string().contains("from-"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokens_with_names_hashes_and_limits() {
    let cfg = load_text(
        r#"
[relay]
allow-ports = "1024-65535"
[[relay.tokens]]
name = "ci-runner"
token-sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
allow-ports = "20000-20010"
max-sessions = 4
[[relay.tokens]]
name = "laptop"
token = "env:T_TOKEN"
deny = ["10.0.0.0/8"]
max-streams = 100
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let relay = cfg.relay.unwrap().role.config;
    assert_eq!(
        relay.token, None,
        "tokens stand instead of a generated token"
    );
    let [ci, laptop] = relay.tokens.as_slice() else {
        panic!("{:?}", relay.tokens)
    };
    assert_eq!(ci.name, "ci-runner");
    assert!(matches!(&ci.key, crate::relay::tokens::TokenKey::Sha256(h) if h[0] == 0x9f));
    assert_eq!(ci.allow_ports, Some((20000, 20010)));
    assert_eq!(ci.max_sessions, Some(4));
    assert_eq!(ci.rules, None);
    assert!(
        matches!(&laptop.key, crate::relay::tokens::TokenKey::Plain(s) if s.expose() == "from-env")
    );
    assert_eq!(laptop.rules.as_ref().map(|r| r.deny.len()), Some(1));
    assert_eq!(laptop.max_streams, Some(100));

    assert_errors(
        r#"
[relay]
[[relay.tokens]]
name = "a"
token = "x"
token-sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
[[relay.tokens]]
token = "y"
[[relay.tokens]]
name = "c"
token = "z"
max-sessions = 0
color = 1
[[relay.tokens]]
name = "d"
[[relay.tokens]]
name = "e"
token = "e"
[[relay.tokens]]
name = "e"
token = "e2"
"#,
        &[
            (6, 16, "not both"),
            (7, 1, "`name` is required"),
            (12, 16, "max-sessions must be at least 1"),
            (13, 1, "unknown key `color`"),
            (14, 1, "token d: give `token` or `token-sha256`"),
            (19, 1, "the name `e` is used twice"),
        ],
    );
    assert_errors(
        "[relay]\nno-auth = true\n[[relay.tokens]]\nname = \"a\"\ntoken = \"x\"\n",
        &[(2, 11, "`tokens` and `no-auth` contradict")],
    );
}

#[test]
fn port_clashes_between_roles() {
    assert_errors(
        r#"
[relay]
listen = "127.0.0.1:7000"
no-auth = true
admin = "127.0.0.1:7001"
[proxy]
listen = "127.0.0.1:7001"
[[client]]
relays = ["ws://127.0.0.1:7000"]
forward = ["127.0.0.1:7000:x:1", "127.0.0.1:0:y:1"]
expose = ["9000:a:2", "9000:a:1", "0:b:1", "0:c:1"]
status = "127.0.0.1:0"
"#,
        &[
            (5, 9, "port 7001 clashes: [relay] admin and [proxy] listen"),
            (
                10,
                12,
                "port 7000 clashes: client 1 forward and [relay] listen",
            ),
            (11, 23, "port 9000 is exposed twice"),
        ],
    );
}

fn relay_section(text: &str) -> Section {
    let mut walk = walk::Walk {
        base: Path::new("."),
        env: &env,
        problems: Vec::new(),
    };
    let doc = walk.document(text);
    assert!(walk.problems.is_empty(), "{:?}", walk.problems);
    doc.relay
        .or(doc.proxy)
        .or(doc.clients.into_iter().next())
        .unwrap()
}

#[test]
fn flags_override_the_file_key_by_key() {
    let s = relay_section(
        "[relay]\ntoken = \"t\"\nkeepalive = \"30s\"\ngrace = \"5s\"\nallow = [\"a.example\", \"b.example\"]\n",
    );
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (args, role) = build::relay(&s, &v(&["--keepalive", "7s", "--allow", "c.example"]), true)
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(args.keepalive, Duration::from_secs(7), "the flag wins");
    assert_eq!(
        args.grace,
        Duration::from_secs(5),
        "the file's where no flag"
    );
    assert_eq!(
        args.allow,
        v(&["c.example"]),
        "a list flag replaces the file's list"
    );
    assert_eq!(role.config.token.unwrap().expose(), "t");
    // A switch on the command line, the rest from the file.
    let (args, _) = build::relay(&s, &v(&["--no-resume"]), true).unwrap();
    assert!(args.no_resume);
    assert_eq!(args.allow.len(), 2);
    // Without a file: the flags alone, errors in the flags' words.
    let p = build::relay(&Section::default(), &v(&["--keepalive", "0"]), true).unwrap_err();
    assert!(p.message.contains("--keepalive must be"), "{p:?}");

    let c = relay_section("[[client]]\nrelays = [\"ws://127.0.0.1:1\"]\nexpose = [\"0:a:1\"]\n");
    let (_, role) = build::client(&c, &v(&["ws://127.0.0.1:2", "-R", "0:b:2"]), "c".into())
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(role.config.url.to_string(), "ws://127.0.0.1:2/burrow");
    assert_eq!(role.config.remotes.len(), 1);
    assert_eq!(role.config.remotes, vec!["0:b:2".parse().unwrap()]);
}

#[test]
fn the_fingerprint_follows_every_value() {
    let fp = |text: &str| load_text(text).unwrap().relay.unwrap().fingerprint;
    let a = fp("[relay]\ntoken = \"one\"\n");
    assert_eq!(a, fp("[relay]\n# a comment\ntoken = \"one\"\n"));
    assert_ne!(a, fp("[relay]\ntoken = \"two\"\n"));
    let t = |tok: &str| {
        fp(&format!(
            "[relay]\n[[relay.tokens]]\nname = \"n\"\ntoken = \"{tok}\"\n"
        ))
    };
    assert_ne!(t("x"), t("y"), "a token's value is part of it");
}

#[test]
fn a_client_with_several_relays() {
    let text = "[[client]]\nrelays = [\"ws://127.0.0.1:1\", \"ws://127.0.0.1:2/burrow\"]\nexpose = [\"0:a:1\"]\nready = \"any\"\n";
    let cfg = load_text(text).unwrap_or_else(|e| panic!("{e}"));
    let c = &cfg.clients[0].role.config;
    let want: Vec<crate::tunnel::ws::TunnelUrl> = ["ws://127.0.0.1:1", "ws://127.0.0.1:2/burrow"]
        .iter()
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(c.relays().cloned().collect::<Vec<_>>(), want);
    assert_eq!(c.ready, crate::client::ReadyWhen::Any);
    // The same relay twice (written two ways) is refused, and so is a `ready` of neither.
    let twice = "[[client]]\nrelays = [\"ws://127.0.0.1:1\", \"ws://127.0.0.1:1/burrow\"]\nexpose = [\"0:a:1\"]\n";
    let got = errors(twice);
    assert!(got.iter().any(|e| e.2.contains("given twice")), "{got:?}");
    let bad =
        "[[client]]\nrelays = [\"ws://127.0.0.1:1\"]\nexpose = [\"0:a:1\"]\nready = \"most\"\n";
    let got = errors(bad);
    assert!(
        got.iter().any(|e| e.2.contains("`all` or `any`")),
        "{got:?}"
    );
}
