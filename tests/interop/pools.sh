#!/usr/bin/env bash
# Interop proof for pools, several relays and lame duck (issue 12): rolling restarts under load
# behind a real load balancer lose nothing.
#
#   loadgen.py ──> HAProxy (TCP, httpchk GET /readyz on each relay's listener, retries 3,
#                  │        option redispatch)
#                  ├─> relay 1  127.0.0.2:P ─┐   each client holds a session to both relays and
#                  └─> relay 2  127.0.0.3:P ─┤   binds -R P there, in pool "web"
#                                            ├─> client 1 ──> app1 (pool_origin.py)
#                                            └─> client 2 ──> app2 (pool_origin.py)
#
# While loadgen.py makes visitor requests through HAProxy at a steady rate (short exchanges,
# every 50th a 3 MiB download or upload checked by sha256), the test restarts, one at a time,
# each waiting for readiness (relay /readyz, both clients' /readyz, HAProxy's view from its
# stats socket) and then letting the load run a few seconds: relay 1 (SIGTERM, a fresh one on
# the same address), relay 2, client 1, client 2; then it SIGKILLs client 1. The verdict:
# zero failed requests across the graceful restarts, every body intact, both members carried
# visitors, and after the SIGKILL only requests in flight at that instant (or started within
# 1 s of it) may fail; loadgen.py's report prints the counts and every failure. Each relay's
# lame duck is checked on its own too: /readyz 503 at once, HAProxy marks it DOWN, and HAProxy
# had to retry no visitor while the relay stopped (it hides such refusals by redispatching).
# The relays listen on 127.0.0.2 and 127.0.0.3 so that both can bind the same pool port P.
#
# Needs Debian's haproxy (`.ci/run` installs it); without it the check fails and says so.
# run.sh sources this file after config.sh (same counters, one summary line); it also runs
# alone: bash tests/interop/pools.sh  (BURROW_BIN and KEEP_WORK as for run.sh;
# POOLS_RATE=N for another request rate than 200/s)

if [[ -z ${INTEROP_LIB:-} ]]; then
    set -euo pipefail
    # shellcheck source=tests/interop/lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
    POOLS_ALONE=1
    STARTED=$SECONDS
fi

PL="$WORK/pools"
mkdir -p "$PL"
PL_TOKEN="pool-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
PL_IPS=(127.0.0.2 127.0.0.3) # relay N listens on PL_IPS[N-1]
PL_CLIENTS=2
PL_RATE=${POOLS_RATE:-200}
PL_BIG_SIZE=$((3 * 1024 * 1024))
PL_BIG_EVERY=50
PL_SEED="pool-$RANDOM"
PL_LAME_DUCK=4s   # > HAProxy's fall 3 x inter 500ms (1.5 s), with room for a slow check
PL_LOAD_SECS=3    # load between steps (load, not synchronisation)
PL_AFTER_KILL=1   # requests started this long after the SIGKILL must not fail
PL_EVENTS="$PL/events"
: >"$PL_EVENTS"

# Per relay N (1-based): PL_RELAY_ADDR[N] (ip:port, kept across restarts), PL_RELAY_PID[N],
# PL_RELAY_LOG[N]; per client N: PL_CLIENT_PID[N], PL_STATUS[N] (its --status ip:port),
# PL_CLIENT_LOG[N]; PL_APP_PORT[N] is the port of app N, which client N exposes.
# PL_RELAY_RUNS[N] and PL_CLIENT_RUNS[N] count the starts (each start logs to its own file).
declare -a PL_RELAY_ADDR PL_RELAY_PID PL_RELAY_LOG PL_CLIENT_PID PL_STATUS PL_CLIENT_LOG \
    PL_APP_PORT PL_RELAY_RUNS PL_CLIENT_RUNS

# pl_mark LABEL: notes the instant in the events file (loadgen.py report reads it) and says so.
pl_mark() {
    echo "$(date +%s.%N) $1" >>"$PL_EVENTS"
    echo "# pools: $(date +%T.%3N) $1"
}

# pl_code URL: the HTTP status of a GET (000 when none), within 2 s.
pl_code() {
    curl -q -sS --max-time 2 -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true
}

# pl_wait_code URL WANT SECS: true once a GET of URL answers WANT (bounded).
pl_wait_code() {
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        [[ $(pl_code "$1") == "$2" ]] && return 0
        sleep 0.1
    done
    return 1
}

# pl_pool_port: a port free on every relay address (the pool port P both relays bind).
pl_pool_port() {
    python3 - "${PL_IPS[@]}" <<'EOF'
import socket, sys
for _ in range(50):
    first = socket.socket()
    first.bind((sys.argv[1], 0))
    port, held = first.getsockname()[1], [first]
    try:
        for ip in sys.argv[2:]:
            s = socket.socket()
            held.append(s)
            s.bind((ip, port))
    except OSError:
        continue
    finally:
        for s in held:
            s.close()
    print(port)
    break
EOF
}

# pl_app N: app N (pool_origin.py), its port in PL_APP_PORT[N].
pl_app() {
    local log="$PL/app$1.log" line pid
    python3 "$ROOT/tests/interop/pool_origin.py" "app$1" 0 "$PL_BIG_SIZE" "$PL_SEED" \
        </dev/null >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    line=$(wait_match "$log" 'listening on 127\.0\.0\.1:[0-9]+' "$pid") || return 1
    PL_APP_PORT[$1]=${line##*:}
}

# pl_relay N: starts relay N on PL_IPS[N-1], on its old port after a restart (port 0 the first
# time); waits for its `listening` line. Each start logs to a file of its own.
pl_relay() {
    local n=$1 listen line
    listen=${PL_RELAY_ADDR[$n]:-${PL_IPS[$((n - 1))]}:0}
    PL_RELAY_RUNS[$n]=$((${PL_RELAY_RUNS[$n]:-0} + 1))
    PL_RELAY_LOG[$n]="$PL/relay$n-${PL_RELAY_RUNS[$n]}.log"
    "$BURROW" server --listen "$listen" --token "$PL_TOKEN" --allow-ports "$PL_PORT" \
        --lame-duck "$PL_LAME_DUCK" --grace 3s --drain-timeout 10s \
        </dev/null >"${PL_RELAY_LOG[$n]}" 2>&1 &
    PL_RELAY_PID[$n]=$!
    PIDS+=("${PL_RELAY_PID[$n]}")
    line=$(wait_match "${PL_RELAY_LOG[$n]}" 'relay listening on [0-9.]+:[0-9]+' \
        "${PL_RELAY_PID[$n]}") || return 1
    PL_RELAY_ADDR[$n]=${line##* }
}

# pl_client N: starts client N with both relay URLs, in pool "web", exposing app N on P;
# waits for its status address (not for readiness: see pl_ready).
pl_client() {
    local n=$1 line
    PL_CLIENT_RUNS[$n]=$((${PL_CLIENT_RUNS[$n]:-0} + 1))
    PL_CLIENT_LOG[$n]="$PL/client$n-${PL_CLIENT_RUNS[$n]}.log"
    "$BURROW" client "ws://${PL_RELAY_ADDR[1]}/burrow" "ws://${PL_RELAY_ADDR[2]}/burrow" \
        --token "$PL_TOKEN" --pool web -R "$PL_PORT:127.0.0.1:${PL_APP_PORT[$n]}" \
        --status 127.0.0.1:0 --ready all --drain-timeout 10s \
        </dev/null >"${PL_CLIENT_LOG[$n]}" 2>&1 &
    PL_CLIENT_PID[$n]=$!
    PIDS+=("${PL_CLIENT_PID[$n]}")
    line=$(wait_match "${PL_CLIENT_LOG[$n]}" 'status on http://127\.0\.0\.1:[0-9]+/' \
        "${PL_CLIENT_PID[$n]}") || return 1
    PL_STATUS[$n]=${line#status on http://}
    PL_STATUS[$n]=${PL_STATUS[$n]%/}
}

# pl_clients_ready SECS: true once every client's /readyz answers 200 (connected to both
# relays with P bound on each: --ready all).
pl_clients_ready() {
    local deadline=$((SECONDS + $1)) n
    for ((n = 1; n <= PL_CLIENTS; n++)); do
        pl_wait_code "http://${PL_STATUS[$n]}/readyz" 200 $((deadline - SECONDS)) || return 1
    done
}

# pl_stat: HAProxy's `show stat` (CSV) from its stats socket.
pl_stat() {
    python3 - "$PL/haproxy.sock" <<'EOF' 2>/dev/null || true
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
out = b""
while chunk := s.recv(65536):
    out += chunk
sys.stdout.write(out.decode())
EOF
}

# pl_stat_field SERVER FIELD: one field of the `relays` backend's SERVER row (by header name).
pl_stat_field() {
    pl_stat | awk -F, -v srv="$1" -v field="$2" '
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) col[$i] = i; next }
        $1 == "relays" && $2 == srv { print $col[field] }'
}

# pl_retried: how many visitor connections HAProxy could not place on the first try so far
# (connect errors + retries + redispatches, all servers of the `relays` backend).
pl_retried() {
    pl_stat | awk -F, '
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) col[$i] = i; next }
        $1 == "relays" && $2 == "BACKEND" { print $col["econ"] + $col["wretr"] + $col["wredis"] }'
}

# pl_wait_hap SERVER STATE SECS: true once HAProxy reports SERVER in STATE (UP or DOWN; not
# the transitional "UP 1/3", "DOWN 1/2").
pl_wait_hap() {
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        [[ $(pl_stat_field "$1" status) == "$2" ]] && return 0
        sleep 0.1
    done
    return 1
}

# pl_load SECS: the load runs on its own; this only lets time pass (not a synchronisation).
pl_load() {
    sleep "$1"
}

# pl_restart_relay N: SIGTERM, lame duck seen by HAProxy, exit, a fresh relay on the same
# address, both clients bound again, HAProxy has it UP; then some load.
pl_restart_relay() {
    local n=$1 pid=${PL_RELAY_PID[$1]} addr=${PL_RELAY_ADDR[$1]} log=${PL_RELAY_LOG[$1]} retried
    retried=$(pl_retried)
    pl_mark "relay$n SIGTERM"
    kill -TERM "$pid"
    if pl_wait_code "http://$addr/readyz" 503 5; then
        pass "pools: relay $n answers /readyz 503 at once after SIGTERM (lame duck)"
    else
        fail "pools: relay $n answers /readyz 503 at once after SIGTERM (lame duck)" \
            "/readyz answered $(pl_code "http://$addr/readyz")" "$log"
    fi
    if pl_wait_hap "relay$n" DOWN 10; then
        pass "pools: HAProxy marks relay $n DOWN by its /readyz"
    else
        fail "pools: HAProxy marks relay $n DOWN by its /readyz" \
            "HAProxy status '$(pl_stat_field "relay$n" status)'" "$log" "$PL/haproxy.log"
    fi
    # Not a check (it depends on timing): whether the relay was still in its lame duck then.
    pl_mark "relay$n DOWN at HAProxy; relay /readyz now $(pl_code "http://$addr/readyz")"
    if wait_exit "$pid" 25 && ((EXIT_RC == 0)); then
        pass "pools: relay $n exits 0 after its lame duck and drain"
    else
        fail "pools: relay $n exits 0 after its lame duck and drain" \
            "$(running "$pid" && echo "still running after 25 s" || echo "exit $EXIT_RC")" "$log"
        kill -KILL "$pid" 2>/dev/null || true
        wait_exit "$pid" 5 || true
    fi
    pl_mark "relay$n exited"
    # The lame duck at work: HAProxy stopped sending visitors to the relay before it stopped
    # accepting, so none had to be retried elsewhere (without it, every visitor sent there in
    # between is refused and redispatched: HAProxy hides that, this check does not).
    retried=$(($(pl_retried) - retried))
    if ((retried == 0)); then
        pass "pools: relay $n stopped accepting only after HAProxy stopped sending (0 retried)"
    else
        fail "pools: relay $n stopped accepting only after HAProxy stopped sending (0 retried)" \
            "HAProxy retried or redispatched $retried visitor connections" "$PL/haproxy.log"
    fi
    if ! pl_relay "$n"; then
        fail "pools: relay $n restarts on $addr" "it did not report its address" \
            "${PL_RELAY_LOG[$n]}"
        return 1
    fi
    pl_mark "relay$n started again"
    if pl_wait_code "http://$addr/readyz" 200 10 && pl_clients_ready 30 &&
        pl_wait_hap "relay$n" UP 15; then
        pass "pools: relay $n restarted: both clients bound again, HAProxy has it UP"
    else
        fail "pools: relay $n restarted: both clients bound again, HAProxy has it UP" \
            "relay /readyz $(pl_code "http://$addr/readyz"), client /readyz $(pl_code \
                "http://${PL_STATUS[1]}/readyz") $(pl_code "http://${PL_STATUS[2]}/readyz"),\
 HAProxy '$(pl_stat_field "relay$n" status)'" "${PL_RELAY_LOG[$n]}" "${PL_CLIENT_LOG[1]}" \
            "${PL_CLIENT_LOG[2]}"
        return 1
    fi
    pl_mark "relay$n UP at HAProxy"
    pl_load "$PL_LOAD_SECS"
}

# pl_restart_client N: SIGTERM (GO_AWAY to both relays, its streams finish), exit, a fresh
# client, ready again; then some load.
pl_restart_client() {
    local n=$1 pid=${PL_CLIENT_PID[$1]} log=${PL_CLIENT_LOG[$1]}
    pl_mark "client$n SIGTERM"
    kill -TERM "$pid"
    if wait_exit "$pid" 20 && ((EXIT_RC == 0)); then
        pass "pools: client $n exits 0 after SIGTERM"
    else
        fail "pools: client $n exits 0 after SIGTERM" \
            "$(running "$pid" && echo "still running after 20 s" || echo "exit $EXIT_RC")" "$log"
        kill -KILL "$pid" 2>/dev/null || true
        wait_exit "$pid" 5 || true
    fi
    pl_mark "client$n exited"
    if pl_client "$n" && pl_wait_code "http://${PL_STATUS[$n]}/readyz" 200 30; then
        pass "pools: client $n restarted and ready (both relays, P bound)"
    else
        fail "pools: client $n restarted and ready (both relays, P bound)" \
            "/readyz $(pl_code "http://${PL_STATUS[$n]:-none}/readyz")" "${PL_CLIENT_LOG[$n]}"
        return 1
    fi
    pl_mark "client$n ready"
    pl_load "$PL_LOAD_SECS"
}

haproxy_cmd() {
    cat >"$PL/haproxy.cfg" <<EOF
global
    maxconn 4096
    stats socket $PL/haproxy.sock mode 600 level admin
    log stdout format iso local0

defaults
    mode tcp
    log global
    option tcplog
    option dontlog-normal
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s
    retries 3
    option redispatch 1

frontend visitors
    bind 127.0.0.1:$1
    default_backend relays

backend relays
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    option log-health-checks
    default-server inter 500ms fall 3 rise 2
    server relay1 ${PL_IPS[0]}:$PL_PORT check port ${PL_RELAY_ADDR[1]##*:}
    server relay2 ${PL_IPS[1]}:$PL_PORT check port ${PL_RELAY_ADDR[2]##*:}
EOF
    # Its log (health checks, state changes, failed connections) on stdout; stderr repeats the
    # warnings, so it goes to a file of its own.
    "$PL_HAPROXY" -db -f "$PL/haproxy.cfg" </dev/null >"$2" 2>"$PL/haproxy.err" &
}

# pl_setup: apps, relays, clients, HAProxy; every piece ready. False (after a failed check)
# when something did not come up.
pl_setup() {
    local n
    PL_PORT=$(pl_pool_port)
    [[ -n $PL_PORT ]] || { fail "pools: setup" "no port free on ${PL_IPS[*]}"; return 1; }
    for ((n = 1; n <= PL_CLIENTS; n++)); do
        pl_app "$n" || { fail "pools: setup" "app $n did not start" "$PL/app$n.log"; return 1; }
    done
    for n in 1 2; do
        pl_relay "$n" || {
            fail "pools: setup" "relay $n did not start" "${PL_RELAY_LOG[$n]}"
            return 1
        }
    done
    for ((n = 1; n <= PL_CLIENTS; n++)); do
        pl_client "$n" || {
            fail "pools: setup" "client $n did not start" "${PL_CLIENT_LOG[$n]}"
            return 1
        }
    done
    if pl_clients_ready 30; then
        pass "pools: two clients in pool web, each bound on both relays (/readyz 200)"
    else
        fail "pools: two clients in pool web, each bound on both relays (/readyz 200)" \
            "client /readyz $(pl_code "http://${PL_STATUS[1]}/readyz") $(pl_code \
                "http://${PL_STATUS[2]}/readyz")" "${PL_CLIENT_LOG[1]}" "${PL_CLIENT_LOG[2]}" \
            "${PL_RELAY_LOG[1]}" "${PL_RELAY_LOG[2]}"
        return 1
    fi
    if ! spawn_daemon pools/haproxy haproxy_cmd; then
        fail "pools: setup" "haproxy did not start" "$PL/haproxy.err"
        return 1
    fi
    PL_LB=127.0.0.1:$DAEMON_PORT
    if pl_wait_hap relay1 UP 15 && pl_wait_hap relay2 UP 15; then
        pass "pools: HAProxy sees both relays UP by their /readyz"
    else
        fail "pools: HAProxy sees both relays UP by their /readyz" \
            "relay1 '$(pl_stat_field relay1 status)', relay2 '$(pl_stat_field relay2 status)'" \
            "$PL/haproxy.log" "${PL_RELAY_LOG[1]}"
        return 1
    fi
}

# pl_verdict: stops the load, reads loadgen.py's report, turns it into checks.
pl_verdict() {
    local out v
    kill -TERM "$PL_LOADGEN_PID"
    if ! wait_exit "$PL_LOADGEN_PID" 60 || ((EXIT_RC != 0)); then
        fail "pools: the load generator finished" "it did not write its results" "$PL/loadgen.log"
        return 1
    fi
    tail -n 1 "$PL/loadgen.log" | sed 's/^/# pools: /'
    out=$(python3 "$ROOT/tests/interop/loadgen.py" report "$PL/results.jsonl" \
        --events "$PL_EVENTS" --after "$PL_AFTER_KILL" --failures "$PL/failures.txt" 2>&1) || {
        fail "pools: the load report" "$out"
        return 1
    }
    grep -v '^verdict ' <<<"$out" | sed 's/^/# pools: /'
    v=$(grep '^verdict ' <<<"$out")
    # verdict key=value ... -> pv_key=value
    local kv
    pv_total=0 pv_graceful=0 pv_graceful_failed=0 pv_big=0 pv_big_ok=0 pv_corrupt=0
    pv_big_graceful=0 pv_big_graceful_ok=0 pv_late=0 pv_late_failed=0 pv_inflight_failed=0
    pv_window_failed=0 pv_replicas=0
    for kv in ${v#verdict }; do
        printf -v "pv_${kv%%=*}" '%s' "${kv#*=}"
    done
    local hap
    hap=$(pl_stat | awk -F, '
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) col[$i] = i; next }
        $1 == "relays" && $2 ~ /^relay/ {
            printf "%s %s connections, %s connect errors, %s retries, %s redispatches; ",
                $2, $col["stot"], $col["econ"], $col["wretr"], $col["wredis"] }')
    echo "# pools: HAProxy: ${hap%; }"

    if ((pv_total > 0 && pv_graceful > 0 && pv_graceful_failed == 0)); then
        pass "pools: zero failed requests across the rolling restarts ($pv_graceful requests)"
    else
        fail "pools: zero failed requests across the rolling restarts ($pv_graceful requests)" \
            "$pv_graceful_failed failed: $(head -n 3 "$PL/failures.txt" | tr '\n' '|')" \
            "$PL/haproxy.log"
    fi
    if ((pv_big > 0 && pv_corrupt == 0 && pv_big_graceful_ok == pv_big_graceful)); then
        pass "pools: every multi-MB body intact (sha256): $pv_big_ok of $pv_big verified"
    else
        fail "pools: every multi-MB body intact (sha256): $pv_big_ok of $pv_big verified" \
            "$pv_corrupt corrupt, $((pv_big_graceful - pv_big_graceful_ok)) failed before the kill"
    fi
    if ((pv_late > 0 && pv_late_failed == 0)); then
        pass "pools: after the SIGKILL none started >= ${PL_AFTER_KILL} s later failed\
 ($pv_inflight_failed in flight and $pv_window_failed in the first second did)"
    else
        fail "pools: after the SIGKILL none started >= ${PL_AFTER_KILL} s later failed" \
            "$pv_late_failed of $pv_late failed"
    fi
    if ((pv_replicas == PL_CLIENTS)); then
        pass "pools: both pool members carried visitors"
    else
        fail "pools: both pool members carried visitors" "$pv_replicas replicas answered"
    fi
}

# pl_steps: the rolling restarts, then the SIGKILL; false when a step could not go on.
pl_steps() {
    local n
    pl_load "$PL_LOAD_SECS"
    for n in 1 2; do
        pl_restart_relay "$n" || return 1
    done
    for ((n = 1; n <= PL_CLIENTS; n++)); do
        pl_restart_client "$n" || return 1
    done
    pl_mark calm
    pl_load "$PL_LOAD_SECS"
    # Out of the job table first, so bash does not report "Killed" in the middle of the output.
    disown "${PL_CLIENT_PID[1]}"
    pl_mark kill
    kill -KILL "${PL_CLIENT_PID[1]}"
    pl_load $((PL_AFTER_KILL + 3))
}

pl_run() {
    pl_setup || return 1
    python3 "$ROOT/tests/interop/loadgen.py" run --target "$PL_LB" --out "$PL/results.jsonl" \
        --rate "$PL_RATE" --big-every "$PL_BIG_EVERY" --big-size "$PL_BIG_SIZE" \
        --seed "$PL_SEED" --max-seconds 200 </dev/null >"$PL/loadgen.log" 2>&1 &
    PL_LOADGEN_PID=$!
    PIDS+=("$PL_LOADGEN_PID")
    wait_match "$PL/loadgen.log" '^loadgen running' "$PL_LOADGEN_PID" >/dev/null ||
        { fail "pools: setup" "the load generator did not start" "$PL/loadgen.log"; return 1; }
    pl_mark "load started"
    if ! pl_steps; then
        # No verdict without every step, but the counts so far say what the load saw.
        kill -TERM "$PL_LOADGEN_PID"
        wait_exit "$PL_LOADGEN_PID" 60 || true
        tail -n 1 "$PL/loadgen.log" | sed 's/^/# pools: /'
        return 1
    fi
    pl_verdict
}

# Debian puts it in /usr/sbin, which a user's PATH may lack.
PL_HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
if [[ -x $PL_HAPROXY ]]; then
    pl_run || true
else
    fail "pools: rolling restarts behind HAProxy" \
        "haproxy is not installed: apt-get install haproxy (.ci/run does)"
fi

if [[ -n ${POOLS_ALONE:-} ]]; then summary; fi
