#!/usr/bin/env bash
# Interop checks for SOCKS5 upstream hops (issue 13), with OpenSSH's own SOCKS5 server
# (`ssh -D` against the throwaway sshd) as the hop:
#   - `burrow proxy --upstream socks5://…`: curl -p -x and curl -x get the file, also by name;
#   - a mixed chain `--upstream http://burrow --upstream socks5://ssh-D`;
#   - `ssh` with ProxyCommand `burrow connect --via socks5://…`;
#   - `burrow client --via socks5://…` reaches its relay through `ssh -D`;
#   - `ALL_PROXY=socks5://… burrow proxy --upstream env`;
#   - a wrong SOCKS5 port answers 502, and no log holds the hop's credentials.
# Each check that goes through ssh -D also sees ssh open a dynamic-tcpip channel for it (ssh
# runs with -v), so a check cannot pass by going direct.
#
# run.sh sources this file after pools.sh (same counters, one summary line); it also runs
# alone: bash tests/interop/socks_upstream.sh  (BURROW_BIN and KEEP_WORK as for run.sh)

if [[ -z ${INTEROP_LIB:-} ]]; then
    set -euo pipefail
    # shellcheck source=tests/interop/lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
    SU_ALONE=1
    STARTED=$SECONDS
fi

[[ -n ${ORIGIN_PORT:-} ]] || start_origin
if [[ -z ${SSH_PORT:-} && -z ${SSHD_DIR:-} ]]; then start_sshd || true; fi

# ssh_socks_cmd PORT LOG: OpenSSH's SOCKS5 server (`ssh -N -D`) on 127.0.0.1:PORT, logged
# at debug1 so that each forwarded connection shows as a dynamic-tcpip channel.
ssh_socks_cmd() {
    ssh -F /dev/null -N -v -D "127.0.0.1:$1" -o ExitOnForwardFailure=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
        -o IdentitiesOnly=yes -o ConnectTimeout=10 -i "$SSHD_DIR/client_key" \
        -p "$SSH_PORT" "$SSH_USER@127.0.0.1" </dev/null >"$2" 2>&1 &
}

# su_channels: how many connections ssh -D has forwarded so far.
su_channels() {
    grep -c 'new dynamic-tcpip' "$SU_SSH_LOG" 2>/dev/null || true
}

# su_through NAME BEFORE: passes if ssh -D forwarded more than BEFORE connections (bounded).
su_through() {
    local name=$1 before=$2
    for _ in $(seq 50); do
        (($(su_channels) > before)) && {
            pass "$name: ssh -D carried it"
            return
        }
        sleep 0.1
    done
    fail "$name: ssh -D carried it" "ssh -D logged no new dynamic-tcpip channel" "$SU_SSH_LOG"
}

SU_NAMES=("burrow proxy --upstream socks5://ssh-D: curl -p -x gets the file"
    "burrow proxy --upstream socks5://ssh-D: curl -x gets the file"
    "burrow proxy --upstream socks5://ssh-D: CONNECT to localhost (name resolved by ssh)"
    "chain --upstream http://burrow --upstream socks5://ssh-D: curl -p -x gets the file"
    "ssh with ProxyCommand 'burrow connect --via socks5://ssh-D %h %p'"
    "burrow client --via socks5://ssh-D: curl through its -L gets the file"
    "ALL_PROXY=socks5://ssh-D burrow proxy --upstream env: curl -p -x gets the file"
    "burrow proxy --upstream socks5://closed-port: CONNECT answers 502")

if [[ -z ${SSH_PORT:-} ]]; then
    for name in "${SU_NAMES[@]}"; do fail "$name" "sshd did not start" "${DAEMON_LOG:-}"; done
elif ! spawn_daemon ssh-socks ssh_socks_cmd; then
    for name in "${SU_NAMES[@]}"; do fail "$name" "ssh -D did not listen" "$DAEMON_LOG"; done
else
    SU_SOCKS=127.0.0.1:$DAEMON_PORT
    SU_SSH_LOG=$DAEMON_LOG

    start_proxy su-proxy --upstream "socks5://$SU_SOCKS"
    SU_PROXY=$PROXY
    SU_PROXY_LOG=$PROXY_LOG
    n=$(su_channels)
    expect "${SU_NAMES[0]}" "$(body -p -x "http://$SU_PROXY" "$ORIGIN/hello.txt")" "$HELLO" \
        "$SU_PROXY_LOG" "$SU_SSH_LOG"
    su_through "${SU_NAMES[0]}" "$n"
    expect "${SU_NAMES[1]}" "$(body -x "http://$SU_PROXY" "$ORIGIN/hello.txt")" "$HELLO" \
        "$SU_PROXY_LOG" "$SU_SSH_LOG"
    # python's http.server listens on 127.0.0.1 only; ssh tries each address of the name.
    expect "${SU_NAMES[2]}" \
        "$(body -p -x "http://$SU_PROXY" "http://localhost:$ORIGIN_PORT/hello.txt")" "$HELLO" \
        "$SU_PROXY_LOG" "$SU_SSH_LOG"

    start_proxy su-http
    SU_HTTP=$PROXY
    SU_HTTP_LOG=$PROXY_LOG
    start_proxy su-mixed --upstream "http://$SU_HTTP" --upstream "socks5://$SU_SOCKS"
    SU_MIXED_LOG=$PROXY_LOG
    n=$(su_channels)
    expect "${SU_NAMES[3]}" "$(body -p -x "http://$PROXY" "$ORIGIN/hello.txt")" "$HELLO" \
        "$SU_MIXED_LOG" "$SU_HTTP_LOG" "$SU_SSH_LOG"
    su_through "${SU_NAMES[3]}" "$n"
    # The HTTP hop was asked for the SOCKS5 hop, not for the origin.
    if wait_log "$SU_HTTP_LOG" "-> 127\.0\.0\.1:${SU_SOCKS##*:} "; then
        pass "${SU_NAMES[3]}: the HTTP hop carried it to ssh -D"
    else
        fail "${SU_NAMES[3]}: the HTTP hop carried it to ssh -D" \
            "no conn line for $SU_SOCKS" "$SU_HTTP_LOG"
    fi

    n=$(su_channels)
    expect "${SU_NAMES[4]}" \
        "$(ssh_echo "$SSH_PORT" -o ProxyCommand="$BURROW connect --via socks5://$SU_SOCKS %h %p")" \
        burrow-ssh-ok "$SU_SSH_LOG"
    su_through "${SU_NAMES[4]}" "$n"

    SU_TOKEN="tok-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
    if start_relay su-relay 127.0.0.1:0 --token "$SU_TOKEN"; then
        SU_RELAY_LOG=$RELAY_LOG
        SU_CLIENT_LOG="$WORK/su-client.log"
        n=$(su_channels)
        "$BURROW" client "ws://$RELAY/burrow" --token "$SU_TOKEN" --via "socks5://$SU_SOCKS" \
            -L "127.0.0.1:0:127.0.0.1:$ORIGIN_PORT" </dev/null >"$SU_CLIENT_LOG" 2>&1 &
        SU_CLIENT_PID=$!
        PIDS+=("$SU_CLIENT_PID")
        if line=$(wait_match "$SU_CLIENT_LOG" '^listening L [0-9.]+:[0-9]+' "$SU_CLIENT_PID") &&
            wait_match "$SU_CLIENT_LOG" '^connected$' "$SU_CLIENT_PID" >/dev/null; then
            expect "${SU_NAMES[5]}" "$(body "http://${line##* }/hello.txt")" "$HELLO" \
                "$SU_CLIENT_LOG" "$SU_RELAY_LOG" "$SU_SSH_LOG"
            su_through "${SU_NAMES[5]}" "$n"
        else
            fail "${SU_NAMES[5]}" "the client did not connect" "$SU_CLIENT_LOG" "$SU_SSH_LOG"
        fi
    else
        fail "${SU_NAMES[5]}" "burrow server did not report its address" "$RELAY_LOG"
    fi

    ALL_PROXY="socks5://$SU_SOCKS" start_proxy su-env --upstream env
    SU_ENV_LOG=$PROXY_LOG
    n=$(su_channels)
    expect "${SU_NAMES[6]}" "$(body -p -x "http://$PROXY" "$ORIGIN/hello.txt")" "$HELLO" \
        "$SU_ENV_LOG" "$SU_SSH_LOG"
    su_through "${SU_NAMES[6]}" "$n"

    start_proxy su-closed --upstream "socks5://su-user:su-secret-pw@127.0.0.1:$CLOSED_PORT"
    SU_CLOSED_LOG=$PROXY_LOG
    expect "${SU_NAMES[7]}" \
        "$(connect_status -p -x "http://$PROXY" "$ORIGIN/hello.txt")" 502 "$SU_CLOSED_LOG"
    if grep -q 'su-secret-pw' "$SU_CLOSED_LOG"; then
        fail "no log holds the SOCKS5 hop's password" "found in ${SU_CLOSED_LOG##*/}"
    else
        pass "no log holds the SOCKS5 hop's password"
    fi
fi

if [[ -n ${SU_ALONE:-} ]]; then summary; fi
