# burrow's everyday commands. `just ci` runs exactly what CI runs: .ci/run.

set shell := ["bash", "-euo", "pipefail", "-c"]

# list the recipes
default:
    @just --list

# format the code
fmt:
    cargo fmt

# clippy on every target; warnings are errors
lint:
    cargo clippy --all-targets -- -D warnings

# unit, property and integration tests
test:
    cargo test

# interop suite: curl, netcat, ssh and tinyproxy against the real binary
e2e:
    bash tests/interop/run.sh

# the cloud-browser scenario: headless Chromium through a relay's -R proxy, client behind tinyproxy, in network namespaces (root)
e2e-browser:
    bash tests/e2e-browser/run.sh

# load benchmark against a release build, beside direct, socat and the peers (bore, rathole, tinyproxy, squid); ARGS: --quick, --burrow PATH, --scale (only what one relay holds: docs/SCALING.md), ...
[positional-arguments]
bench *ARGS:
    cargo build --release --bins
    # --scale measures burrow alone: no peers to install.
    [[ " $* " == *" --scale "* ]] || just bench-peers
    # 10,000 idle streams are a descriptor each in several processes: raise the soft limit
    # as far as the hard limit allows (the bench says when it holds fewer).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; ./target/release/burrow-bench "$@"

# install the bench's peers when missing: bore and rathole under target/peers, tinyproxy and squid from Debian (as root); skips with a note
bench-peers:
    #!/usr/bin/env bash
    set -uo pipefail
    root=target/peers
    missing=()
    for c in bore-cli:bore rathole:rathole; do
        [ -x "$root/bin/${c#*:}" ] || missing+=("${c%%:*}")
    done
    for crate in "${missing[@]}"; do
        if cargo install --locked --root "$root" "$crate"; then continue; fi
        # rathole 0.5.0's lockfile pins a `time` that newer compilers reject: retry with the
        # newest compatible dependencies before giving up.
        if cargo install --root "$root" "$crate"; then
            echo "bench-peers: note: $crate installed without --locked" >&2
        else
            echo "bench-peers: note: cannot install $crate (offline?): its row is skipped" >&2
        fi
    done
    for pkg in tinyproxy squid; do
        if command -v "$pkg" >/dev/null || [ -x "/usr/sbin/$pkg" ]; then continue; fi
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
            && apt-get install -y "$pkg" >/dev/null; then
            # If apt started the packaged service, it listens on its own port: the bench
            # runs instances of its own on ephemeral ports.
            continue
        fi
        echo "bench-peers: note: $pkg missing (apt-get install $pkg as root): its row is skipped" >&2
    done

# everything on loopback in one process, with lines to try
demo:
    cargo run --release -- demo

# fuzz a target (head: the request-head parser, frame: the mux frame decoder, chunked: the
# chunked-body decoder, socks: the SOCKS5 handshake parsers) for SECS seconds
fuzz TARGET="head" SECS="60":
    #!/usr/bin/env bash
    set -euo pipefail
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "just fuzz needs cargo-fuzz: cargo install cargo-fuzz --locked" >&2
        exit 1
    fi
    # cargo-fuzz passes nightly-only compiler flags; RUSTC_BOOTSTRAP lets the project's stable
    # compiler accept them (this stack's old rustix, via async-h1, does not build on nightly).
    RUSTC_BOOTSTRAP=1 cargo fuzz run {{TARGET}} -- -max_total_time={{SECS}}

# install the binary (release build), systemd units, completions, examples and a first config: just install PREFIX=/usr/local DESTDIR= [SYSCONFDIR=/etc] [BIN=path]
[positional-arguments]
install *VARS:
    @bash contrib/install.sh install "$@"

# remove what `just install` put under PREFIX (same PREFIX and DESTDIR); the config dir stays
[positional-arguments]
uninstall *VARS:
    @bash contrib/install.sh uninstall "$@"

# what CI runs: fmt check, clippy, tests, interop and browser suites
ci:
    bash .ci/run

# run a release proxy on ADDR; extra flags pass through (just proxy 127.0.0.1:3128 --auth u:p)
[positional-arguments]
proxy ADDR="127.0.0.1:3128" *ARGS:
    cargo build --release --bin burrow
    ./target/release/burrow proxy --listen "$1" "${@:2}"

# run a release relay on ADDR (token: BURROW_TOKEN or --token, else printed): just relay 0.0.0.0:8080
[positional-arguments]
relay ADDR="0.0.0.0:8080" *ARGS:
    cargo build --release --bin burrow
    ./target/release/burrow server --listen "$1" "${@:2}"

# expose a local port on the relay, which picks the public port: just expose 3000 ws://relay:8080
[positional-arguments]
expose LOCAL_PORT RELAY_URL *ARGS:
    cargo build --release --bin burrow
    ./target/release/burrow client "$2" -R "0:127.0.0.1:$1" "${@:3}"

# forward through the relay with an -L spec: just forward 5432:db.internal:5432 ws://relay:8080
[positional-arguments]
forward SPEC RELAY_URL *ARGS:
    cargo build --release --bin burrow
    ./target/release/burrow client "$2" -L "$1" "${@:3}"
