//! The shell completions in contrib/completions/: every flag that `burrow SUB --help` lists is
//! completed for that subcommand in the bash, zsh and fish files, and so are the contract's
//! `run`, `check` and `--config` (docs/CONFIG.md) before the binary has them, and no other
//! flag (a typo, or a flag since removed); each file is valid for its shell, and bash and
//! fish, when run, offer those flags and file names.
//!
//! A shell that is not installed is skipped with a note on stderr (.ci/run installs zsh and
//! fish). Each file marks a subcommand's section with a `# burrow SUB` line and ends the last
//! one with `# end of subcommands`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_burrow");

/// `--help` of a debug binary or a shell's syntax check takes well under a second; this much
/// is for a loaded 2-core CI machine, and turns a hang into a failure.
const DEADLINE: Duration = Duration::from_secs(30);

/// How often a running child is polled for its exit.
const POLL: Duration = Duration::from_millis(10);

/// Subcommands the contract promises (docs/CONFIG.md) whether or not this binary has them.
const CONTRACT_SUBCOMMANDS: &[&str] = &["run", "check"];

/// Flags the contract promises per subcommand, whether or not this binary has them.
const CONTRACT_FLAGS: &[(&str, &str)] = &[
    ("proxy", "--config"),
    ("server", "--config"),
    ("client", "--config"),
];

/// One completion file and how it writes a flag.
struct Shell {
    /// the file under contrib/completions/
    file: &'static str,
    /// how the file writes `--long` or `-S`
    spell: fn(&str) -> String,
    /// the flags a section of the file completes, as `--long` and `-S`
    written: fn(&str) -> BTreeSet<String>,
}

const SHELLS: &[Shell] = &[
    Shell {
        file: "burrow.bash",
        spell: |flag| flag.to_string(),
        written: dash_words,
    },
    Shell {
        file: "_burrow",
        spell: |flag| flag.to_string(),
        written: zsh_flags,
    },
    Shell {
        file: "burrow.fish",
        spell: |flag| match flag.strip_prefix("--") {
            Some(long) => format!("-l {long}"),
            None => format!("-s {}", &flag[1..]),
        },
        written: fish_flags,
    },
];

fn completions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/completions")
}

/// Runs `cmd` to its end with its output collected; fails the test past [`DEADLINE`].
fn run(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    // Read both pipes on threads so a child that fills one cannot block on it.
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).expect("read child output");
            buf
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            // Best effort: the child may have exited just now; the panic says what hung.
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {DEADLINE:?}");
        }
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs the binary with `args` and returns its stdout; it must succeed.
fn burrow(args: &[&str]) -> String {
    let out = run(Command::new(BIN).args(args));
    assert!(out.status.success(), "burrow {args:?}: {:?}", out.status);
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The subcommands `burrow --help` lists under `Commands:`.
fn binary_subcommands() -> Vec<String> {
    let help = burrow(&["--help"]);
    let mut subs = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            in_commands = line == "Commands:";
            continue;
        }
        // An entry is indented by two spaces; its wrapped description by many more.
        if in_commands && line.starts_with("  ") && !line.starts_with("   ") {
            subs.extend(line.split_whitespace().next().map(str::to_string));
        }
    }
    subs
}

/// The flags (`--long`, `-S`) that `burrow SUB --help` lists under `Options:`, read from the
/// start of each entry only (descriptions mention other flags).
fn binary_flags(sub: &str) -> Vec<String> {
    let help = burrow(&[sub, "--help"]);
    let mut flags = Vec::new();
    let mut in_options = false;
    for line in help.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            in_options = line == "Options:";
            continue;
        }
        if in_options && line.starts_with("  -") {
            flags.extend(
                line.split_whitespace()
                    .take_while(|w| w.starts_with('-'))
                    .map(|w| w.trim_end_matches(',').to_string()),
            );
        }
    }
    flags
}

/// Every subcommand (the binary's and the contract's) with the flags it must complete.
fn expected() -> Vec<(String, BTreeSet<String>)> {
    let have = binary_subcommands();
    for sub in ["proxy", "connect", "server", "client", "demo"] {
        assert!(
            have.iter().any(|s| s == sub),
            "`burrow --help` does not list {sub}: the parser misread it:\n{have:?}"
        );
    }
    let mut subs: BTreeSet<String> = have.iter().cloned().collect();
    subs.extend(CONTRACT_SUBCOMMANDS.iter().map(|s| s.to_string()));
    subs.into_iter()
        .map(|sub| {
            let mut flags: BTreeSet<String> = if have.contains(&sub) {
                binary_flags(&sub).into_iter().collect()
            } else {
                // Not in this binary yet: the contract's subcommand with argh's --help.
                ["--help".to_string()].into()
            };
            assert!(
                flags.contains("--help"),
                "`burrow {sub} --help` lists no --help: the parser misread it: {flags:?}"
            );
            flags.extend(
                CONTRACT_FLAGS
                    .iter()
                    .filter(|(s, _)| *s == sub)
                    .map(|(_, f)| f.to_string()),
            );
            (sub, flags)
        })
        .collect()
}

/// The lines of `text` from `# burrow SUB` to the next section mark, or None.
fn section<'a>(text: &'a str, sub: &str) -> Option<Vec<&'a str>> {
    let mark = format!("# burrow {sub}");
    let mut lines = text.lines().skip_while(|l| l.trim() != mark);
    lines.next()?;
    Some(
        lines
            .take_while(|l| {
                let l = l.trim();
                !l.starts_with("# burrow ") && l != "# end of subcommands"
            })
            .collect(),
    )
}

/// Whether `needle` occurs in `hay` as a whole word: no flag character right before or after
/// it (so `--max-streams` is not found in `--max-streams-total`).
fn has_word(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        !before.is_some_and(flagish) && !after.is_some_and(flagish)
    })
}

fn flagish(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The flags in `text` written as they are typed: `--long` and `-S` (burrow's short flags are
/// capitals; lowercase ones are the shell's own, like zsh's `_files -g`).
fn dash_words(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, c) in text.char_indices() {
        if c != '-' || text[..i].chars().next_back().is_some_and(flagish) {
            continue;
        }
        let word: String = text[i..].chars().take_while(|&c| flagish(c)).collect();
        let b = word.as_bytes();
        let long = b.len() > 2 && b[1] == b'-' && b[2].is_ascii_lowercase();
        let short = b.len() == 2 && b[1].is_ascii_uppercase();
        if long || short {
            found.insert(word);
        }
    }
    found
}

/// zsh's flags: those of `dash_words` outside the `[description]` of each spec, which
/// mentions other subcommands' flags.
fn zsh_flags(text: &str) -> BTreeSet<String> {
    let mut bare = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    dash_words(&bare)
}

/// fish's flags: `-l long` and `-s S` on its `complete` lines (`set -l` is a local variable).
fn fish_flags(text: &str) -> BTreeSet<String> {
    let words: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("complete "))
        .flat_map(str::split_whitespace)
        .collect();
    words
        .windows(2)
        .filter_map(|w| match w[0] {
            "-l" => Some(format!("--{}", w[1])),
            "-s" => Some(format!("-{}", w[1])),
            _ => None,
        })
        .collect()
}

#[test]
fn every_flag_of_every_subcommand_is_completed_in_each_shell() {
    let expected = expected();
    let server = expected.iter().find(|(s, _)| s == "server").unwrap();
    assert!(
        server.1.len() > 20,
        "the relay has more than 20 flags: the parser misread `burrow server --help`: {:?}",
        server.1
    );
    let (mut missing, mut unknown) = (Vec::new(), Vec::new());
    for shell in SHELLS {
        let path = completions_dir().join(shell.file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        for (sub, flags) in &expected {
            let Some(lines) = section(&text, sub) else {
                missing.push(format!("{}: no `# burrow {sub}` section", shell.file));
                continue;
            };
            let body = lines.join("\n");
            // A flag the subcommand does not have (a typo, or one since removed).
            for flag in (shell.written)(&body).difference(flags) {
                unknown.push(format!("{}: burrow {sub} {flag}", shell.file));
            }
            for flag in flags {
                let spelled = (shell.spell)(flag);
                if !has_word(&body, &spelled) {
                    missing.push(format!(
                        "{}: burrow {sub} {flag} (as `{spelled}`)",
                        shell.file
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "flags without a completion:\n{}\ncompletions of flags the subcommand does not have:\n{}",
        missing.join("\n"),
        unknown.join("\n")
    );
}

#[test]
fn the_checks_see_a_missing_flag() {
    // The matching above must be able to fail: a whole flag, in its own section only.
    let text = "# burrow server\n  --max-streams-total --tls-cert\n# burrow client\n  --grace\n";
    let server = section(text, "server").unwrap().join("\n");
    assert!(has_word(&server, "--tls-cert"));
    assert!(!has_word(&server, "--max-streams"));
    assert!(!has_word(&server, "--grace"));
    assert!(section(text, "proxy").is_none());
    assert_eq!(
        dash_words("opts=\"-L --local --max-streams\" # -x ---a --9 -- -"),
        ["--local", "--max-streams", "-L"].map(String::from).into()
    );
    assert_eq!(
        zsh_flags("'--listen[not --grace nor -R]:address:' '*'{-R,--remote}'[x]:spec:'"),
        ["--listen", "--remote", "-R"].map(String::from).into()
    );
    assert_eq!(
        fish_flags("complete -c burrow -n $c -s L -l local -x -d 'about -R'"),
        ["--local", "-L"].map(String::from).into()
    );
    assert!(has_word("complete -l max-streams -x", "-l max-streams"));
    assert!(!has_word("complete -l max-streams-total", "-l max-streams"));
}

/// Whether `shell` is installed; prints a note when it is not.
fn installed(shell: &str) -> bool {
    let found = Command::new(shell)
        .arg("-c")
        .arg("exit 0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!(
            "note: {shell} is not installed: its checks are skipped (apt-get install {shell})"
        );
    }
    found
}

fn syntax_check(shell: &str, args: &[&str], file: &str) {
    if !installed(shell) {
        return;
    }
    let path = completions_dir().join(file);
    let out = run(Command::new(shell).args(args).arg(&path));
    assert!(
        out.status.success(),
        "{shell} {args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bash_file_parses() {
    syntax_check("bash", &["-n"], "burrow.bash");
}

#[test]
fn zsh_file_parses() {
    syntax_check("zsh", &["-n"], "_burrow");
}

#[test]
fn fish_file_parses() {
    syntax_check("fish", &["--no-execute"], "burrow.fish");
}

/// A fresh directory holding `relay.pem` and `relay.toml`, for file-name completion.
fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("burrow-completions-{name}-{}", std::process::id()));
    // A leftover from an earlier run with the same pid is replaced.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("make scratch dir");
    for f in ["relay.pem", "relay.toml"] {
        std::fs::write(dir.join(f), "").expect("write scratch file");
    }
    dir
}

/// What bash's completion offers for `words` (the last one is being completed), run in `dir`.
fn bash_complete(dir: &Path, words: &[&str]) -> Vec<String> {
    let script = r#"source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
        _burrow; printf '%s\n' "${COMPREPLY[@]}""#;
    let out = run(Command::new("bash")
        .current_dir(dir)
        .args(["-c", script, "bash"])
        .arg(completions_dir().join("burrow.bash"))
        .args(words));
    assert!(out.status.success(), "bash completion of {words:?} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// What fish's completion offers for `line`, run in `dir`: the candidates without their
/// descriptions.
fn fish_complete(dir: &Path, line: &str) -> Vec<String> {
    let out = run(Command::new("fish")
        .current_dir(dir)
        .args([
            "--no-config",
            "-c",
            r#"source $argv[1]; complete -C $argv[2]"#,
        ])
        .arg(completions_dir().join("burrow.fish"))
        .arg(line));
    assert!(out.status.success(), "fish completion of {line:?} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn bash_offers_every_flag_and_file_names() {
    if !installed("bash") {
        return;
    }
    let dir = scratch_dir("bash");
    for (sub, flags) in expected() {
        let offered = bash_complete(&dir, &["burrow", &sub, "-"]);
        for flag in &flags {
            assert!(
                offered.contains(flag),
                "bash offers no {flag} for `burrow {sub} -`: {offered:?}"
            );
        }
    }
    assert_eq!(
        bash_complete(&dir, &["burrow", "server", "--tls-cert", "relay.p"]),
        ["relay.pem"]
    );
    assert_eq!(
        bash_complete(&dir, &["burrow", "run", "rel"]),
        ["relay.toml"]
    );
    let subs = bash_complete(&dir, &["burrow", ""]);
    for sub in [
        "proxy", "connect", "server", "client", "demo", "run", "check",
    ] {
        assert!(
            subs.iter().any(|s| s == sub),
            "bash offers no {sub}: {subs:?}"
        );
    }
    std::fs::remove_dir_all(&dir).expect("remove scratch dir");
}

#[test]
fn fish_offers_every_flag_and_file_names() {
    if !installed("fish") {
        return;
    }
    let dir = scratch_dir("fish");
    for (sub, flags) in expected() {
        let offered = fish_complete(&dir, &format!("burrow {sub} -"));
        for flag in &flags {
            assert!(
                offered.contains(flag),
                "fish offers no {flag} for `burrow {sub} -`: {offered:?}"
            );
        }
    }
    assert_eq!(
        fish_complete(&dir, "burrow server --tls-cert relay.p"),
        ["relay.pem"]
    );
    let subs = fish_complete(&dir, "burrow ");
    for sub in [
        "proxy", "connect", "server", "client", "demo", "run", "check",
    ] {
        assert!(
            subs.iter().any(|s| s == sub),
            "fish offers no {sub}: {subs:?}"
        );
    }
    std::fs::remove_dir_all(&dir).expect("remove scratch dir");
}
