#!/usr/bin/env bash
# Installs or uninstalls burrow under a prefix: `just install` and `just uninstall` run this.
#
#   bash contrib/install.sh install|uninstall [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=/etc] [BIN=]
#
# PREFIX     where it lives: PREFIX/bin/burrow, PREFIX/lib/systemd/system/, PREFIX/share/...
#            (the units' ExecStart points at PREFIX/bin/burrow)
# DESTDIR    staged install for packaging: files go to DESTDIR/PREFIX/... but name PREFIX;
#            empty (the default) installs in place
# SYSCONFDIR where the config lives (the units run SYSCONFDIR/burrow/NAME.toml); default /etc
# BIN        install this binary instead of building one with `cargo build --release`
#
# Each may also come from the environment; the arguments win. A first config
# (examples/relay-vps.toml as relay.toml) goes to DESTDIR/SYSCONFDIR/burrow/ only when that
# directory has no .toml file yet; uninstall leaves that directory alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    echo "usage: $0 install|uninstall [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=/etc] [BIN=path]" >&2
    exit 2
}

(($# >= 1)) || usage
action=$1
shift
[[ $action == install || $action == uninstall ]] || usage

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
BIN=${BIN:-}
for arg in "$@"; do
    case $arg in
        PREFIX=* | DESTDIR=* | SYSCONFDIR=* | BIN=*) printf -v "${arg%%=*}" %s "${arg#*=}" ;;
        *)
            echo "$0: unknown argument ${arg@Q}" >&2
            usage
            ;;
    esac
done

# `PREFIX=/usr/` means /usr.
while [[ $PREFIX == */ && $PREFIX != / ]]; do PREFIX=${PREFIX%/}; done
while [[ $SYSCONFDIR == */ && $SYSCONFDIR != / ]]; do SYSCONFDIR=${SYSCONFDIR%/}; done

# PREFIX and SYSCONFDIR are written into the units by sed: absolute, no trailing slash, and
# only characters that mean nothing to sed or systemd.
for var in PREFIX SYSCONFDIR; do
    if [[ ! ${!var} =~ ^(/[A-Za-z0-9._+-]+)+$ ]]; then
        echo "$0: $var=${!var@Q}: expected an absolute path like /usr/local, without spaces or" \
            "special characters" >&2
        exit 2
    fi
done
if [[ -n $DESTDIR && $DESTDIR != /* ]]; then
    echo "$0: DESTDIR=${DESTDIR@Q}: expected an absolute path (or nothing)" >&2
    exit 2
fi

root=$DESTDIR$PREFIX
etc=$DESTDIR$SYSCONFDIR/burrow
units=(burrow-relay.service burrow-client@.service)
# source under contrib/ or examples/ -> destination under $root
declare -A files=(
    [contrib/completions/burrow.bash]=share/bash-completion/completions/burrow
    [contrib/completions/_burrow]=share/zsh/site-functions/_burrow
    [contrib/completions/burrow.fish]=share/fish/vendor_completions.d/burrow.fish
    [README.md]=share/doc/burrow/README.md
    [docs/CONFIG.md]=share/doc/burrow/CONFIG.md
)
for example in examples/*.toml; do
    files[$example]=share/doc/burrow/examples/${example##*/}
done

if [[ $action == uninstall ]]; then
    rm -f "$root/bin/burrow"
    for unit in "${units[@]}"; do
        rm -f "$root/lib/systemd/system/$unit"
    done
    for src in "${!files[@]}"; do
        rm -f "$root/${files[$src]}"
    done
    rmdir "$root/share/doc/burrow/examples" "$root/share/doc/burrow" 2>/dev/null || true
    echo "removed burrow from $root (stop and disable its units first: systemctl disable --now" \
        "burrow-relay burrow-client@NAME); $etc is yours and stays"
    exit 0
fi

if [[ -z $BIN ]]; then
    cargo build --release --bin burrow
    BIN=${CARGO_TARGET_DIR:-target}/release/burrow
fi
[[ -x $BIN ]] || {
    echo "$0: no executable at BIN=${BIN@Q}" >&2
    exit 1
}

install -Dm755 "$BIN" "$root/bin/burrow"

# The units in contrib/ name /usr/local/bin/burrow and /etc/burrow: point them at this
# install. (ConfigurationDirectory=burrow is always /etc/burrow: systemd knows no other.)
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for unit in "${units[@]}"; do
    sed -e "s|/usr/local/|$PREFIX/|g" -e "s|/etc/burrow|$SYSCONFDIR/burrow|g" \
        "contrib/systemd/$unit" >"$tmp"
    install -Dm644 "$tmp" "$root/lib/systemd/system/$unit"
done

for src in "${!files[@]}"; do
    install -Dm644 "$src" "$root/${files[$src]}"
done

# A first config to edit, never over one that is there. 0644: the units' dynamic user reads it.
if compgen -G "$etc/*.toml" >/dev/null; then
    echo "kept the configs in $etc"
else
    install -d -m755 "$etc"
    install -m644 examples/relay-vps.toml "$etc/relay.toml"
    echo "wrote $etc/relay.toml (from examples/relay-vps.toml): edit it before starting the relay"
fi

echo "installed burrow in $root: bin/burrow, lib/systemd/system/burrow-*.service, completions and"
echo "examples under share/; then: systemctl daemon-reload (see README: Deploy on a VPS)"
