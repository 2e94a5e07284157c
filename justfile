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

# load benchmark against a release build
bench:
    cargo build --release --bins
    ./target/release/burrow-bench

# everything on loopback in one process, with lines to try
demo:
    cargo run --release -- demo

# fuzz a target (head: the request-head parser, frame: the mux frame decoder) for SECS seconds
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
