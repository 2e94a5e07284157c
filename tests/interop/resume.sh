#!/usr/bin/env bash
# Interop checks for resumable sessions (issue 10): the link between `burrow client` and
# `burrow server` goes through tests/interop/cutter.py, a TCP forwarder that cuts it on purpose,
# the kinds in turn: FIN, RST and a silent blackhole (the client, with --keepalive 1s, declares
# it dead after 3 s). Streams must survive every cut:
#   - 256 MiB downloaded with curl through -R (curl -> relay port -> client -> origin) while
#     the link is cut 20 times: sha256 intact, curl exit 0, one `connected; resumed N streams`
#     per cut, no stream reset, and the relay's burrow_resumes_total grows by the cuts;
#   - the same through -L (curl -> client -L port -> relay -> origin);
#   - ssh with `burrow client -L stdio:%h:%p` as ProxyCommand keeps its shell (same PID)
#     across a FIN, an RST and a blackhole cut;
#   - with --no-resume a cut mid-download resets it (curl fails): the switch works.
# Cuts come at byte counts (cutter --cut-every), so they land mid-transfer on any machine.
#
# run.sh sources this file after tunnel.sh (same counters, one summary line); it also runs
# alone: bash tests/interop/resume.sh  (BURROW_BIN and KEEP_WORK as for run.sh)

if [[ -z ${INTEROP_LIB:-} ]]; then
    set -euo pipefail
    # shellcheck source=tests/interop/lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
    RESUME_ALONE=1
    STARTED=$SECONDS
fi

[[ -n ${ORIGIN_PORT:-} ]] || start_origin

RS_TOKEN="tok-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
RS_CUTS=20
RS_EVERY=$((12 * 1024 * 1024)) # 20 cuts x 12 MiB: the last lands before the 256 MiB are through
RS_SIZE=$((256 * 1024 * 1024))
RS_CURL_SECS=90 # 20 cuts, 7 of them blackholes of 3 s: about 30 s on a debug build
RS_OUT="$WORK/resume-download.bin"
head -c "$RS_SIZE" /dev/urandom >"$WWW/big256.bin"
RS_SHA=$(sha256sum "$WWW/big256.bin" | cut -d' ' -f1)

# ---------------------------------------------------------------------------------------------
# Helpers (rs_ names: tunnel.sh's helpers may or may not be defined).

# rs_relay NAME: `burrow server` on 127.0.0.1:0 with the token (lib.sh's start_relay); sets
# RS_RELAY, RS_RELAY_PID, RS_RELAY_LOG.
rs_relay() {
    start_relay "resume-$1" 127.0.0.1:0 --token "$RS_TOKEN" || {
        RS_RELAY_LOG=$RELAY_LOG
        return 1
    }
    RS_RELAY=$RELAY RS_RELAY_PID=$RELAY_PID RS_RELAY_LOG=$RELAY_LOG
}

# rs_cutter NAME [CUTTER-ARGS...]: cutter.py in front of the relay; sets CUT_URL (the ws://
# URL for the client), CUT_PID and CUT_LOG.
rs_cutter() {
    local name=$1 line
    shift
    CUT_LOG="$WORK/resume-$name.log"
    python3 "$ROOT/tests/interop/cutter.py" "${RS_RELAY##*:}" "$@" </dev/null >"$CUT_LOG" 2>&1 &
    CUT_PID=$!
    PIDS+=("$CUT_PID")
    line=$(wait_match "$CUT_LOG" 'cutter listening on 127\.0\.0\.1:[0-9]+' "$CUT_PID") || return 1
    CUT_URL="ws://${line##* }/burrow"
}

# rs_client NAME ARGS...: `burrow client CUT_URL --token --keepalive 1s ARGS`, state lines and
# log in one file; waits for `connected` and, with -R, `bound R`, with -L, `listening L`.
# Sets RS_CLIENT_PID, RS_CLIENT_LOG and RS_ADDR (the bound or listening address).
rs_client() {
    local name=$1 line
    shift
    RS_CLIENT_LOG="$WORK/resume-$name.log"
    "$BURROW" client "$CUT_URL" --token "$RS_TOKEN" --keepalive 1s --status 127.0.0.1:0 "$@" \
        </dev/null >"$RS_CLIENT_LOG" 2>&1 &
    RS_CLIENT_PID=$!
    PIDS+=("$RS_CLIENT_PID")
    line=$(wait_match "$RS_CLIENT_LOG" 'status on http://127\.0\.0\.1:[0-9]+/' "$RS_CLIENT_PID") ||
        return 1
    RS_STATUS=${line#status on http://}
    RS_STATUS=${RS_STATUS%/}
    if [[ $* == *"-R "* ]]; then
        line=$(wait_match "$RS_CLIENT_LOG" '^bound R [0-9.]+:[0-9]+ ' "$RS_CLIENT_PID") || return 1
        RS_ADDR=$(awk '{print $3}' <<<"$line")
    else
        line=$(wait_match "$RS_CLIENT_LOG" '^listening L [0-9.]+:[0-9]+' "$RS_CLIENT_PID") ||
            return 1
        RS_ADDR=${line##* }
    fi
    wait_match "$RS_CLIENT_LOG" '^connected$' "$RS_CLIENT_PID" >/dev/null
}

# rs_metric NAME [ADDR]: the value of metric NAME on the relay's /metrics, or on the client's
# --status ADDR (0 when absent).
rs_metric() {
    local v url="http://$RS_RELAY/metrics"
    [[ -z ${2:-} ]] || url="http://$2/metrics"
    v=$("${CURL[@]}" -H "Authorization: Bearer $RS_TOKEN" "$url" 2>/dev/null |
        awk -v m="$1" '$1 == m {print $2}') || true
    echo "${v:-0}"
}

# rs_cpu PID: user+system CPU time of PID in clock ticks (0 once it is gone).
rs_cpu() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# rs_per_gb TICKS: CPU seconds per GB of the 256 MiB download, for TICKS clock ticks.
rs_per_gb() {
    awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v b="$RS_SIZE" 'BEGIN {printf "%.2f", t / hz / (b / 1e9)}'
}

# rs_hwm PID: the peak resident set of PID (VmHWM), or "?" once it is gone.
rs_hwm() {
    awk '$1 == "VmHWM:" {printf "%d MiB", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "?"
}

# rs_resets LOG: the client's lines that say a stream or session was given up: a `lost` not
# followed by `; resuming` (a failed attempt, `lost: cannot reach relay`, is not one), or the
# warning that the relay did not resume. Empty when none.
rs_resets() {
    grep -E '^lost: |did not resume|streams reset' "$1" | grep -Ev '; resuming [0-9]+ streams$' |
        grep -v '^lost: cannot reach relay ' | head -n 3 | tr '\n' '|' || true
}

# fail_all DETAIL LOG NAME...: as in tunnel.sh (defined here too for a run on its own).
if ! declare -F fail_all >/dev/null; then
    fail_all() {
        local detail=$1 log=$2 name
        shift 2
        for name in "$@"; do
            fail "$name" "$detail" "$log"
            log=
        done
    }
fi

# rs_download WHAT NAME CLIENT-ARGS...: the 256 MiB download from http://ADDR/ (the client's
# bound -R or listening -L address) while the link is cut 20 times.
rs_download() {
    local what=$1 name=$2 rc resumes0 replayed0 t0 cpu_c cpu_r took
    local sha cuts resumed resets resumes1 replayed1 c_resumes0 c_replayed0 c_resumes1 c_replayed1
    local names=("$what, $RS_CUTS cuts (fin/rst/blackhole): 256 MiB via curl arrive intact (sha256, curl exit 0)"
        "$what: the cutter cut the link $RS_CUTS times during the transfer"
        "$what: the client printed 'connected; resumed N streams' once per cut"
        "$what: the client reset nothing (no 'lost' without 'resuming', no 'did not resume')"
        "$what: burrow_resumes_total grew by one per cut on the relay and on the client")
    shift 2
    if ! rs_cutter "cutter-$name" --cut-every "$RS_EVERY" --cuts "$RS_CUTS"; then
        fail_all "the cutter did not start" "$CUT_LOG" "${names[@]}"
        return
    fi
    if ! rs_client "client-$name" "$@"; then
        fail_all "the client did not connect and bind" "$RS_CLIENT_LOG" "${names[@]}"
        return
    fi
    resumes0=$(rs_metric burrow_resumes_total)
    replayed0=$(rs_metric burrow_replayed_bytes_total)
    c_resumes0=$(rs_metric burrow_resumes_total "$RS_STATUS")
    c_replayed0=$(rs_metric burrow_replayed_bytes_total "$RS_STATUS")
    cpu_c=$(rs_cpu "$RS_CLIENT_PID")
    cpu_r=$(rs_cpu "$RS_RELAY_PID")
    t0=$SECONDS
    rm -f "$RS_OUT"
    rc=0
    curl -q -sS --max-time "$RS_CURL_SECS" -o "$RS_OUT" "http://$RS_ADDR/big256.bin" </dev/null \
        2>"$WORK/resume-curl-$name.err" || rc=$?
    took=$((SECONDS - t0))
    sha=$(sha256sum "$RS_OUT" 2>/dev/null | cut -d' ' -f1)
    cuts=$(grep -c '^cut ' "$CUT_LOG" || true)
    resumed=$(grep -cE '^connected; resumed [0-9]+ streams$' "$RS_CLIENT_LOG" || true)
    resets=$(rs_resets "$RS_CLIENT_LOG")
    resumes1=$(rs_metric burrow_resumes_total)
    replayed1=$(rs_metric burrow_replayed_bytes_total)
    c_resumes1=$(rs_metric burrow_resumes_total "$RS_STATUS")
    c_replayed1=$(rs_metric burrow_replayed_bytes_total "$RS_STATUS")
    cpu_c=$(($(rs_cpu "$RS_CLIENT_PID") - cpu_c))
    cpu_r=$(($(rs_cpu "$RS_RELAY_PID") - cpu_r))
    echo "# $what: curl exit $rc after ${took}s, $(stat -c %s "$RS_OUT" 2>/dev/null || echo 0) bytes," \
        "$cuts cuts, $resumed resumes; replayed bytes: relay $((replayed1 - replayed0))," \
        "client $((c_replayed1 - c_replayed0));" \
        "CPU s/GB client $(rs_per_gb "$cpu_c"), relay $(rs_per_gb "$cpu_r");" \
        "peak RSS client $(rs_hwm "$RS_CLIENT_PID"), relay $(rs_hwm "$RS_RELAY_PID")"
    if [[ $rc == 0 && $sha == "$RS_SHA" ]]; then
        pass "${names[0]}"
    else
        fail "${names[0]}" "curl exit $rc: $(head -c 200 "$WORK/resume-curl-$name.err"), $(
            stat -c %s "$RS_OUT" 2>/dev/null || echo 0) bytes, sha256 ${sha:-none}" \
            "$RS_CLIENT_LOG" "$RS_RELAY_LOG"
    fi
    expect "${names[1]}" "$cuts" "$RS_CUTS" "$CUT_LOG"
    if ((cuts > 0 && resumed >= cuts)); then
        pass "${names[2]} ($resumed)"
    else
        fail "${names[2]}" "$resumed resumes for $cuts cuts; client lines: $(grep -v '^\[' \
            "$RS_CLIENT_LOG" | tail -n 8 | tr '\n' '|')"
    fi
    expect "${names[3]}" "$resets" ""
    expect "${names[4]}" "relay $((resumes1 - resumes0)), client $((c_resumes1 - c_resumes0))" \
        "relay $cuts, client $cuts"
    rm -f "$RS_OUT"
}

# rs_ssh: one ssh session through `burrow client -L stdio` as ProxyCommand, kept open with a
# remote shell that answers each line it reads with the line and its PID; the link is cut with
# SIGUSR1 to the cutter, once of each kind, and after each cut the same shell must answer.
rs_ssh() {
    local names=("resume ssh -L stdio: the shell answers after a FIN cut (same shell PID)"
        "resume ssh -L stdio: the shell answers after an RST cut (same shell PID)"
        "resume ssh -L stdio: the shell answers after a blackhole cut (same shell PID)"
        "resume ssh -L stdio: the ProxyCommand client printed 'connected; resumed N streams' per cut")
    local log="$WORK/resume-client-ssh.log" in="$WORK/resume-ssh.in" out="$WORK/resume-ssh.out"
    local fd line pid0 i=0 kind resumed
    if [[ -z ${SSH_PORT:-} && -z ${SSHD_DIR:-} ]]; then start_sshd || true; fi
    if [[ -z ${SSH_PORT:-} ]]; then
        fail_all "sshd did not start" "${SSHD_LOG:-${DAEMON_LOG:-}}" "${names[@]}"
        return
    fi
    if ! rs_cutter cutter-ssh; then # no --cut-every: it cuts on SIGUSR1 only
        fail_all "the cutter did not start" "$CUT_LOG" "${names[@]}"
        return
    fi
    mkfifo "$in"
    # The client's state lines go to stderr in stdio mode.
    timeout 120 ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10 -o LogLevel=ERROR \
        -o ProxyCommand="$BURROW client $CUT_URL --token $RS_TOKEN --keepalive 1s -L stdio:%h:%p 2>>$log" \
        -i "$SSHD_DIR/client_key" -p "$SSH_PORT" "$SSH_USER@127.0.0.1" \
        'while read -r c; do echo "$c $$"; done' <"$in" >"$out" 2>"$out.err" &
    RS_SSH_PID=$!
    PIDS+=("$RS_SSH_PID")
    exec {fd}>"$in" # opens once ssh's side has it open for reading
    # say LINE: one line to the remote shell (a subshell: a closed pipe must not kill us).
    say() { (printf '%s\n' "$1" >&"$fd") 2>/dev/null || true; }
    say start
    if ! line=$(wait_match "$out" '^start [0-9]+$' "$RS_SSH_PID" 1 30); then
        fail_all "the ssh session never answered: $(head -c 200 "$out.err")" "$log" "${names[@]}"
    else
        pid0=${line##* }
        for kind in fin rst hole; do
            i=$((i + 1))
            kill -USR1 "$CUT_PID" 2>/dev/null || true
            if ! wait_match "$CUT_LOG" "^cut $i $kind conns=1 " "$CUT_PID" 1 5 >/dev/null; then
                fail "${names[i - 1]}" "the cutter did not log 'cut $i $kind conns=1'" "$CUT_LOG"
                continue
            fi
            # Sent at once: over a dead link (hole) or before the reconnect, it must be replayed.
            say "after-$kind"
            if line=$(wait_match "$out" "^after-$kind [0-9]+$" "$RS_SSH_PID" 1 30); then
                expect "${names[i - 1]}" "${line##* }" "$pid0" "$log" "$CUT_LOG" "$RS_RELAY_LOG"
            else
                fail "${names[i - 1]}" "no answer; ssh $(running "$RS_SSH_PID" && echo "still runs" ||
                    echo "exited"), its stderr: $(head -c 200 "$out.err")" "$log" "$CUT_LOG"
            fi
        done
        resumed=$(grep -cE '^connected; resumed [0-9]+ streams$' "$log" || true)
        if ((resumed >= 3)) && [[ -z $(rs_resets "$log") ]]; then
            pass "${names[3]} ($resumed)"
        else
            fail "${names[3]}" "$resumed resumes for 3 cuts; client lines: $(grep -v '^\[' \
                "$log" | tail -n 8 | tr '\n' '|')"
        fi
    fi
    exec {fd}>&- # EOF: the remote loop ends, ssh exits
    wait_exit "$RS_SSH_PID" 15 || kill "$RS_SSH_PID" 2>/dev/null || true
    kill "$CUT_PID" 2>/dev/null || true
}

# rs_no_resume: with --no-resume, one RST cut 8 MiB into the download resets it.
rs_no_resume() {
    local names=("resume --no-resume: a cut mid-download resets it (curl fails)"
        "resume --no-resume: the client prints 'lost: ...', then 'connected', never 'resumed'")
    local rc=0 cuts
    if ! rs_cutter cutter-noresume --cut-every $((8 * 1024 * 1024)) --cuts 1 --kinds rst; then
        fail_all "the cutter did not start" "$CUT_LOG" "${names[@]}"
        return
    fi
    if ! rs_client client-noresume --no-resume -R "127.0.0.1:0:127.0.0.1:$ORIGIN_PORT"; then
        fail_all "the client did not connect and bind" "$RS_CLIENT_LOG" "${names[@]}"
        return
    fi
    curl -q -sS --max-time 30 -o "$RS_OUT" "http://$RS_ADDR/big256.bin" </dev/null \
        2>"$WORK/resume-curl-noresume.err" || rc=$?
    cuts=$(grep -c '^cut ' "$CUT_LOG" || true)
    if ((cuts == 1 && rc != 0)); then
        pass "${names[0]} (curl exit $rc: $(head -c 80 "$WORK/resume-curl-noresume.err"))"
    else
        fail "${names[0]}" "$cuts cuts, curl exit $rc" "$RS_CLIENT_LOG" "$CUT_LOG"
    fi
    if wait_match "$RS_CLIENT_LOG" '^connected$' "$RS_CLIENT_PID" 2 10 >/dev/null &&
        grep -q '^lost: ' "$RS_CLIENT_LOG" && ! grep -q 'resum' "$RS_CLIENT_LOG"; then
        pass "${names[1]}"
    else
        fail "${names[1]}" "client lines: $(grep -v '^\[' "$RS_CLIENT_LOG" | tr '\n' '|')" \
            "$RS_CLIENT_LOG"
    fi
    rm -f "$RS_OUT"
    kill "$RS_CLIENT_PID" "$CUT_PID" 2>/dev/null || true
}

# rs_crash: a relay killed (SIGKILL: the process is gone) with a download in flight through the
# client's -R port, and another started on the same port: it cannot resume the session, so the
# client says so, resets the stream (the download fails), starts a new session and binds its
# port again. README: "a relay restart still resets the streams in flight".
rs_crash() {
    local names=("resume crash: after the relay's SIGKILL the client waits to resume ('lost: ...; resuming 1 streams')"
        "resume crash: a new relay on the same port cannot resume: the client prints 'lost: relay did not resume the session', then 'connected' and its -R port again"
        "resume crash: the download in flight fails (its stream was reset), and the port serves again")
    local rc=0 line port dl r2=0
    if ! rs_relay crash-1; then
        fail_all "the first relay did not start" "$RS_RELAY_LOG" "${names[@]}"
        return
    fi
    local relay=$RS_RELAY first_log=$RS_RELAY_LOG
    CUT_URL="ws://$relay/burrow"
    if ! rs_client client-crash -R "127.0.0.1:0:127.0.0.1:$ORIGIN_PORT"; then
        fail_all "the client did not connect and bind" "$RS_CLIENT_LOG" "${names[@]}"
        return
    fi
    port=$RS_ADDR
    # Slow enough to be in flight when the relay dies (256 MiB at 4 MiB/s).
    curl -q -sS --max-time 60 --limit-rate 4M -o "$RS_OUT" "http://$port/big256.bin" \
        </dev/null 2>"$WORK/resume-curl-crash.err" &
    dl=$!
    # Kill once the download is under way (bounded poll).
    for _ in $(seq 100); do
        (($(stat -c %s "$RS_OUT" 2>/dev/null || echo 0) > 1048576)) && break
        sleep 0.1
    done
    kill -KILL "$RS_RELAY_PID"
    if line=$(wait_match "$RS_CLIENT_LOG" '^lost: .*; resuming 1 streams' "$RS_CLIENT_PID" 1 15); then
        pass "${names[0]}"
    else
        fail "${names[0]}" "client lines: $(grep -v '^\[' "$RS_CLIENT_LOG" | tr '\n' '|')" \
            "$RS_CLIENT_LOG" "$first_log"
    fi
    # The port was just freed; another process may hold it for a moment: retry, bounded.
    for _ in $(seq 20); do
        if start_relay resume-crash-2 "$relay" --token "$RS_TOKEN"; then
            r2=1
            break
        fi
        sleep 0.25
    done
    RS_RELAY_PID=$RELAY_PID RS_RELAY_LOG=$RELAY_LOG
    if ((r2 == 0)); then
        fail_all "no second relay could listen on $relay" "$RS_RELAY_LOG" "${names[@]:1}"
    elif wait_match "$RS_CLIENT_LOG" '^lost: relay did not resume the session: 1 streams reset' \
        "$RS_CLIENT_PID" 1 40 >/dev/null &&
        wait_match "$RS_CLIENT_LOG" '^connected$' "$RS_CLIENT_PID" 2 10 >/dev/null &&
        line=$(wait_match "$RS_CLIENT_LOG" '^bound R [0-9.]+:[0-9]+ ' "$RS_CLIENT_PID" 2 10) &&
        [[ $(awk '{print $3}' <<<"$line") == "$port" ]]; then
        pass "${names[1]}"
    else
        fail "${names[1]}" "client lines: $(grep -v '^\[' "$RS_CLIENT_LOG" | tr '\n' '|')" \
            "$RS_CLIENT_LOG" "$RS_RELAY_LOG"
    fi
    wait "$dl" || rc=$?
    if ((rc != 0)) && [[ $(body "http://$port/hello.txt") == "$HELLO" ]]; then
        pass "${names[2]} (curl exit $rc)"
    else
        fail "${names[2]}" "curl exit $rc" "$RS_CLIENT_LOG" "$RS_RELAY_LOG"
    fi
    rm -f "$RS_OUT"
    kill "$RS_CLIENT_PID" "$RS_RELAY_PID" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# One relay for every check (the cutters sit in front of it); its default --grace (60 s).

if ! rs_relay relay; then
    fail "resume: the relay started" "no 'relay listening' line" "$RS_RELAY_LOG"
else
    # -R: curl -> relay port -> (cut link) -> client -> origin; the bytes cross the link
    # client -> relay.
    rs_download "resume -R" r -R "127.0.0.1:0:127.0.0.1:$ORIGIN_PORT"
    kill "$RS_CLIENT_PID" "$CUT_PID" 2>/dev/null || true

    # -L: curl -> client -L port -> (cut link) -> relay -> origin; relay -> client.
    rs_download "resume -L" l -L "127.0.0.1:0:127.0.0.1:$ORIGIN_PORT"
    kill "$RS_CLIENT_PID" "$CUT_PID" 2>/dev/null || true

    rs_ssh
    rs_no_resume
fi
rs_crash

# No log of these checks holds the relay token.
if grep -lF -e "$RS_TOKEN" "$WORK"/resume-*.log >/dev/null 2>&1; then
    fail "resume: no relay, client or cutter log contains the relay token" \
        "found in: $(grep -lF -e "$RS_TOKEN" "$WORK"/resume-*.log | xargs -n1 basename | tr '\n' ' ')"
else
    pass "resume: no relay, client or cutter log contains the relay token"
fi

if [[ -n ${RESUME_ALONE:-} ]]; then summary; fi
