#!/usr/bin/env bash
# Interop checks for the WebSocket tunnel: a real `burrow server` (the relay) and real
# `burrow client`s, against curl (through -R and -L, forward and proxy modes), OpenSSH (-L
# stdio as ProxyCommand, and sshd exposed with -R), and python's `websockets` speaking the
# protocol of docs/PROTOCOL.md (auth and version refusals, a stream of its own, protocol
# violations). Then a relay restart on the same port (the client reconnects and binds again)
# and SIGTERM to a client with a download in flight.
#
# run.sh sources this file at its end (same counters, one summary line); it also runs alone:
#   bash tests/interop/tunnel.sh          (BURROW_BIN and KEEP_WORK as for run.sh)
#
# Conventions as in run.sh: relays listen on 127.0.0.1:0 and we read `relay listening on ADDR`
# from their log; clients ask for port 0 (-R 127.0.0.1:0:..., -L 127.0.0.1:0:...) and we read
# `bound R ADDR` / `listening L ADDR` from what they print; every wait is a bounded poll;
# every process is tracked by PID and killed on exit.

if [[ -z ${INTEROP_LIB:-} ]]; then
    set -euo pipefail
    # shellcheck source=tests/interop/lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
    TUNNEL_ALONE=1
fi

[[ -n ${ORIGIN_PORT:-} ]] || start_origin

# ---------------------------------------------------------------------------------------------
# Helpers.

# start_client NAME ARGS...: `burrow client ARGS` in the background; its state lines (stdout)
# and its log (stderr) both go to $WORK/NAME.log, the state lines being the ones without a
# `[time level]` prefix. Sets CLIENT_PID and CLIENT_LOG.
start_client() {
    local name=$1
    shift
    CLIENT_LOG="$WORK/$name.log"
    "$BURROW" client "$@" </dev/null >"$CLIENT_LOG" 2>&1 &
    CLIENT_PID=$!
    PIDS+=("$CLIENT_PID")
}

# client_bound NAME ARGS...: start_client, then waits for its `bound R ADDR -> ...` line.
# Sets BOUND (ip:port); false if none came.
client_bound() {
    local line
    start_client "$@"
    line=$(wait_match "$CLIENT_LOG" '^bound R [0-9.]+:[0-9]+ ' "$CLIENT_PID") || return 1
    BOUND=$(awk '{print $3}' <<<"$line")
}

# client_listening NAME ARGS...: start_client, then waits for its `listening L ADDR` line and
# for `connected`. Sets LISTEN (ip:port); false if either did not come.
client_listening() {
    local line
    start_client "$@"
    line=$(wait_match "$CLIENT_LOG" '^listening L [0-9.]+:[0-9]+' "$CLIENT_PID") || return 1
    LISTEN=${line##* }
    wait_match "$CLIENT_LOG" '^connected$' "$CLIENT_PID" >/dev/null
}

# How the relay logs the end of a session: `session LABEL: REASON`, LABEL being `ID@PEER`
# with ` token NAME` after it when the relay has tokens.
SESSION_END='(closed by peer|closed locally: .*|peer silent for 3 keepalive intervals|protocol error \([0-9]+\): .*|transport failed: .*)'

# session_end LOG LABEL-REGEX: prints how the relay says session LABEL ended, once it has
# (bounded: 5 s); false if it never said.
session_end() {
    local m
    m=$(wait_match "$1" "session $2( token [^ :]+)?: $SESSION_END" "" 1 5) || return 1
    printf '%s\n' "${m#*: }"
}

# fail_all DETAIL LOG NAME...: fails each check NAME that could not run, showing LOG once.
fail_all() {
    local detail=$1 log=$2 name
    shift 2
    for name in "$@"; do
        fail "$name" "$detail" "$log"
        log=
    done
}

# A token and proxy credentials that would stand out in a log.
TOKEN="tok-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
R_PROXY_USER=visitor
R_PROXY_PASS="pw-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

# ---------------------------------------------------------------------------------------------
# The relay every check below uses, except the restart one.

start_relay relay-main 127.0.0.1:0 --token "$TOKEN" ||
    die "burrow server did not report its address" "$RELAY_LOG"
MAIN=$RELAY
MAIN_LOG=$RELAY_LOG
URL="ws://$MAIN/burrow"

expect "relay: GET /healthz answers ok" "$(body "http://$MAIN/healthz")" ok "$MAIN_LOG"

# ---------------------------------------------------------------------------------------------
# -R forward: the origin exposed on a relay port.

names=("-R forward: curl through the relay port gets the file"
    "-R forward: 5 MiB through the relay port keeps its sha256"
    "relay: /metrics with the token reports the connected client (burrow_sessions 1)"
    "relay: /metrics without the token answers 401")
if client_bound client-rfwd "$URL" --token "$TOKEN" -R "127.0.0.1:0:127.0.0.1:$ORIGIN_PORT"; then
    RFWD=$BOUND
    RFWD_PID=$CLIENT_PID
    RFWD_LOG=$CLIENT_LOG
    expect "${names[0]}" "$(body "http://$RFWD/hello.txt")" "$HELLO" "$RFWD_LOG" "$MAIN_LOG"
    expect "${names[1]}" "$(sha_of "http://$RFWD/big.bin")" "$BIG_SHA" "$RFWD_LOG" "$MAIN_LOG"
    sessions=$("${CURL[@]}" -H "Authorization: Bearer $TOKEN" "http://$MAIN/metrics" 2>&1 |
        grep -E '^burrow_sessions ' || true)
    expect "${names[2]}" "$sessions" "burrow_sessions 1" "$MAIN_LOG"
    expect "${names[3]}" "$(status "http://$MAIN/metrics")" 401 "$MAIN_LOG"
else
    RFWD=
    fail_all "the client printed no 'bound R' line" "$CLIENT_LOG" "${names[@]}"
fi

# ---------------------------------------------------------------------------------------------
# -R ...:proxy: the relay port is an HTTP proxy whose egress is the client.

names=("-R proxy: curl -x gets the file"
    "-R proxy: curl -p -x gets the file"
    "-R proxy: 5 MiB via curl -p -x keeps its sha256")
if client_bound client-rproxy "$URL" --token "$TOKEN" -R 127.0.0.1:0:proxy; then
    expect "${names[0]}" "$(body -x "http://$BOUND" "$ORIGIN/hello.txt")" "$HELLO" \
        "$CLIENT_LOG" "$MAIN_LOG"
    expect "${names[1]}" "$(body -p -x "http://$BOUND" "$ORIGIN/hello.txt")" "$HELLO" \
        "$CLIENT_LOG" "$MAIN_LOG"
    expect "${names[2]}" "$(sha_of -p -x "http://$BOUND" "$ORIGIN/big.bin")" "$BIG_SHA" \
        "$CLIENT_LOG" "$MAIN_LOG"
else
    fail_all "the client printed no 'bound R' line" "$CLIENT_LOG" "${names[@]}"
fi

names=("-R proxy --proxy-auth: no credentials via -x answers 407"
    "-R proxy --proxy-auth: no credentials via -p -x answers 407"
    "-R proxy --proxy-auth: --proxy-user via -x answers 200"
    "-R proxy --proxy-auth: --proxy-user via -p -x gets the file")
if client_bound client-rproxy-auth "$URL" --token "$TOKEN" -R 127.0.0.1:0:proxy \
    --proxy-auth "$R_PROXY_USER:$R_PROXY_PASS"; then
    creds=(--proxy-user "$R_PROXY_USER:$R_PROXY_PASS")
    expect "${names[0]}" "$(status -x "http://$BOUND" "$ORIGIN/hello.txt")" 407 "$CLIENT_LOG"
    expect "${names[1]}" "$(connect_status -p -x "http://$BOUND" "$ORIGIN/hello.txt")" 407 \
        "$CLIENT_LOG"
    expect "${names[2]}" "$(status -x "http://$BOUND" "${creds[@]}" "$ORIGIN/hello.txt")" 200 \
        "$CLIENT_LOG"
    expect "${names[3]}" "$(body -p -x "http://$BOUND" "${creds[@]}" "$ORIGIN/hello.txt")" \
        "$HELLO" "$CLIENT_LOG"
else
    fail_all "the client printed no 'bound R' line" "$CLIENT_LOG" "${names[@]}"
fi

names=("-R proxy, client --deny 127.0.0.1:ORIGIN: curl -x answers 403"
    "-R proxy, client --deny 127.0.0.1:ORIGIN: curl -p -x answers 403")
if client_bound client-rproxy-deny "$URL" --token "$TOKEN" -R 127.0.0.1:0:proxy \
    --deny "127.0.0.1:$ORIGIN_PORT"; then
    expect "${names[0]}" "$(status -x "http://$BOUND" "$ORIGIN/hello.txt")" 403 "$CLIENT_LOG"
    expect "${names[1]}" "$(connect_status -p -x "http://$BOUND" "$ORIGIN/hello.txt")" 403 \
        "$CLIENT_LOG"
else
    fail_all "the client printed no 'bound R' line" "$CLIENT_LOG" "${names[@]}"
fi

# ---------------------------------------------------------------------------------------------
# -L: a local proxy whose egress is the relay, and a local forward.

names=("-L proxy: curl -x gets the file" "-L proxy: curl -p -x gets the file")
if client_listening client-lproxy "$URL" --token "$TOKEN" -L 127.0.0.1:0:proxy; then
    expect "${names[0]}" "$(body -x "http://$LISTEN" "$ORIGIN/hello.txt")" "$HELLO" \
        "$CLIENT_LOG" "$MAIN_LOG"
    expect "${names[1]}" "$(body -p -x "http://$LISTEN" "$ORIGIN/hello.txt")" "$HELLO" \
        "$CLIENT_LOG" "$MAIN_LOG"
else
    fail_all "the client printed no 'listening L' and 'connected' lines" "$CLIENT_LOG" \
        "${names[@]}"
fi

names=("-L forward: curl to the local port gets the file"
    "-L forward: 5 MiB through the local port keeps its sha256")
if client_listening client-lfwd "$URL" --token "$TOKEN" \
    -L "127.0.0.1:0:127.0.0.1:$ORIGIN_PORT"; then
    expect "${names[0]}" "$(body "http://$LISTEN/hello.txt")" "$HELLO" "$CLIENT_LOG" "$MAIN_LOG"
    expect "${names[1]}" "$(sha_of "http://$LISTEN/big.bin")" "$BIG_SHA" "$CLIENT_LOG" "$MAIN_LOG"
else
    fail_all "the client printed no 'listening L' and 'connected' lines" "$CLIENT_LOG" \
        "${names[@]}"
fi

# ---------------------------------------------------------------------------------------------
# -L stdio: stdin/stdout joined to one stream. First with a sink that answers with the sha256
# of what it read once it sees EOF (so the half-close must go through), on a relay of its own
# so its log shows this one session; then OpenSSH with the client as ProxyCommand, and an sshd
# exposed with -R.

names=("-L stdio: 5 MiB on stdin arrive intact (the target answers their sha256 after EOF)"
    "-L stdio: the client exits 0 when the stream is done"
    "-L stdio: the client then closes its WebSocket cleanly (relay logs: closed by peer)")
sink_cmd() {
    python3 "$ROOT/tests/interop/sha_sink.py" "$1" </dev/null >"$2" 2>&1 &
}
if ! spawn_daemon sha-sink sink_cmd; then
    fail_all "the sha256 sink did not start" "$DAEMON_LOG" "${names[@]}"
elif ! start_relay relay-stdio 127.0.0.1:0 --token "$TOKEN"; then
    fail_all "the relay for the stdio check did not start" "$RELAY_LOG" "${names[@]}"
else
    STDIO_RELAY_LOG=$RELAY_LOG
    STDIO_LOG="$WORK/client-stdio.log"
    stdio_rc=0
    stdio_out=$(timeout 30 "$BURROW" client "ws://$RELAY/burrow" --token "$TOKEN" \
        -L "stdio:127.0.0.1:$DAEMON_PORT" <"$WWW/big.bin" 2>"$STDIO_LOG") || stdio_rc=$?
    expect "${names[0]}" "$stdio_out" "$BIG_SHA $((5 * 1024 * 1024))" "$STDIO_LOG" \
        "$STDIO_RELAY_LOG"
    expect "${names[1]}" "$stdio_rc" 0 "$STDIO_LOG"
    expect "${names[2]}" "$(session_end "$STDIO_RELAY_LOG" '[^ ]+' || echo "no end logged")" \
        "closed by peer" "$STDIO_LOG" "$STDIO_RELAY_LOG"
fi

if [[ -z ${SSH_PORT:-} && -z ${SSHD_DIR:-} ]]; then start_sshd || true; fi
names=("ssh with ProxyCommand 'burrow client ws://RELAY/burrow -L stdio:%h:%p'"
    "ssh to an sshd exposed with -R through the relay port")
if [[ -n ${SSH_PORT:-} ]]; then
    # The client's state lines go to stderr in stdio mode: keep them out of ssh's output.
    SSH_STDIO_LOG="$WORK/client-ssh-stdio.log"
    proxy_cmd="$BURROW client $URL --token $TOKEN -L stdio:%h:%p 2>>$SSH_STDIO_LOG"
    expect "${names[0]}" "$(ssh_echo "$SSH_PORT" -o ProxyCommand="$proxy_cmd")" burrow-ssh-ok \
        "$SSH_STDIO_LOG" "$MAIN_LOG" "$SSHD_LOG"
    if client_bound client-rssh "$URL" --token "$TOKEN" -R "127.0.0.1:0:127.0.0.1:$SSH_PORT"; then
        expect "${names[1]}" "$(ssh_echo "${BOUND##*:}")" burrow-ssh-ok "$CLIENT_LOG" "$SSHD_LOG"
    else
        fail "${names[1]}" "the client printed no 'bound R' line" "$CLIENT_LOG"
    fi
else
    fail_all "sshd did not start" "${SSHD_LOG:-${DAEMON_LOG:-}}" "${names[@]}"
fi

# ---------------------------------------------------------------------------------------------
# python's websockets against the relay: a WebSocket stack that is not burrow's.

names=("websockets: no token is refused with HTTP 401"
    "websockets: a wrong token is refused with HTTP 401"
    "websockets: Burrow-Version: 2 is refused with HTTP 426"
    "websockets: token, Burrow-Version: 1 and Burrow-Session upgrade (101, Burrow-Version: 1)"
    "websockets: a stream of python's own (OPEN Dial, DATA, FIN) gets the file via the relay"
    "websockets: 5 MiB on python's stream, granting WINDOW credit, keeps its sha256"
    "websockets: a garbage binary frame (ff 00 00 00 00) closes that session with 1002"
    "websockets: after that, the burrow client's -R port still serves (its session untouched)"
    "websockets: a text message closes that session with 1003")
WS_CLIENT=(timeout 60 python3 "$ROOT/tests/interop/ws_client.py")
# ws MODE [ARGS...]: ws_client.py against the main relay; prints its result line (or error).
ws() {
    local mode=$1
    shift
    "${WS_CLIENT[@]}" "$mode" "$URL" "$@" 2>&1 || true
}
if ws_import=$(python3 -c 'import websockets; print(websockets.__version__)' 2>&1); then
    echo "# python websockets $ws_import"
    v1=(--header "Burrow-Version: 1")
    auth=(--header "Authorization: Bearer $TOKEN")
    expect "${names[0]}" "$(ws status "${v1[@]}" --header "Burrow-Session: pyclient0")" \
        "status 401" "$MAIN_LOG"
    expect "${names[1]}" "$(ws status --header "Authorization: Bearer wrong-$TOKEN" "${v1[@]}" \
        --header "Burrow-Session: pyclient0")" "status 401" "$MAIN_LOG"
    expect "${names[2]}" "$(ws status "${auth[@]}" --header "Burrow-Version: 2" \
        --header "Burrow-Session: pyclient0")" "status 426" "$MAIN_LOG"
    expect "${names[3]}" "$(ws status "${auth[@]}" "${v1[@]}" \
        --header "Burrow-Session: pyclient1")" "status 101 burrow-version=1" "$MAIN_LOG"
    expect "${names[4]}" "$(ws get "${auth[@]}" "${v1[@]}" --header "Burrow-Session: pyclient2" \
        --target "127.0.0.1:$ORIGIN_PORT" --path /hello.txt)" "$HELLO" "$MAIN_LOG"
    expect "${names[5]}" "$(ws get "${auth[@]}" "${v1[@]}" --header "Burrow-Session: pyclient3" \
        --target "127.0.0.1:$ORIGIN_PORT" --path /big.bin --sha256)" "sha256 $BIG_SHA" "$MAIN_LOG"
    if [[ -n $RFWD ]] && running "$RFWD_PID"; then
        expect "${names[6]}" "$(ws send "${auth[@]}" "${v1[@]}" \
            --header "Burrow-Session: pyclient4" --hex ff00000000)" "close 1002" "$MAIN_LOG"
        after=$(body "http://$RFWD/hello.txt")
        if [[ $after == "$HELLO" ]] && ! grep -q '^lost' "$RFWD_LOG"; then
            pass "${names[7]}"
        else
            fail "${names[7]}" "got $(printf %q "${after:0:200}"), client lines: $(grep -v '^\[' \
                "$RFWD_LOG" | tr '\n' '|')" "$RFWD_LOG" "$MAIN_LOG"
        fi
    else
        fail_all "the -R forward client is not running" "$RFWD_LOG" "${names[@]:6:2}"
    fi
    expect "${names[8]}" "$(ws send "${auth[@]}" "${v1[@]}" --header "Burrow-Session: pyclient5" \
        --text hello)" "close 1003" "$MAIN_LOG"
else
    fail_all "python websockets is not importable (pip3 install websockets, or run .ci/run): $(
        tail -n 1 <<<"$ws_import")" "" "${names[@]}"
fi

# ---------------------------------------------------------------------------------------------
# Relay restart: SIGTERM the relay, start another on the same port; the client reconnects,
# binds again (asking for the port it had) and the new port serves.

names=("restart: after relay SIGTERM the client prints 'lost' and 'retrying'"
    "restart: with a new relay on the same port the client prints 'connected' and 'bound R' again"
    "restart: the client got its -R port back"
    "restart: curl through the newly bound port gets the file")
if ! start_relay relay-r1 127.0.0.1:0 --token "$TOKEN" --grace 30s; then
    fail_all "the first relay did not start" "$RELAY_LOG" "${names[@]}"
elif ! client_bound client-restart "ws://$RELAY/burrow" --token "$TOKEN" --keepalive 1s \
    -R "127.0.0.1:0:127.0.0.1:$ORIGIN_PORT"; then
    fail_all "the client printed no 'bound R' line" "$CLIENT_LOG" "${names[@]}"
else
    R1=$RELAY
    R1_LOG=$RELAY_LOG
    B1=$BOUND
    RS_PID=$CLIENT_PID
    RS_LOG=$CLIENT_LOG
    kill -TERM "$RELAY_PID"
    if ! wait_exit "$RELAY_PID" 15; then
        fail_all "the relay did not exit within 15 s of SIGTERM" "$R1_LOG" "${names[@]}"
    elif ! wait_match "$RS_LOG" '^lost: .*' "$RS_PID" 1 15 >/dev/null ||
        ! wait_match "$RS_LOG" '^retrying in [0-9.]+ s' "$RS_PID" 1 15 >/dev/null; then
        fail_all "want 'lost: ...' then 'retrying in N s'" "$RS_LOG" "${names[@]}"
    else
        pass "${names[0]}"
        # The port was just freed; another process may hold it for a moment: retry, bounded.
        r2=0
        for _ in $(seq 20); do
            if start_relay relay-r2 "$R1" --token "$TOKEN" --grace 30s; then
                r2=1
                break
            fi
            sleep 0.25
        done
        if ((r2 == 0)); then
            fail_all "no second relay could listen on $R1" "$RELAY_LOG" "${names[@]:1}"
        else
            R2_LOG=$RELAY_LOG
            # Backoff after a few failed attempts is a few seconds; 40 s is plenty.
            if wait_match "$RS_LOG" '^connected$' "$RS_PID" 2 40 >/dev/null &&
                line=$(wait_match "$RS_LOG" '^bound R [0-9.]+:[0-9]+ ' "$RS_PID" 2 10); then
                pass "${names[1]}"
                B2=$(awk '{print $3}' <<<"$line")
                expect "${names[2]}" "$B2" "$B1" "$RS_LOG" "$R2_LOG"
                expect "${names[3]}" "$(body "http://$B2/hello.txt")" "$HELLO" "$RS_LOG" \
                    "$R2_LOG"
            else
                fail_all "client lines: $(grep -v '^\[' "$RS_LOG" | tr '\n' '|')" "$RS_LOG" \
                    "${names[@]:1}"
                [[ -s $R2_LOG ]] && tail -n 20 "$R2_LOG" | sed 's/^/#     relay-r2: /'
            fi
        fi
    fi
fi

# ---------------------------------------------------------------------------------------------
# SIGTERM to a client while a download runs through its -R port: the download finishes
# intact and the client exits 0 within its drain timeout.

CLIENT_DRAIN_SECS=15
names=("client SIGTERM: the download in flight through -R completes with the right sha256"
    "client SIGTERM: the client exits 0 within its drain timeout"
    "client SIGTERM: the client closes its WebSocket cleanly after the drain (relay: closed by peer)")
tunnel_slow_cmd() {
    # 5 MiB at 1 MiB/s: about 5 s, well inside the drain timeout.
    python3 "$ROOT/tests/interop/slow_origin.py" "$1" "$WWW/big.bin" $((1024 * 1024)) \
        </dev/null >"$2" 2>&1 &
}
if ! spawn_daemon slow-origin-tunnel tunnel_slow_cmd; then
    fail_all "the slow origin did not start" "$DAEMON_LOG" "${names[@]}"
elif ! client_bound client-drain "$URL" --token "$TOKEN" \
    --drain-timeout "${CLIENT_DRAIN_SECS}s" -R "127.0.0.1:0:127.0.0.1:$DAEMON_PORT"; then
    fail_all "the client printed no 'bound R' line" "$CLIENT_LOG" "${names[@]}"
else
    DRAIN_CLIENT_PID=$CLIENT_PID
    DRAIN_CLIENT_LOG=$CLIENT_LOG
    # The relay's name for this session, from its `session LABEL: bound ADDR` line.
    drain_label=$(wait_match "$MAIN_LOG" "session [^ ]+( token [^ :]+)?: bound $BOUND " "" 1 5 |
        awk '{print $2}') ||
        true
    drain_label=${drain_label%:}
    tslow="$WORK/tunnel-slow.bin"
    curl -q -sS --max-time 30 -o "$tslow" "http://$BOUND/big.bin" </dev/null \
        2>"$WORK/tunnel-slow.err" &
    TSLOW_PID=$!
    PIDS+=("$TSLOW_PID")
    started=0
    for _ in $(seq 100); do
        if [[ $(stat -c %s "$tslow" 2>/dev/null || echo 0) -ge 262144 ]]; then
            started=1
            break
        fi
        running "$TSLOW_PID" || break
        sleep 0.1
    done
    if ((started == 0)); then
        fail_all "the download never started: $(head -c 200 "$WORK/tunnel-slow.err")" \
            "$DRAIN_CLIENT_LOG" "${names[@]}"
    else
        kill -TERM "$DRAIN_CLIENT_PID"
        term_at=$SECONDS
        tslow_rc=timeout
        if wait_exit "$TSLOW_PID" 25; then tslow_rc=$EXIT_RC; fi
        tslow_sha=$(sha256sum "$tslow" 2>/dev/null | cut -d' ' -f1)
        if [[ $tslow_rc == 0 && $tslow_sha == "$BIG_SHA" ]]; then
            pass "${names[0]}"
        else
            fail "${names[0]}" "curl exit $tslow_rc: $(head -c 200 "$WORK/tunnel-slow.err"), $(
                stat -c %s "$tslow" 2>/dev/null || echo 0) bytes, sha256 ${tslow_sha:-none}" \
                "$DRAIN_CLIENT_LOG" "$MAIN_LOG"
        fi
        client_rc=still-running
        if wait_exit "$DRAIN_CLIENT_PID" $((CLIENT_DRAIN_SECS + 5)); then client_rc=$EXIT_RC; fi
        took=$((SECONDS - term_at))
        if [[ $client_rc == 0 ]] && ((took <= CLIENT_DRAIN_SECS + 1)); then
            pass "${names[1]}"
        else
            fail "${names[1]}" "exit $client_rc after ${took}s, drain timeout ${CLIENT_DRAIN_SECS}s" \
                "$DRAIN_CLIENT_LOG"
        fi
        if [[ -z $drain_label ]]; then
            fail "${names[2]}" "the relay logged no 'bound $BOUND' line" "$MAIN_LOG"
        else
            expect "${names[2]}" "$(session_end "$MAIN_LOG" "$drain_label" || echo "no end logged")" \
                "closed by peer" "$DRAIN_CLIENT_LOG" "$MAIN_LOG"
        fi
    fi
fi

# ---------------------------------------------------------------------------------------------
# A hostile client (tests/interop/flood.py, raw sockets): a valid token, then OPENs as fast as
# the relay takes them, never reading an answer. The relay stops reading it once its answers
# for that peer fill their queue (512 KiB), so its memory stays flat, and its refusal lines are
# rate-limited (once 46 MB of log and 528 MB of memory).

if start_relay relay-flood 127.0.0.1:0 --token "$TOKEN" --deny '*' --keepalive 60s; then
    FLOOD_LOG=$RELAY_LOG
    flood=$(timeout 60 python3 "$ROOT/tests/interop/flood.py" "$RELAY" "$TOKEN" "$RELAY_PID" \
        2>&1 | tail -n 1)
    read -r word opens _ _ rss <<<"$flood"
    if [[ $word == sent && ${rss:-x} =~ ^[0-9]+$ ]]; then
        if ((rss < 20 * 1024)); then
            pass "OPEN flood without reading: relay RSS ${rss} KiB after $opens OPENs (< 20 MiB; 31 MiB before the fix)"
        else
            fail "OPEN flood without reading: relay RSS stays under 20 MiB" "$flood" "$FLOOD_LOG"
        fi
        warns=$(grep -c 'refused stream' "$FLOOD_LOG" || true)
        if ((warns <= 50)); then
            pass "OPEN flood: $warns refusal lines in the relay log for $opens OPENs"
        else
            fail "OPEN flood: refusal lines are rate-limited" "$warns lines" "$FLOOD_LOG"
        fi
        expect "OPEN flood: the relay still answers /healthz" \
            "$(body "http://$RELAY/healthz")" ok "$FLOOD_LOG"
    else
        fail_all "flood.py: $flood" "$FLOOD_LOG" \
            "OPEN flood without reading: relay RSS stays under 20 MiB" \
            "OPEN flood: refusal lines are rate-limited" "OPEN flood: the relay still answers /healthz"
    fi
else
    fail "OPEN flood: the flood relay started" "" "$RELAY_LOG"
fi

# ---------------------------------------------------------------------------------------------
# Secrets: no relay or client log holds the relay token or the -R proxy password.

proxy_basic=$(printf '%s' "$R_PROXY_USER:$R_PROXY_PASS" | base64)
tunnel_leaks=$(grep -lF -e "$TOKEN" -e "$R_PROXY_PASS" -e "$proxy_basic" \
    "$WORK"/relay-*.log "$WORK"/client-*.log 2>/dev/null || true)
if [[ -z $tunnel_leaks ]]; then
    pass "no relay or client log contains the relay token or the -R proxy password"
else
    fail "no relay or client log contains the relay token or the -R proxy password" \
        "found in: $(tr '\n' ' ' <<<"${tunnel_leaks//"$WORK"\//}")"
fi

if [[ -n ${TUNNEL_ALONE:-} ]]; then summary; fi
