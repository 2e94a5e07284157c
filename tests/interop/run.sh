#!/usr/bin/env bash
# Interop suite: the real `burrow` binary against real clients and servers: curl, OpenBSD
# netcat, OpenSSH (ssh through `burrow connect`) and tinyproxy (as burrow's upstream and as
# burrow's client), with python's http.server as the origin (it answers HTTP/1.0, as many
# real origins still do). At the end it runs tunnel.sh: the WebSocket tunnel (`burrow server`
# and `burrow client`) against curl, OpenSSH and python's `websockets`; socks.sh: SOCKS5 on
# `burrow proxy`, `-R …:proxy` and `-L …:proxy` (curl socks5h/socks5, nc -X 5); resume.sh: sessions
# across cut connections; config.sh: `burrow check` and `burrow run` with live reload; pools.sh:
# rolling restarts of two relays and a pool of two clients behind HAProxy, under load;
# socks_upstream.sh: SOCKS5 upstream hops (`--upstream`/`--via socks5://`) through `ssh -D`;
# udp.sh: dig through -L udp: and -R udp: to dnsmasq.
#
# Usage: bash tests/interop/run.sh        (or `just e2e`)
#   BURROW_BIN=path  use this binary instead of building target/debug/burrow
#   KEEP_WORK=1      keep the temp dir (logs, configs) for a look afterwards
#
# Every process started here is tracked by PID and killed on exit; every wait is bounded;
# burrow listens on 127.0.0.1:0 and we read its address from its log; the other daemons get a
# free port picked just before they start (retried once if another process took it).
# Output: one `ok - NAME` / `not ok - NAME (detail)` line per check, then
# `interop: N passed, M failed`; the exit status is non-zero if any check failed.
# The shared setup and helpers are in lib.sh.
set -euo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------------------------
# Origin: python's http.server over a directory with a small known file and 5 MiB of random
# bytes.

start_origin

expect "origin serves the test file directly" "$(body "$ORIGIN/hello.txt")" "$HELLO" "$ORIGIN_LOG"

# ---------------------------------------------------------------------------------------------
# Plain proxy: absolute-form and CONNECT.

start_proxy plain
PLAIN=$PROXY
PLAIN_LOG=$PROXY_LOG

expect "absolute-form GET (curl -x) gets the file" \
    "$(body -x "http://$PLAIN" "$ORIGIN/hello.txt")" "$HELLO" "$PLAIN_LOG"
expect "absolute-form GET of 5 MiB keeps its sha256" \
    "$(sha_of -x "http://$PLAIN" "$ORIGIN/big.bin")" "$BIG_SHA" "$PLAIN_LOG"
expect "CONNECT tunnel (curl -p -x) gets the file" \
    "$(body -p -x "http://$PLAIN" "$ORIGIN/hello.txt")" "$HELLO" "$PLAIN_LOG"
expect "CONNECT tunnel of 5 MiB keeps its sha256" \
    "$(sha_of -p -x "http://$PLAIN" "$ORIGIN/big.bin")" "$BIG_SHA" "$PLAIN_LOG"

conn_line="conn [0-9]+ 127\.0\.0\.1:[0-9]+ -> 127\.0\.0\.1:$ORIGIN_PORT up=[0-9]+ down=[0-9]+ [0-9.]+s"
if wait_log "$PLAIN_LOG" "$conn_line"; then
    pass "one log line per connection (conn N peer -> target up= down= secs)"
else
    fail "one log line per connection (conn N peer -> target up= down= secs)" \
        "no line matching /$conn_line/" "$PLAIN_LOG"
fi

CLOSED_TARGET="http://127.0.0.1:$CLOSED_PORT/"
expect "unreachable target (closed port) via -x answers 502" \
    "$(status -x "http://$PLAIN" "$CLOSED_TARGET")" 502 "$PLAIN_LOG"
expect "unreachable target (closed port) via CONNECT answers 502" \
    "$(connect_status -p -x "http://$PLAIN" "$CLOSED_TARGET")" 502 "$PLAIN_LOG"

# ---------------------------------------------------------------------------------------------
# Basic proxy auth: --auth and BURROW_PROXY_AUTH.

USER_NAME=burrow-user
PASSWORD='s3cret-pw-4f9a'
start_proxy auth --auth "$USER_NAME:$PASSWORD"
AUTHP=$PROXY
AUTH_LOG=$PROXY_LOG

headers="$WORK/407.headers"
code=$("${CURL[@]}" -o /dev/null -D "$headers" -w '%{http_code}' -x "http://$AUTHP" \
    "$ORIGIN/hello.txt" 2>/dev/null) || true
expect "auth: no credentials answers 407" "$code" 407 "$AUTH_LOG"
if tr -d '\r' <"$headers" 2>/dev/null | grep -qix 'Proxy-Authenticate: Basic realm="burrow"'; then
    pass "auth: 407 carries Proxy-Authenticate: Basic realm=\"burrow\""
else
    fail "auth: 407 carries Proxy-Authenticate: Basic realm=\"burrow\"" \
        "headers: $(tr '\r\n' ' ' <"$headers" 2>/dev/null)" "$AUTH_LOG"
fi
expect "auth: CONNECT without credentials answers 407" \
    "$(connect_status -p -x "http://$AUTHP" "$ORIGIN/hello.txt")" 407 "$AUTH_LOG"
expect "auth: right credentials via -x get the file" \
    "$(body -x "http://$AUTHP" --proxy-user "$USER_NAME:$PASSWORD" "$ORIGIN/hello.txt")" \
    "$HELLO" "$AUTH_LOG"
expect "auth: right credentials via -p -x get the file" \
    "$(body -p -x "http://$AUTHP" --proxy-user "$USER_NAME:$PASSWORD" "$ORIGIN/hello.txt")" \
    "$HELLO" "$AUTH_LOG"
expect "auth: wrong password answers 407" \
    "$(status -x "http://$AUTHP" --proxy-user "$USER_NAME:wrong" "$ORIGIN/hello.txt")" 407 \
    "$AUTH_LOG"
expect "auth: wrong password on CONNECT answers 407" \
    "$(connect_status -p -x "http://$AUTHP" --proxy-user "$USER_NAME:wrong" "$ORIGIN/hello.txt")" \
    407 "$AUTH_LOG"

BURROW_PROXY_AUTH="envuser:$PASSWORD" start_proxy envauth
ENVAUTH=$PROXY
ENVAUTH_LOG=$PROXY_LOG
expect "auth from BURROW_PROXY_AUTH: no credentials answers 407" \
    "$(status -x "http://$ENVAUTH" "$ORIGIN/hello.txt")" 407 "$ENVAUTH_LOG"
expect "auth from BURROW_PROXY_AUTH: right credentials get the file" \
    "$(body -p -x "http://$ENVAUTH" --proxy-user "envuser:$PASSWORD" "$ORIGIN/hello.txt")" \
    "$HELLO" "$ENVAUTH_LOG"

# ---------------------------------------------------------------------------------------------
# Target rules.

start_proxy deny --deny 127.0.0.0/8
DENY=$PROXY
DENY_LOG=$PROXY_LOG
expect "--deny 127.0.0.0/8: loopback target via -x answers 403" \
    "$(status -x "http://$DENY" "$ORIGIN/hello.txt")" 403 "$DENY_LOG"
expect "--deny 127.0.0.0/8: loopback target via CONNECT answers 403" \
    "$(connect_status -p -x "http://$DENY" "$ORIGIN/hello.txt")" 403 "$DENY_LOG"

start_proxy allow --allow "127.0.0.1:$ORIGIN_PORT"
ALLOW=$PROXY
ALLOW_LOG=$PROXY_LOG
expect "--allow 127.0.0.1:ORIGIN: the allowed target gets the file" \
    "$(body -p -x "http://$ALLOW" "$ORIGIN/hello.txt")" "$HELLO" "$ALLOW_LOG"
expect "--allow 127.0.0.1:ORIGIN: another port answers 403 (not 502: rules come before dialing)" \
    "$(connect_status -p -x "http://$ALLOW" "$CLOSED_TARGET")" 403 "$ALLOW_LOG"

# ---------------------------------------------------------------------------------------------
# A chain: burrow -> burrow (with credentials in the upstream URL) -> origin.

start_proxy chained --upstream "http://$USER_NAME:$PASSWORD@$AUTHP"
CHAINED=$PROXY
CHAINED_LOG=$PROXY_LOG
expect "--upstream with credentials: CONNECT through two burrows gets the file" \
    "$(body -p -x "http://$CHAINED" "$ORIGIN/hello.txt")" "$HELLO" "$CHAINED_LOG" "$AUTH_LOG"
expect "--upstream with credentials: absolute-form GET through two burrows gets the file" \
    "$(body -x "http://$CHAINED" "$ORIGIN/hello.txt")" "$HELLO" "$CHAINED_LOG" "$AUTH_LOG"

# Rules through a chain fail closed: the chain resolves names, so --allow 10.0.0.0/8 cannot
# admit "localhost" (its addresses are never seen here), and unspecified addresses are never
# dialed (0.0.0.0 means this host's loopback).
start_proxy chained-allow --allow 10.0.0.0/8 --upstream "http://$USER_NAME:$PASSWORD@$AUTHP"
CA_LOG=$PROXY_LOG
expect "--allow 10.0.0.0/8 --upstream: a name no name rule allows answers 403 (-x)" \
    "$(status -x "http://$PROXY" "http://localhost:$ORIGIN_PORT/hello.txt")" 403 "$CA_LOG"
expect "--allow 10.0.0.0/8 --upstream: CONNECT to localhost answers 403" \
    "$(connect_status -p -x "http://$PROXY" "http://localhost:$ORIGIN_PORT/hello.txt")" 403 "$CA_LOG"
expect "--deny 127.0.0.0/8: http://0.0.0.0:PORT/ answers 403 (never dialed)" \
    "$(status -x "http://$DENY" "http://0.0.0.0:$ORIGIN_PORT/hello.txt")" 403 "$DENY_LOG"
expect "--deny 127.0.0.0/8: CONNECT [::] answers 403 (never dialed)" \
    "$(connect_status -p -x "http://$DENY" "http://[::]:$ORIGIN_PORT/hello.txt")" 403 "$DENY_LOG"

# ---------------------------------------------------------------------------------------------
# OpenBSD netcat as a CONNECT client speaking raw HTTP/1.0 through the tunnel. -N shuts down
# netcat's write side after the request, so the tunnel must carry a half-close.

if nc -h 2>&1 | grep -q -- '^[[:space:]]*-N'; then NC_EOF=(-N); else NC_EOF=(-q 5); fi
nc_out=$(printf 'GET /hello.txt HTTP/1.0\r\n\r\n' |
    timeout 10 nc "${NC_EOF[@]}" -X connect -x "$PLAIN" 127.0.0.1 "$ORIGIN_PORT" 2>&1) || true
nc_status=$(head -n 1 <<<"$nc_out" | tr -d '\r')
if [[ $nc_status == "HTTP/1.0 200 OK" && $nc_out == *"$HELLO"* ]]; then
    pass "nc -X connect: raw HTTP/1.0 request through the tunnel"
else
    fail "nc -X connect: raw HTTP/1.0 request through the tunnel" \
        "got $(printf %q "${nc_out:0:200}")" "$PLAIN_LOG"
fi

# ---------------------------------------------------------------------------------------------
# OpenSSH through `burrow connect` as ProxyCommand: a throwaway sshd on loopback.

# ssh_via VIA-ARGS...: runs `echo burrow-ssh-ok` over ssh through `burrow connect VIA-ARGS`.
ssh_via() {
    ssh_echo "$SSH_PORT" -o ProxyCommand="$BURROW connect $* %h %p"
}

if start_sshd; then
    expect "ssh with ProxyCommand 'burrow connect --via PROXY %h %p'" \
        "$(ssh_via --via "http://$PLAIN")" burrow-ssh-ok "$PLAIN_LOG" "$SSHD_LOG"

    expect "ssh through a 2-hop chain (--via A --via http://user:pass@B)" \
        "$(ssh_via --via "http://$PLAIN" --via "http://$USER_NAME:$PASSWORD@$AUTHP")" \
        burrow-ssh-ok "$PLAIN_LOG" "$AUTH_LOG" "$SSHD_LOG"
    # Each burrow logs a line when its connection ends: A tunnelled to B, B to sshd.
    if wait_log "$PLAIN_LOG" "-> 127\.0\.0\.1:${AUTHP##*:} " &&
        wait_log "$AUTH_LOG" "-> 127\.0\.0\.1:$SSH_PORT "; then
        pass "2-hop ssh went A -> B -> sshd (both logs show their hop)"
    else
        fail "2-hop ssh went A -> B -> sshd (both logs show their hop)" \
            "want A -> 127.0.0.1:${AUTHP##*:} and B -> 127.0.0.1:$SSH_PORT" \
            "$PLAIN_LOG" "$AUTH_LOG"
    fi
else
    fail "ssh with ProxyCommand 'burrow connect --via PROXY %h %p'" "sshd did not start" \
        "$DAEMON_LOG"
    fail "ssh through a 2-hop chain (--via A --via http://user:pass@B)" "sshd did not start"
    fail "2-hop ssh went A -> B -> sshd (both logs show their hop)" "sshd did not start"
fi

# ---------------------------------------------------------------------------------------------
# tinyproxy, both ways. With no ConnectPort line tinyproxy allows CONNECT to every port.

# tinyproxy_cmd_with UPSTREAM_LINE PORT LOG
tinyproxy_conf() {
    cat <<EOF
Port $1
Listen 127.0.0.1
Allow 127.0.0.1
Timeout 30
MaxClients 20
LogLevel Info
EOF
}

# burrow -> tinyproxy -> origin
tinyproxy_plain_cmd() {
    tinyproxy_conf "$1" >"$WORK/tinyproxy-plain.conf"
    tinyproxy -d -c "$WORK/tinyproxy-plain.conf" </dev/null >"$2" 2>&1 &
}
if spawn_daemon tinyproxy-plain tinyproxy_plain_cmd; then
    TP_PLAIN_PORT=$DAEMON_PORT
    TP_PLAIN_LOG=$DAEMON_LOG
    start_proxy to-tinyproxy --upstream "http://127.0.0.1:$TP_PLAIN_PORT"
    TO_TP=$PROXY
    TO_TP_LOG=$PROXY_LOG
    expect "burrow --upstream tinyproxy: CONNECT (curl -p -x) gets the file" \
        "$(body -p -x "http://$TO_TP" "$ORIGIN/hello.txt")" "$HELLO" "$TO_TP_LOG" "$TP_PLAIN_LOG"
    expect "burrow --upstream tinyproxy: absolute-form GET (curl -x) gets the file" \
        "$(body -x "http://$TO_TP" "$ORIGIN/hello.txt")" "$HELLO" "$TO_TP_LOG" "$TP_PLAIN_LOG"
    if wait_log "$TP_PLAIN_LOG" "Request .*127\.0\.0\.1:$ORIGIN_PORT"; then
        pass "burrow --upstream tinyproxy: tinyproxy carried the requests"
    else
        fail "burrow --upstream tinyproxy: tinyproxy carried the requests" \
            "tinyproxy logged no request for 127.0.0.1:$ORIGIN_PORT" "$TP_PLAIN_LOG"
    fi
else
    for name in "CONNECT (curl -p -x) gets the file" "absolute-form GET (curl -x) gets the file" \
        "tinyproxy carried the requests"; do
        fail "burrow --upstream tinyproxy: $name" "tinyproxy did not start" "$DAEMON_LOG"
    done
fi

# tinyproxy -> burrow -> origin: a dedicated burrow so its log holds only tinyproxy's traffic.
start_proxy from-tinyproxy
FROM_TP=$PROXY
FROM_TP_LOG=$PROXY_LOG
tinyproxy_upstream_cmd() {
    {
        tinyproxy_conf "$1"
        echo "Upstream http $FROM_TP"
    } >"$WORK/tinyproxy-upstream.conf"
    tinyproxy -d -c "$WORK/tinyproxy-upstream.conf" </dev/null >"$2" 2>&1 &
}
if spawn_daemon tinyproxy-upstream tinyproxy_upstream_cmd; then
    TP_UP_PORT=$DAEMON_PORT
    TP_UP_LOG=$DAEMON_LOG
    expect "tinyproxy with Upstream burrow: curl -x gets the file" \
        "$(body -x "http://127.0.0.1:$TP_UP_PORT" "$ORIGIN/hello.txt")" "$HELLO" \
        "$FROM_TP_LOG" "$TP_UP_LOG"
    expect "tinyproxy with Upstream burrow: curl -p -x gets the file" \
        "$(body -p -x "http://127.0.0.1:$TP_UP_PORT" "$ORIGIN/hello.txt")" "$HELLO" \
        "$FROM_TP_LOG" "$TP_UP_LOG"
    if wait_log "$FROM_TP_LOG" "-> 127\.0\.0\.1:$ORIGIN_PORT "; then
        pass "tinyproxy with Upstream burrow: burrow logged the connections"
    else
        fail "tinyproxy with Upstream burrow: burrow logged the connections" \
            "no conn line for 127.0.0.1:$ORIGIN_PORT" "$FROM_TP_LOG" "$TP_UP_LOG"
    fi
else
    for name in "curl -x gets the file" "curl -p -x gets the file" \
        "burrow logged the connections"; do
        fail "tinyproxy with Upstream burrow: $name" "tinyproxy did not start" "$DAEMON_LOG"
    done
fi

# ---------------------------------------------------------------------------------------------
# Graceful shutdown: SIGTERM while a slow download runs. The download finishes intact, new
# connections are refused at once, and burrow exits 0 within its drain timeout.

DRAIN_SECS=15
slow_origin_cmd() {
    # 5 MiB at 1 MiB/s: about 5 s, well inside the drain timeout.
    python3 "$ROOT/tests/interop/slow_origin.py" "$1" "$WWW/big.bin" $((1024 * 1024)) \
        </dev/null >"$2" 2>&1 &
}
spawn_daemon slow-origin slow_origin_cmd || die "slow origin did not start" "$DAEMON_LOG"
SLOW_ORIGIN="http://127.0.0.1:$DAEMON_PORT"
start_proxy drain --drain-timeout "${DRAIN_SECS}s"
DRAIN=$PROXY
DRAIN_PID=$PROXY_PID
DRAIN_LOG=$PROXY_LOG
slow="$WORK/slow.bin"
curl -q -sS --max-time 30 -p -x "http://$DRAIN" -o "$slow" "$SLOW_ORIGIN/big.bin" \
    </dev/null 2>"$WORK/slow.err" &
SLOW_PID=$!
PIDS+=("$SLOW_PID")

started=0
for _ in $(seq 100); do
    if [[ $(stat -c %s "$slow" 2>/dev/null || echo 0) -ge 262144 ]]; then
        started=1
        break
    fi
    running "$SLOW_PID" || break
    sleep 0.1
done
if ((started)); then
    kill -TERM "$DRAIN_PID"
    term_at=$SECONDS

    # The listener closes as the drain starts: a new connection is refused (curl exit 7).
    refused=0
    for _ in $(seq 20); do
        rc=0
        "${CURL[@]}" --max-time 2 -o /dev/null -x "http://$DRAIN" "$ORIGIN/hello.txt" \
            2>/dev/null || rc=$?
        if ((rc == 7)); then
            refused=1
            break
        fi
        sleep 0.1
    done
    if ((refused)) && running "$SLOW_PID"; then
        pass "shutdown: new connections refused while draining"
    elif ((refused)); then
        fail "shutdown: new connections refused while draining" \
            "refused, but only after the download had ended" "$DRAIN_LOG"
    else
        fail "shutdown: new connections refused while draining" \
            "last curl exit $rc, want 7 (connection refused)" "$DRAIN_LOG"
    fi

    for _ in $(seq $((20 * 10))); do
        running "$SLOW_PID" || break
        sleep 0.1
    done
    slow_rc=0
    if running "$SLOW_PID"; then slow_rc=timeout; else wait "$SLOW_PID" || slow_rc=$?; fi
    slow_sha=$(sha256sum "$slow" 2>/dev/null | cut -d' ' -f1)
    if [[ $slow_rc == 0 && $slow_sha == "$BIG_SHA" ]]; then
        pass "shutdown: the download in flight completes with the right sha256"
    else
        fail "shutdown: the download in flight completes with the right sha256" \
            "curl exit $slow_rc: $(head -c 200 "$WORK/slow.err"), sha256 ${slow_sha:-none}" \
            "$DRAIN_LOG"
    fi

    for _ in $(seq $(((DRAIN_SECS + 5) * 10))); do
        running "$DRAIN_PID" || break
        sleep 0.1
    done
    drain_rc=0
    if running "$DRAIN_PID"; then drain_rc=still-running; else wait "$DRAIN_PID" || drain_rc=$?; fi
    took=$((SECONDS - term_at))
    if [[ $drain_rc == 0 ]] && ((took <= DRAIN_SECS + 1)); then
        pass "shutdown: burrow exits 0 within its drain timeout after SIGTERM"
    else
        fail "shutdown: burrow exits 0 within its drain timeout after SIGTERM" \
            "exit $drain_rc after ${took}s, drain timeout ${DRAIN_SECS}s" "$DRAIN_LOG"
    fi
else
    for name in "new connections refused while draining" \
        "the download in flight completes with the right sha256" \
        "burrow exits 0 within its drain timeout after SIGTERM"; do
        fail "shutdown: $name" "the slow download never started: $(head -c 200 "$WORK/slow.err")" \
            "$DRAIN_LOG"
    done
fi

# ---------------------------------------------------------------------------------------------
# Secrets: no burrow log holds the password or the Basic token made from it.

token=$(printf '%s' "$USER_NAME:$PASSWORD" | base64)
leaks=$(grep -lF -e "$PASSWORD" -e "$token" "$WORK"/*.log 2>/dev/null |
    grep -v -e tinyproxy -e sshd -e origin || true)
if [[ -z $leaks ]]; then
    pass "no log contains the proxy password or its Basic token"
else
    fail "no log contains the proxy password or its Basic token" \
        "found in: $(basename -a $leaks | tr '\n' ' ')"
fi

# ---------------------------------------------------------------------------------------------
# The WebSocket tunnel: its own checks, on the same counters.

# shellcheck source=tests/interop/tunnel.sh
source "$ROOT/tests/interop/tunnel.sh"
# shellcheck source=tests/interop/socks.sh
source "$ROOT/tests/interop/socks.sh"
# shellcheck source=tests/interop/resume.sh
source "$ROOT/tests/interop/resume.sh"
# shellcheck source=tests/interop/config.sh
source "$ROOT/tests/interop/config.sh"
# shellcheck source=tests/interop/pools.sh
source "$ROOT/tests/interop/pools.sh"
# shellcheck source=tests/interop/socks_upstream.sh
source "$ROOT/tests/interop/socks_upstream.sh"
# shellcheck source=tests/interop/udp.sh
source "$ROOT/tests/interop/udp.sh"

summary
