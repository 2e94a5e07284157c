#!/usr/bin/env bash
# Interop checks for the config file (issue 11), with curl as the client:
#   - `burrow check` places every error (FILE:LINE:COLUMN) and exits 2;
#   - `burrow run` of a relay with a per-client token given as its SHA-256, and of a client plus
#     a proxy whose credentials come from a `file:` secret: curl through the client's -L and
#     through the proxy (407 without the credentials, 200 with them);
#   - the relay's admin /status.json names the session's token;
#   - SIGHUP after an edit: the -L removed refuses, the -L added serves, the proxy is untouched;
#   - SIGHUP on the relay after its token is removed: the client hears GO_AWAY with the reason;
#   - no log holds a token or the proxy password.
#
# run.sh sources this file after resume.sh (same counters, one summary line); it also runs
# alone: bash tests/interop/config.sh  (BURROW_BIN and KEEP_WORK as for run.sh)

if [[ -z ${INTEROP_LIB:-} ]]; then
    set -euo pipefail
    # shellcheck source=tests/interop/lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
    CONFIG_ALONE=1
    STARTED=$SECONDS
fi

[[ -n ${ORIGIN_PORT:-} ]] || start_origin

CF="$WORK/config"
mkdir -p "$CF"
CF_TOKEN="cf-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
CF_SHA=$(printf '%s' "$CF_TOKEN" | sha256sum | cut -d' ' -f1)
CF_PASS="pw-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$CF_TOKEN" >"$CF/token"
printf 'visitor:%s\n' "$CF_PASS" >"$CF/proxy.cred"

# cf_run NAME FILE: `burrow run FILE` in the background, output in $CF/NAME.log; sets CF_PID.
cf_run() {
    "$BURROW" run "$2" </dev/null >"$CF/$1.log" 2>&1 &
    CF_PID=$!
    PIDS+=("$CF_PID")
}

# cf_addr LOG REGEX PID: the first 127.x ip:port in the first match of REGEX (bounded).
cf_addr() {
    local m
    m=$(wait_match "$1" "$2" "$3") || return 1
    grep -Eo '127\.0\.0\.[0-9]+:[0-9]+' <<<"$m" | head -1
}

# ---------------------------------------------------------------------------------------------
# burrow check

cat >"$CF/bad.toml" <<'EOF'
[relay]
token = "t"
keepalive = "soon"
colour = "blue"
EOF
check_out=$("$BURROW" check "$CF/bad.toml" 2>&1) && check_rc=0 || check_rc=$?
expect "config: burrow check exits 2 on a bad file" "$check_rc" 2
if grep -q "$CF/bad.toml:3:13: keepalive: bad duration" <<<"$check_out" &&
    grep -q "$CF/bad.toml:4:1: unknown key \`colour\` in \[relay\]" <<<"$check_out"; then
    pass "config: burrow check places every error at FILE:LINE:COLUMN"
else
    fail "config: burrow check places every error at FILE:LINE:COLUMN" "$check_out"
fi

# ---------------------------------------------------------------------------------------------
# The relay: a per-client token known by its SHA-256 only.

cat >"$CF/relay.toml" <<EOF
[relay]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
lame-duck = "0s"

[[relay.tokens]]
name = "interop"
token-sha256 = "$CF_SHA"
EOF
cf_run relay "$CF/relay.toml"
CF_RELAY_PID=$CF_PID
CF_RELAY=$(cf_addr "$CF/relay.log" 'relay listening on 127\.0\.0\.1:[0-9]+' "$CF_RELAY_PID") ||
    die "config: the relay did not report its address" "$CF/relay.log"
CF_ADMIN=$(cf_addr "$CF/relay.log" 'relay admin .* on 127\.0\.0\.1:[0-9]+' "$CF_RELAY_PID") ||
    die "config: the relay did not report its admin address" "$CF/relay.log"

# The edge: a client with two -L forwards, and a proxy with credentials from a file.
edge_file() { # edge_file FORWARDS: the edge's config with these forward specs
    cat <<EOF
[proxy]
listen = "127.0.0.1:0"
auth = "file:proxy.cred"

[[client]]
name = "edge"
relays = ["ws://$CF_RELAY/burrow"]
token = "file:token"
forward = [$1]
EOF
}
edge_file "\"127.0.0.1:0:127.0.0.1:$ORIGIN_PORT\", \"127.0.0.1:0:localhost:$ORIGIN_PORT\"" \
    >"$CF/edge.toml"
cf_run edge "$CF/edge.toml"
CF_EDGE_PID=$CF_PID
CF_PROXY=$(cf_addr "$CF/edge.log" 'proxy listening on 127\.0\.0\.1:[0-9]+' "$CF_EDGE_PID") ||
    die "config: the edge's proxy did not report its address" "$CF/edge.log"
CF_L1=$(cf_addr "$CF/edge.log" "listening L 127\.0\.0\.1:[0-9]+ \(127\.0\.0\.1:$ORIGIN_PORT\)" \
    "$CF_EDGE_PID") || die "config: the first -L did not listen" "$CF/edge.log"
CF_L2=$(cf_addr "$CF/edge.log" "listening L 127\.0\.0\.1:[0-9]+ \(localhost:$ORIGIN_PORT\)" \
    "$CF_EDGE_PID") || die "config: the second -L did not listen" "$CF/edge.log"
wait_match "$CF/edge.log" '\[edge\] connected' "$CF_EDGE_PID" >/dev/null ||
    die "config: the client did not connect with its per-client token" "$CF/edge.log" \
        "$CF/relay.log"

expect "config: curl through a -L of burrow run (token from a file:, relay knows its sha256)" \
    "$(body "http://$CF_L1/hello.txt")" "$HELLO" "$CF/edge.log" "$CF/relay.log"
expect "config: the [proxy] of the same process answers 407 without credentials" \
    "$(status -x "http://$CF_PROXY" "$ORIGIN/hello.txt")" 407 "$CF/edge.log"
expect "config: ... and serves with the credentials from its file: secret" \
    "$(body -x "http://$CF_PROXY" -U "visitor:$CF_PASS" "$ORIGIN/hello.txt")" "$HELLO" \
    "$CF/edge.log"
status_json=$(body "http://$CF_ADMIN/status.json")
if grep -q '"token": *"interop"' <<<"$status_json"; then
    pass "config: the relay's /status.json names the session's token"
else
    fail "config: the relay's /status.json names the session's token" "$status_json"
fi

# ---------------------------------------------------------------------------------------------
# SIGHUP after an edit: the first -L removed, a third added, the second and the proxy untouched.

edge_file "\"127.0.0.1:0:localhost:$ORIGIN_PORT\", \"127.0.0.2:0:127.0.0.1:$ORIGIN_PORT\"" \
    >"$CF/edge.toml.new"
# Rename into place, as editors do; the file watch may see it before the signal: one reload.
mv "$CF/edge.toml.new" "$CF/edge.toml"
kill -HUP "$CF_EDGE_PID"
if wait_match "$CF/edge.log" 'reload \((SIGHUP|the file changed)\): 0 added, 0 removed, 1 changed, 1 unchanged' \
    "$CF_EDGE_PID" >/dev/null; then
    pass "config: the edit is applied (one client changed, the proxy unchanged)"
else
    fail "config: the edit is applied (one client changed, the proxy unchanged)" "no summary" \
        "$CF/edge.log"
fi
CF_L3=$(cf_addr "$CF/edge.log" "listening L 127\.0\.0\.2:[0-9]+ \(127\.0\.0\.1:$ORIGIN_PORT\)" \
    "$CF_EDGE_PID") || CF_L3=127.0.0.2:1
expect "config: the -L added by the reload serves" "$(body "http://$CF_L3/hello.txt")" "$HELLO" \
    "$CF/edge.log"
expect "config: the -L left alone still serves on its port" \
    "$(body "http://$CF_L2/hello.txt")" "$HELLO" "$CF/edge.log"
l1_rc=0
curl -q -sS --max-time 10 -o /dev/null "http://$CF_L1/hello.txt" 2>/dev/null || l1_rc=$?
expect "config: the -L removed by the reload refuses connections (curl exit 7)" "$l1_rc" 7 \
    "$CF/edge.log"
expect "config: the proxy left alone still serves" \
    "$(body -x "http://$CF_PROXY" -U "visitor:$CF_PASS" "$ORIGIN/hello.txt")" "$HELLO" \
    "$CF/edge.log"

# ---------------------------------------------------------------------------------------------
# The relay's reload removes the token: its session is told why.

cat >"$CF/relay.toml" <<EOF
[relay]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
lame-duck = "0s"

[[relay.tokens]]
name = "other"
token-sha256 = "$(printf other | sha256sum | cut -d' ' -f1)"
EOF
kill -HUP "$CF_RELAY_PID"
if wait_match "$CF/edge.log" '\[edge\] lost: closed by peer: token interop removed by reload' \
    "$CF_EDGE_PID" >/dev/null; then
    pass "config: a token removed by the relay's reload: its client hears GO_AWAY with the reason"
else
    fail "config: a token removed by the relay's reload: its client hears GO_AWAY with the reason" \
        "no going-away line" "$CF/edge.log" "$CF/relay.log"
fi

leaks=$(grep -lF -e "$CF_TOKEN" -e "$CF_PASS" "$CF"/*.log 2>/dev/null || true)
if [[ -z $leaks ]]; then
    pass "config: no log holds the token or the proxy password"
else
    fail "config: no log holds the token or the proxy password" "found in: $leaks"
fi

kill -TERM "$CF_EDGE_PID" "$CF_RELAY_PID" 2>/dev/null || true

if [[ -n ${CONFIG_ALONE:-} ]]; then
    summary
fi
