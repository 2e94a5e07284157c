#!/usr/bin/env bash
# Interop proof for UDP through the tunnel (issue 13): `dig` (Debian bind9-dnsutils) asks a
# real DNS server, dnsmasq on loopback, through `-L udp:` and through a `-R udp:` port of the
# relay:
#
#   dig ──> client -L udp:127.0.0.1:0:127.0.0.1:D ══ tunnel ══> relay ──> dnsmasq :D
#   dig ──> relay -R udp port ══ tunnel ══> client ──> dnsmasq :D
#
# dnsmasq answers example.test with 10.1.2.3 from its own table (no upstream, no files). The
# checks: one answer, twenty concurrent digs (twenty flows) each answered, the same through
# -R, a flow's end logged once it is idle (--udp-idle-timeout 1s), and the relay's /metrics
# counting the flows.
#
# Needs dig and dnsmasq (`.ci/run` installs bind9-dnsutils and dnsmasq-base); without them the
# checks fail and say so. run.sh sources this file (same counters, one summary line); it also
# runs alone: bash tests/interop/udp.sh  (BURROW_BIN and KEEP_WORK as for run.sh)

if [[ -z ${INTEROP_LIB:-} ]]; then
    set -euo pipefail
    # shellcheck source=tests/interop/lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
    UDP_ALONE=1
    STARTED=$SECONDS
fi

UD_TOKEN="udp-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
UD_NAME=example.test
UD_ADDR=10.1.2.3
# Debian puts dnsmasq in /usr/sbin, which a user's PATH may lack.
UD_DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)

# ud_dnsmasq_cmd PORT LOG: dnsmasq in the foreground on 127.0.0.1:PORT (UDP and TCP), with
# one name of its own and nothing else (no resolv.conf, no hosts file, no config file).
ud_dnsmasq_cmd() {
    "$UD_DNSMASQ" --no-daemon --port "$1" --listen-address 127.0.0.1 --bind-interfaces \
        --no-resolv --no-hosts --conf-file=/dev/null --log-queries --log-facility=- \
        --user="$(id -un)" --group="$(id -gn)" \
        --address="/$UD_NAME/$UD_ADDR" </dev/null >"$2" 2>&1 &
}

# ud_dig SERVER PORT: the A records dig got for the test name (or dig's error), within 10 s.
ud_dig() {
    timeout 10 dig +short +time=3 +tries=3 @"$1" -p "$2" "$UD_NAME" A 2>&1 || true
}

# ud_client NAME ARGS...: `burrow client ARGS` in the background, its state lines and log in
# $WORK/NAME.log. Sets UD_CLIENT_PID and UD_CLIENT_LOG.
ud_client() {
    local name=$1
    shift
    UD_CLIENT_LOG="$WORK/$name.log"
    RUST_LOG=info "$BURROW" client "$@" </dev/null >"$UD_CLIENT_LOG" 2>&1 &
    UD_CLIENT_PID=$!
    PIDS+=("$UD_CLIENT_PID")
}

ud_checks() {
    local line port lport rport i out ok metrics
    if ! spawn_daemon dnsmasq ud_dnsmasq_cmd; then
        fail "udp: dnsmasq starts" "it did not listen" "$WORK/dnsmasq.log"
        return 1
    fi
    port=$DAEMON_PORT
    expect "udp: dig asks dnsmasq directly" "$(ud_dig 127.0.0.1 "$port")" "$UD_ADDR" \
        "$DAEMON_LOG"
    # The relay keeps its flows for the default 60 s: the client's 1 s ends each flow first, so
    # its line says "idle" (with both at 1 s, either side's timer may fire first).
    if ! start_relay relay-udp 127.0.0.1:0 --token "$UD_TOKEN"; then
        fail "udp: relay starts" "no address in its log" "$RELAY_LOG"
        return 1
    fi
    local relay=$RELAY relay_log=$RELAY_LOG
    ud_client client-udp "ws://$relay/burrow" --token "$UD_TOKEN" --udp-idle-timeout 1s \
        -L "udp:127.0.0.1:0:127.0.0.1:$port" -R "udp:127.0.0.1:0:127.0.0.1:$port"
    line=$(wait_match "$UD_CLIENT_LOG" '^listening L 127\.0\.0\.1:[0-9]+' "$UD_CLIENT_PID") ||
        { fail "udp: client listens on -L udp" "no listening line" "$UD_CLIENT_LOG"; return 1; }
    lport=${line##*:}
    line=$(wait_match "$UD_CLIENT_LOG" '^bound R 127\.0\.0\.1:[0-9]+' "$UD_CLIENT_PID") ||
        { fail "udp: relay binds -R udp" "no bound line" "$UD_CLIENT_LOG" "$relay_log"; return 1; }
    rport=${line##*:}

    expect "udp: dig through -L udp: gets dnsmasq's answer" \
        "$(ud_dig 127.0.0.1 "$lport")" "$UD_ADDR" "$UD_CLIENT_LOG" "$relay_log"

    # Twenty digs at once: twenty source ports, twenty flows, each its own answer.
    local digs=()
    for i in $(seq 20); do
        ud_dig 127.0.0.1 "$lport" >"$WORK/udp-dig-$i.out" &
        digs+=($!)
    done
    # Each dig ends within its own 10 s timeout.
    for i in "${digs[@]}"; do wait "$i" || true; done
    ok=0
    for i in $(seq 20); do
        out=$(cat "$WORK/udp-dig-$i.out")
        [[ $out == "$UD_ADDR" ]] && ok=$((ok + 1))
    done
    expect "udp: 20 concurrent digs through -L udp: all answered" "$ok" 20 \
        "$UD_CLIENT_LOG" "$relay_log"

    expect "udp: dig at the relay's -R udp: port gets dnsmasq's answer (from the client)" \
        "$(ud_dig 127.0.0.1 "$rport")" "$UD_ADDR" "$UD_CLIENT_LOG" "$relay_log"

    # The idle timeout ends each flow, with one line saying so.
    if wait_match "$UD_CLIENT_LOG" 'local udp 127\.0\.0\.1:[0-9]+: flow [0-9]+ from 127\.0\.0\.1:[0-9]+ to 127\.0\.0\.1:[0-9]+ sent=1 received=1 dropped=0 [0-9.]+s idle' \
        "$UD_CLIENT_PID" 1 5 >/dev/null; then
        pass "udp: an idle flow ends with one log line (sent, received, dropped, why)"
    else
        fail "udp: an idle flow ends with one log line (sent, received, dropped, why)" \
            "no such line" "$UD_CLIENT_LOG"
    fi

    metrics=$(curl -q -sS --max-time 5 -H "Authorization: Bearer $UD_TOKEN" \
        "http://$relay/metrics" 2>&1 || true)
    line=$(grep -E '^burrow_udp_flows_total [0-9]+' <<<"$metrics" || true)
    if [[ -n $line && ${line##* } -ge 22 ]]; then
        pass "udp: the relay's /metrics counts the flows ($line)"
    else
        fail "udp: the relay's /metrics counts the flows" "want >= 22, got '$line'" "$relay_log"
    fi
}

if ! command -v dig >/dev/null; then
    fail "udp: dig through the tunnel" \
        "dig is not installed: apt-get install bind9-dnsutils (.ci/run does)"
elif [[ ! -x $UD_DNSMASQ ]]; then
    fail "udp: dig through the tunnel" \
        "dnsmasq is not installed: apt-get install dnsmasq-base (.ci/run does)"
else
    ud_checks || true
fi

if [[ -n ${UDP_ALONE:-} ]]; then summary; fi
