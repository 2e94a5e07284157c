#!/usr/bin/env bash
# Interop checks for SOCKS5 on every proxy door (RFC 1928, RFC 1929): curl with
# `--proxy socks5h://` (names resolved by burrow) and `socks5://` (resolved by curl), with and
# without credentials, and OpenBSD netcat `nc -X 5`, against `burrow proxy`, a `-R …:proxy`
# relay port (egress: the client) and a `-L …:proxy` port (egress: the relay). The same ports
# keep answering HTTP proxy clients.
#
# run.sh sources this file (same counters, one summary line); it also runs alone:
#   bash tests/interop/socks.sh           (BURROW_BIN and KEEP_WORK as for run.sh)

if [[ -z ${INTEROP_LIB:-} ]]; then
    set -euo pipefail
    # shellcheck source=tests/interop/lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
    SOCKS_ALONE=1
fi

[[ -n ${ORIGIN_PORT:-} ]] || start_origin

if nc -h 2>&1 | grep -q -- '^[[:space:]]*-N'; then NC_EOF=(-N); else NC_EOF=(-q 5); fi

SOCKS_USER=socks-user
SOCKS_PASS="pw-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

# socks_checks WHAT ADDR LOG...: curl socks5h:// and socks5://, 5 MiB, nc -X 5, HTTP beside.
socks_checks() {
    local what=$1 addr=$2 nc_out
    shift 2
    expect "$what: curl --proxy socks5h:// gets the file" \
        "$(body --proxy "socks5h://$addr" "$ORIGIN/hello.txt")" "$HELLO" "$@"
    expect "$what: curl --proxy socks5:// (curl resolves localhost) gets the file" \
        "$(body --proxy "socks5://$addr" "http://localhost:$ORIGIN_PORT/hello.txt")" \
        "$HELLO" "$@"
    expect "$what: 5 MiB via socks5h:// keeps its sha256" \
        "$(sha_of --proxy "socks5h://$addr" "$ORIGIN/big.bin")" "$BIG_SHA" "$@"
    nc_out=$(printf 'GET /hello.txt HTTP/1.0\r\n\r\n' |
        timeout 10 nc "${NC_EOF[@]}" -X 5 -x "$addr" 127.0.0.1 "$ORIGIN_PORT" 2>&1) || true
    if [[ $(head -n 1 <<<"$nc_out" | tr -d '\r') == "HTTP/1.0 200 OK" &&
        $nc_out == *"$HELLO"* ]]; then
        pass "$what: nc -X 5 -x: raw HTTP/1.0 request with a half-close"
    else
        fail "$what: nc -X 5 -x: raw HTTP/1.0 request with a half-close" \
            "got $(printf %q "${nc_out:0:200}")" "$@"
    fi
    expect "$what: the same port still answers HTTP CONNECT (curl -p -x)" \
        "$(body -p -x "http://$addr" "$ORIGIN/hello.txt")" "$HELLO" "$@"
}

# socks_auth_checks WHAT ADDR LOG...: the proxy's credentials are the SOCKS5 user/password.
socks_auth_checks() {
    local what=$1 addr=$2 rc
    shift 2
    expect "$what: socks5h://user:pass@ gets the file" \
        "$(body --proxy "socks5h://$SOCKS_USER:$SOCKS_PASS@$addr" "$ORIGIN/hello.txt")" \
        "$HELLO" "$@"
    # curl 97: "proxy handshake error" (the proxy refused the method or the credentials).
    rc=0
    "${CURL[@]}" -o /dev/null --proxy "socks5h://$SOCKS_USER:wrong@$addr" \
        "$ORIGIN/hello.txt" 2>/dev/null || rc=$?
    expect "$what: a wrong password is refused (curl exit 97)" "$rc" 97 "$@"
    rc=0
    "${CURL[@]}" -o /dev/null --proxy "socks5h://$addr" "$ORIGIN/hello.txt" 2>/dev/null || rc=$?
    expect "$what: no credentials are refused (curl exit 97)" "$rc" 97 "$@"
    expect "$what: HTTP on the same port asks for the same credentials (407)" \
        "$(connect_status -p -x "http://$addr" "$ORIGIN/hello.txt")" 407 "$@"
}

# ---------------------------------------------------------------------------------------------
# burrow proxy

start_proxy socks-plain
SOCKS_PLAIN=$PROXY
SOCKS_PLAIN_LOG=$PROXY_LOG
socks_checks "proxy socks5" "$SOCKS_PLAIN" "$SOCKS_PLAIN_LOG"

socks_line="conn [0-9]+ 127\.0\.0\.1:[0-9]+ -> 127\.0\.0\.1:$ORIGIN_PORT up=[0-9]+ down=[0-9]+ [0-9.]+s socks5 "
if wait_log "$SOCKS_PLAIN_LOG" "$socks_line"; then
    pass "proxy socks5: one log line per connection, marked socks5"
else
    fail "proxy socks5: one log line per connection, marked socks5" \
        "no line matching /$socks_line/" "$SOCKS_PLAIN_LOG"
fi

rc=0
"${CURL[@]}" -o /dev/null --proxy "socks5h://$SOCKS_PLAIN" "http://127.0.0.1:$CLOSED_PORT/" \
    2>/dev/null || rc=$?
expect "proxy socks5: a closed port is refused (curl exit 97, reply connection refused)" \
    "$rc" 97 "$SOCKS_PLAIN_LOG"
if wait_log "$SOCKS_PLAIN_LOG" "CONNECT 127\.0\.0\.1:$CLOSED_PORT: .*\(socks5 0x05 connection refused\)"; then
    pass "proxy socks5: the refusal is logged with its reply code"
else
    fail "proxy socks5: the refusal is logged with its reply code" "no line" "$SOCKS_PLAIN_LOG"
fi

start_proxy socks-auth --auth "$SOCKS_USER:$SOCKS_PASS"
SOCKS_AUTH_LOG=$PROXY_LOG
socks_auth_checks "proxy socks5 --auth" "$PROXY" "$SOCKS_AUTH_LOG"

start_proxy socks-deny --deny 127.0.0.0/8
rc=0
"${CURL[@]}" -o /dev/null --proxy "socks5h://$PROXY" "$ORIGIN/hello.txt" 2>/dev/null || rc=$?
expect "proxy socks5 --deny 127.0.0.0/8: refused (curl exit 97)" "$rc" 97 "$PROXY_LOG"
if wait_log "$PROXY_LOG" "socks5 0x02 connection not allowed by ruleset"; then
    pass "proxy socks5 --deny: answered 'not allowed by ruleset'"
else
    fail "proxy socks5 --deny: answered 'not allowed by ruleset'" "no line" "$PROXY_LOG"
fi

# OpenSSH through the SOCKS5 door, with netcat as its ProxyCommand (when run.sh started sshd).
if [[ -n ${SSH_PORT:-} ]]; then
    expect "proxy socks5: ssh with ProxyCommand 'nc -X 5 -x PROXY %h %p'" \
        "$(ssh_echo "$SSH_PORT" -o ProxyCommand="nc -X 5 -x $SOCKS_PLAIN %h %p")" \
        burrow-ssh-ok "$SOCKS_PLAIN_LOG"
fi

# ---------------------------------------------------------------------------------------------
# The tunnel's proxy doors: -R …:proxy (the relay's port, egress the client) and -L …:proxy.

SOCKS_TOKEN="tok-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

# socks_client NAME REGEX ARGS...: `burrow client ARGS` in the background, its output in
# $WORK/NAME.log; waits for its first line matching REGEX (`bound R ADDR` or `listening L
# ADDR`) and for `connected`. Sets SOCKS_ADDR (ip:port) and SOCKS_CLIENT_LOG; false if either
# line did not come.
socks_client() {
    local name=$1 re=$2 line pid
    shift 2
    SOCKS_CLIENT_LOG="$WORK/$name.log"
    "$BURROW" client "$@" </dev/null >"$SOCKS_CLIENT_LOG" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    line=$(wait_match "$SOCKS_CLIENT_LOG" "$re" "$pid") || return 1
    wait_match "$SOCKS_CLIENT_LOG" '^connected$' "$pid" >/dev/null || return 1
    SOCKS_ADDR=$(grep -Eo '[0-9.]+:[0-9]+' <<<"$line" | head -n 1)
}

if start_relay socks-relay 127.0.0.1:0 --token "$SOCKS_TOKEN"; then
    SOCKS_URL="ws://$RELAY/burrow"
    SOCKS_RELAY_LOG=$RELAY_LOG
    if socks_client socks-rproxy '^bound R [0-9.]+:[0-9]+ ' "$SOCKS_URL" \
        --token "$SOCKS_TOKEN" -R 127.0.0.1:0:proxy; then
        socks_checks "-R proxy socks5" "$SOCKS_ADDR" "$SOCKS_CLIENT_LOG" "$SOCKS_RELAY_LOG"
    else
        fail "-R proxy socks5: the client bound a port" "no 'bound R' line" "$SOCKS_CLIENT_LOG"
    fi
    if socks_client socks-rproxy-auth '^bound R [0-9.]+:[0-9]+ ' "$SOCKS_URL" \
        --token "$SOCKS_TOKEN" -R 127.0.0.1:0:proxy --proxy-auth "$SOCKS_USER:$SOCKS_PASS"; then
        socks_auth_checks "-R proxy --proxy-auth socks5" "$SOCKS_ADDR" "$SOCKS_CLIENT_LOG" \
            "$SOCKS_RELAY_LOG"
    else
        fail "-R proxy --proxy-auth socks5: the client bound a port" "no 'bound R' line" \
            "$SOCKS_CLIENT_LOG"
    fi
    if socks_client socks-lproxy '^listening L [0-9.]+:[0-9]+' "$SOCKS_URL" \
        --token "$SOCKS_TOKEN" -L 127.0.0.1:0:proxy; then
        socks_checks "-L proxy socks5" "$SOCKS_ADDR" "$SOCKS_CLIENT_LOG" "$SOCKS_RELAY_LOG"
    else
        fail "-L proxy socks5: the client listens" "no 'listening L' line" "$SOCKS_CLIENT_LOG"
    fi
else
    fail "socks5 through the tunnel: relay started" "no address" "$RELAY_LOG"
fi

# ---------------------------------------------------------------------------------------------
# Secrets: no burrow log of these checks holds the SOCKS5 password.

socks_leaks=$(grep -lF -e "$SOCKS_PASS" -e "$SOCKS_TOKEN" "$WORK"/socks-*.log 2>/dev/null || true)
if [[ -z $socks_leaks ]]; then
    pass "socks5: no log contains the SOCKS5 password or the relay token"
else
    fail "socks5: no log contains the SOCKS5 password or the relay token" \
        "found in: $(basename -a $socks_leaks | tr '\n' ' ')"
fi

if [[ -n ${SOCKS_ALONE:-} ]]; then
    summary
fi
