# What the shell suites (tests/interop, tests/e2e-browser) share: the burrow binary, check
# bookkeeping, and bounded waits. Source it after setting SUITE (the word in the summary line)
# and ROOT (the repository); set STARTED=$SECONDS to have the summary report the run time.
# shellcheck shell=bash

PASSED=0
FAILED=0

pass() {
    PASSED=$((PASSED + 1))
    echo "ok - $1"
}

# fail NAME DETAIL [LOG...]: a failed check, with the tail of each log.
fail() {
    local name=$1 detail=$2 log
    shift 2
    FAILED=$((FAILED + 1))
    ((${#detail} <= 400)) || detail="${detail:0:400}..."
    echo "not ok - $name ($detail)"
    for log in "$@"; do
        [[ -s $log ]] || continue
        echo "#   tail -20 ${log##*/}:"
        tail -n 20 "$log" | sed 's/^/#     /'
    done
}

# expect NAME ACTUAL WANT [LOG...]
expect() {
    local name=$1 actual=$2 want=$3
    shift 3
    if [[ $actual == "$want" ]]; then
        pass "$name"
    else
        fail "$name" "want $(printf %q "$want"), got $(printf %q "$actual")" "$@"
    fi
}

# summary: the last line of a run; its status is non-zero if any check failed (or none ran).
summary() {
    [[ -z ${STARTED:-} ]] || echo "# took $((SECONDS - STARTED)) s"
    echo "$SUITE: $PASSED passed, $FAILED failed"
    ((PASSED + FAILED > 0 && FAILED == 0))
}

# die WHAT [LOG...]: setup failed; nothing after it can run.
die() {
    fail "setup: $1" "cannot continue" "${@:2}"
    summary || true
    exit 1
}

# find_burrow: sets BURROW to $BURROW_BIN, or to a fresh debug build.
find_burrow() {
    if [[ -n ${BURROW_BIN:-} ]]; then
        BURROW=$(realpath "$BURROW_BIN")
    else
        cargo build --quiet --bin burrow
        BURROW="${CARGO_TARGET_DIR:-$ROOT/target}/debug/burrow"
        [[ $BURROW == /* ]] || BURROW="$ROOT/$BURROW"
    fi
    [[ -x $BURROW ]] || { echo "$SUITE: no burrow binary at $BURROW" >&2; exit 1; }
}

# running PID: true while PID exists and has not exited (an unreaped child is a zombie,
# which `kill -0` would still report as alive).
running() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# wait_match FILE REGEX [PID] [NTH] [SECS]: prints the NTH (default first) match of REGEX in
# FILE once there is one; false if PID exits without it or SECS (default 10) pass.
wait_match() {
    local file=$1 re=$2 pid=${3:-} nth=${4:-1} secs=${5:-10} m
    for _ in $(seq $((secs * 10))); do
        m=$(grep -Eo -- "$re" "$file" 2>/dev/null | sed -n "${nth}p") || true
        if [[ -n $m ]]; then
            printf '%s\n' "$m"
            return 0
        fi
        if [[ -n $pid ]] && ! running "$pid"; then
            # One last look: it may have written the line just before it exited.
            m=$(grep -Eo -- "$re" "$file" 2>/dev/null | sed -n "${nth}p") || true
            [[ -n $m ]] && printf '%s\n' "$m"
            [[ -n $m ]]
            return
        fi
        sleep 0.1
    done
    return 1
}

# wait_exit PID SECS: true once PID has exited (bounded); its status is then in EXIT_RC.
wait_exit() {
    local pid=$1 secs=$2
    for _ in $(seq $((secs * 10))); do
        running "$pid" || break
        sleep 0.1
    done
    running "$pid" && return 1
    EXIT_RC=0
    wait "$pid" || EXIT_RC=$?
}
