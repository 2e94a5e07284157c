# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are for the scripts that source this
# Shared by the interop scripts (run.sh, tunnel.sh): builds burrow, checks the tools, makes
# the temp dir with its cleanup trap, and defines the counters and helpers every check uses.
# Source it, don't run it. Sets INTEROP_LIB=1 so a script sourced by another knows it is.
#
#   BURROW_BIN=path  use this binary instead of building target/debug/burrow
#   KEEP_WORK=1      keep the temp dir (logs, configs) for a look afterwards

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1

# The checks talk to loopback on purpose: no proxy settings from the environment may reroute
# curl or ssh, and no user config may change their behaviour (curl -q, ssh -F /dev/null).
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

SUITE=interop
# shellcheck source=tests/lib/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/checks.sh"
find_burrow

missing=()
for tool in curl nc ssh ssh-keygen tinyproxy python3 sha256sum timeout realpath; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ -x /usr/sbin/sshd ]] || missing+=(/usr/sbin/sshd)
if ((${#missing[@]})); then
    echo "interop: missing ${missing[*]}: apt-get install curl netcat-openbsd openssh-server" \
        "openssh-client tinyproxy python3 (or run .ci/run)" >&2
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/burrow-interop.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    # Give them a moment to go, then make sure (bounded: 20 x 0.1 s).
    for _ in $(seq 20); do
        local alive=0
        for pid in "${PIDS[@]}"; do
            if running "$pid"; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -n ${KEEP_WORK:-} ]]; then
        echo "# kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT


free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT PID: true once 127.0.0.1:PORT accepts, false if PID dies or 10 s pass.
wait_port() {
    for _ in $(seq 100); do
        running "$2" || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# wait_log FILE REGEX: true once FILE has a line matching REGEX (bounded: 10 s).
wait_log() {
    for _ in $(seq 100); do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# spawn_daemon NAME FN: picks a free port, calls `FN PORT LOG`, which must start one daemon in
# the background, and waits until it listens. Retries once with another port (the port may be
# taken between picking and binding). Sets DAEMON_PORT and DAEMON_LOG.
spawn_daemon() {
    local name=$1 fn=$2 port pid
    DAEMON_LOG="$WORK/$name.log"
    for _ in 1 2; do
        port=$(free_port)
        "$fn" "$port" "$DAEMON_LOG"
        pid=$!
        PIDS+=("$pid")
        if wait_port "$port" "$pid"; then
            DAEMON_PORT=$port
            return 0
        fi
        kill "$pid" 2>/dev/null || true
    done
    return 1
}

# start_proxy NAME [ARGS...]: starts `burrow proxy --listen 127.0.0.1:0 ARGS` and reads its
# address from the first log line. Sets PROXY (host:port), PROXY_PID and PROXY_LOG.
start_proxy() {
    local name=$1 line
    shift
    PROXY_LOG="$WORK/$name.log"
    "$BURROW" proxy --listen 127.0.0.1:0 "$@" </dev/null >"$PROXY_LOG" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    for _ in $(seq 100); do
        line=$(grep -Eo 'proxy listening on 127\.0\.0\.1:[0-9]+' "$PROXY_LOG" 2>/dev/null) || true
        if [[ -n $line ]]; then
            PROXY=${line##* }
            return 0
        fi
        running "$PROXY_PID" || break
        sleep 0.1
    done
    die "burrow proxy $name did not report its address" "$PROXY_LOG"
}

CURL=(curl -q -sS --max-time 10)

# status ARGS...: the HTTP status curl saw (000 when none).
status() {
    "${CURL[@]}" -o /dev/null -w '%{http_code}' "$@" 2>/dev/null || true
}

# connect_status ARGS...: the status of the CONNECT response in a `curl -p` run.
connect_status() {
    "${CURL[@]}" -o /dev/null -w '%{http_connect}' "$@" 2>/dev/null || true
}

# body ARGS...: the response body, or curl's error message.
body() {
    "${CURL[@]}" "$@" 2>&1 || true
}

# sha_of ARGS...: sha256 of what curl downloads (or of curl's error message, which won't match).
sha_of() {
    local out="$WORK/download.bin"
    rm -f "$out"
    "${CURL[@]}" -o "$out" "$@" 2>/dev/null || true
    sha256sum "$out" 2>/dev/null | cut -d' ' -f1
}

# ---------------------------------------------------------------------------------------------
# Daemons shared by the scripts.

# start_relay NAME LISTEN [ARGS...]: `burrow server --listen LISTEN --lame-duck 0 ARGS` in the
# background (no lame duck: no load balancer watches these, and a SIGTERM should not wait 5 s),
# its output in $WORK/NAME.log. Sets RELAY (ip:port, from its log), RELAY_PID and RELAY_LOG;
# false if it exited or printed no address within 10 s.
start_relay() {
    local name=$1 listen=$2 line
    shift 2
    RELAY_LOG="$WORK/$name.log"
    "$BURROW" server --listen "$listen" --lame-duck 0 "$@" </dev/null >"$RELAY_LOG" 2>&1 &
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
    line=$(wait_match "$RELAY_LOG" 'relay listening on 127\.0\.0\.1:[0-9]+' "$RELAY_PID") ||
        return 1
    RELAY=${line##* }
}

# start_origin: python's http.server over a directory with a small known file and 5 MiB of
# random bytes. Sets WWW, HELLO, BIG_SHA, ORIGIN_PORT, ORIGIN_LOG, ORIGIN and CLOSED_PORT (a
# port nothing listens on: picked free and left unbound).
start_origin() {
    WWW="$WORK/www"
    mkdir -p "$WWW"
    HELLO="hello from the burrow interop origin"
    printf '%s\n' "$HELLO" >"$WWW/hello.txt"
    head -c $((5 * 1024 * 1024)) /dev/urandom >"$WWW/big.bin"
    BIG_SHA=$(sha256sum "$WWW/big.bin" | cut -d' ' -f1)
    spawn_daemon origin origin_cmd || die "python http.server did not start" "$DAEMON_LOG"
    ORIGIN_PORT=$DAEMON_PORT
    ORIGIN_LOG=$DAEMON_LOG
    ORIGIN="http://127.0.0.1:$ORIGIN_PORT"
    hold_closed_port || die "could not hold a closed port"
}

# hold_closed_port: sets CLOSED_PORT to a port that is bound, never listening, by a process of
# ours for the whole suite. Connects to it are refused, and no other process on the machine
# (another suite running beside this one) can take it in the meantime, as it could a port
# that was only free once.
hold_closed_port() {
    local out="$WORK/closed-port"
    python3 -c 'import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    time.sleep(3600)' >"$out" 2>/dev/null </dev/null &
    PIDS+=("$!")
    for _ in $(seq 100); do
        [[ -s $out ]] && break
        sleep 0.05
    done
    CLOSED_PORT=$(cat "$out")
    [[ -n $CLOSED_PORT ]]
}

origin_cmd() {
    python3 -m http.server --bind 127.0.0.1 --directory "$WWW" "$1" </dev/null >"$2" 2>&1 &
}

# start_sshd: a throwaway sshd on loopback that lets the current user in with a fresh key.
# Sets SSH_PORT, SSHD_LOG, SSH_USER and SSHD_DIR; false if sshd did not start (DAEMON_LOG
# then holds its log).
start_sshd() {
    SSHD_DIR="$WORK/sshd"
    SSH_USER=$(id -un)
    mkdir -p "$SSHD_DIR" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$SSHD_DIR/host_key" -C burrow-interop-host
    ssh-keygen -q -t ed25519 -N '' -f "$SSHD_DIR/client_key" -C burrow-interop-client
    cp "$SSHD_DIR/client_key.pub" "$SSHD_DIR/authorized_keys"
    spawn_daemon sshd sshd_cmd || return 1
    SSH_PORT=$DAEMON_PORT
    SSHD_LOG=$DAEMON_LOG
}

sshd_cmd() {
    cat >"$SSHD_DIR/sshd_config" <<EOF
Port $1
ListenAddress 127.0.0.1
HostKey $SSHD_DIR/host_key
AuthorizedKeysFile $SSHD_DIR/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PidFile $SSHD_DIR/sshd.pid
PrintMotd no
EOF
    /usr/sbin/sshd -D -e -f "$SSHD_DIR/sshd_config" </dev/null >"$2" 2>&1 &
}

# ssh_echo PORT [SSH-OPTION...]: runs `echo burrow-ssh-ok` over ssh to 127.0.0.1:PORT as
# SSH_USER with the throwaway key; prints its output, or what went wrong.
ssh_echo() {
    local port=$1
    shift
    timeout 20 ssh -F /dev/null "$@" \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
        -o IdentitiesOnly=yes -o ConnectTimeout=10 -o LogLevel=ERROR \
        -i "$SSHD_DIR/client_key" -p "$port" "$SSH_USER@127.0.0.1" echo burrow-ssh-ok \
        </dev/null 2>&1 || echo "[ssh exit $?, 124 = timed out]"
}

INTEROP_LIB=1
