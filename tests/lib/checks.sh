# Check bookkeeping shared by the shell suites (tests/interop, tests/e2e-browser).
# Source it after setting SUITE (the word in the summary line); set STARTED=$SECONDS to have the
# summary report the run time.
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
