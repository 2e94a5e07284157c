#!/usr/bin/env bash
# burrow's headline scenario, end to end with a real browser: a cloud test runner's headless
# Chromium loads web apps that live in a private network nothing outside can reach. Inside that
# network `burrow client` dials out over wss:// to a public `burrow server`, through a corporate
# proxy (tinyproxy) that is the private network's only way out, and asks the relay for
# `-R 0.0.0.0:18080:proxy`. Chromium uses http://RELAY:18080 as its proxy, with credentials, and
# every request it makes leaves from the private network. The same door speaks SOCKS5: a second
# client's `-R 0.0.0.0:18081:proxy` serves Chromium with `--proxy-server=socks5://RELAY:18081`.
#
# Usage (as root): bash tests/e2e-browser/run.sh        (or `just e2e-browser`)
#   BURROW_BIN=path  use this binary instead of building target/debug/burrow
#   KEEP_WORK=1      keep the temp dir (logs, certificates) for a look afterwards
#   CHROMIUM=path    the browser (default /usr/bin/chromium, Debian's package)
#   STATUS_PNG=path  save the relay's /status screenshot there too (docs/status.png is one)
#   ONLY_STATUS=1    stop after the operator's-view check (check 3b)
# Needs: iproute2, tinyproxy, openssl, python3, curl, node + npm, Debian's chromium, and
# playwright-core in tests/e2e-browser/node_modules (`npm ci --prefix tests/e2e-browser`;
# .ci/run installs all of it). No browser is ever downloaded.
#
# Four network namespaces, made here and removed on exit (names carry this script's PID, so
# parallel runs do not collide); the 10.231.x.0/24 addresses exist only inside them, and no
# namespace has a default route or forwards packets:
#
#   private 10.231.1.2 (+ .10 app.internal, .11 secure.internal, .12 blocked.internal)
#      │  apps (python3), burrow client --via http://10.231.1.1:8888
#   corp    10.231.1.1 │ 10.231.2.1      tinyproxy on 10.231.1.1:8888, the only way out
#   public  10.231.2.2 │ 10.231.3.1      burrow server on 0.0.0.0:8443 (wss, test CA), -R 18080,
#                                        --admin 127.0.0.1:9900 (/status, seen by a Chromium here)
#   cloud   10.231.3.2                   Chromium (playwright-core), proxy http://10.231.3.1:18080
#
# Names resolve per namespace from /etc/netns/NS/hosts (ip netns exec mounts it over /etc/hosts):
# the app names only in `private`, relay.public in `private`, `corp` and `public`. Every
# resolv.conf points at the namespace's own loopback, so no lookup ever leaves a namespace.
#
# Output: `ok - NAME` / `not ok - NAME (detail)` per check, then `e2e-browser: N passed, M failed`;
# the exit status is non-zero if any check failed. Every process is tracked by PID and every wait
# is a bounded poll.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export CHROMIUM

# --- prerequisites -----------------------------------------------------------------------------
if ((EUID != 0)); then
    echo "e2e-browser: must run as root (it makes network namespaces)" >&2
    exit 1
fi
missing=()
for tool in ip tinyproxy openssl python3 curl node sha256sum timeout awk; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ -x $CHROMIUM ]] || missing+=("$CHROMIUM (apt-get install chromium)")
[[ -f $HERE/node_modules/playwright-core/package.json ]] ||
    missing+=("playwright-core (npm ci --prefix tests/e2e-browser)")
if ((${#missing[@]})); then
    echo "e2e-browser: missing: ${missing[*]}" >&2
    echo "e2e-browser: apt-get install iproute2 tinyproxy openssl python3 curl nodejs npm chromium;" \
        "npm ci --prefix tests/e2e-browser (or run .ci/run)" >&2
    exit 1
fi

SUITE=e2e-browser
# shellcheck source=tests/lib/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/checks.sh"
find_burrow

# --- bookkeeping and cleanup -------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/burrow-e2e-browser.XXXXXX")
TAG="bz-$$"
NS_PRIV="$TAG-private"
NS_CORP="$TAG-corp"
NS_PUB="$TAG-public"
NS_CLOUD="$TAG-cloud"
ALL_NS=("$NS_PRIV" "$NS_CORP" "$NS_PUB" "$NS_CLOUD")
MADE_NS=()
MADE_ETC_NETNS=0
PIDS=()
STARTED=$SECONDS

cleanup() {
    local pid ns alive
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 30); do # bounded: 3 s
        alive=0
        for pid in "${PIDS[@]}"; do running "$pid" && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    # Anything still inside our namespaces was started by this script (Chromium's helpers, say).
    for ns in "${MADE_NS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    if ((MADE_ETC_NETNS)); then rmdir /etc/netns 2>/dev/null || true; fi
    if [[ -n ${KEEP_WORK:-} ]]; then
        echo "# kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# nsx NS CMD...: run CMD inside namespace NS.
nsx() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

# bg NS LOG CMD...: start CMD inside NS in the background, output to LOG; sets BG_PID (the
# command's own PID: `ip netns exec` execs it).
bg() {
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" </dev/null >"$log" 2>&1 &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

# wait_http NS SECS URL [CURL-ARGS...]: true once curl inside NS gets a 2xx from URL (bounded).
wait_http() {
    local ns=$1 secs=$2 url=$3
    shift 3
    for _ in $(seq $((secs * 5))); do
        if nsx "$ns" curl -q -sf -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# client_lines: the client's state lines (its stdout), joined with '|'.
client_lines() {
    tr '\n' '|' <"$CLIENT_OUT"
}

# browser LOG ARGS...: browser.mjs inside the cloud namespace (bounded: 120 s); its lines in LOG.
browser() {
    local log=$1
    shift
    timeout 120 ip netns exec "$NS_CLOUD" node "$HERE/browser.mjs" "$@" </dev/null >"$log" \
        2>"$log.stderr" || echo "browser.mjs exit $?" >>"$log"
}

# goto_line LOG URL: what browser.mjs said about URL (empty if nothing).
goto_line() {
    grep -F -- "goto $2 " "$1" | head -n 1 || true
}

# expect_page NAME LOG URL MARKER [LOG...]: the browser loaded URL with status 200 and MARKER in
# its text.
expect_page() {
    local name=$1 log=$2 url=$3 marker=$4 line
    shift 4
    line=$(goto_line "$log" "$url")
    if [[ $line == *" status=200 text="*"$marker"* ]]; then
        pass "$name"
    else
        fail "$name" "want status=200 and '$marker', got: ${line:-$(tr '\n' '|' <"$log")}" "$@"
    fi
}

# --- the networks ------------------------------------------------------------------------------
[[ -d /etc/netns ]] || { mkdir -p /etc/netns && MADE_ETC_NETNS=1; }
for ns in "${ALL_NS[@]}"; do
    ip netns add "$ns" || die "ip netns add $ns"
    MADE_NS+=("$ns")
    ip -n "$ns" link set lo up
    nsx "$ns" sysctl -qw net.ipv4.ip_forward=0 # no namespace routes for another
    mkdir -p "/etc/netns/$ns"
    # Lookups go to the namespace's own loopback, where nothing answers: none leaves.
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"/etc/netns/$ns/resolv.conf"
    printf '127.0.0.1 localhost\n::1 localhost\n' >"/etc/netns/$ns/hosts"
done
cat >>"/etc/netns/$NS_PRIV/hosts" <<'EOF'
10.231.1.10 app.internal
10.231.1.11 secure.internal
10.231.1.12 blocked.internal
10.231.2.2 relay.public
EOF
echo "10.231.2.2 relay.public" >>"/etc/netns/$NS_CORP/hosts"
echo "10.231.2.2 relay.public" >>"/etc/netns/$NS_PUB/hosts"

# veth LINK-NAME NS-A ADDR-A NS-B ADDR-B: a cable between two namespaces (created in them
# directly: nothing of ours ever sits in the host's namespace).
veth() {
    local name=$1 a=$2 addr_a=$3 b=$4 addr_b=$5
    ip link add "${TAG//-/}${name}a" netns "$a" type veth peer name "${TAG//-/}${name}b" netns "$b"
    ip -n "$a" addr add "$addr_a" dev "${TAG//-/}${name}a"
    ip -n "$b" addr add "$addr_b" dev "${TAG//-/}${name}b"
    ip -n "$a" link set "${TAG//-/}${name}a" up
    ip -n "$b" link set "${TAG//-/}${name}b" up
}
veth pc "$NS_PRIV" 10.231.1.2/24 "$NS_CORP" 10.231.1.1/24 || die "veth private-corp"
veth cp "$NS_CORP" 10.231.2.1/24 "$NS_PUB" 10.231.2.2/24 || die "veth corp-public"
veth pu "$NS_PUB" 10.231.3.1/24 "$NS_CLOUD" 10.231.3.2/24 || die "veth public-cloud"
for ip in 10.231.1.10 10.231.1.11 10.231.1.12; do
    ip -n "$NS_PRIV" addr add "$ip/24" dev "${TAG//-/}pca"
done

APP_IP=10.231.1.10
CORP_IP=10.231.1.1
RELAY_PUBLIC_IP=10.231.2.2
RELAY_CLOUD_IP=10.231.3.1
PROXY_PORT=18080
ADMIN_PORT=9900
RELAY_PROXY="http://$RELAY_CLOUD_IP:$PROXY_PORT"
TOKEN="tok-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
P_USER=tester
P_PASS="s3cret-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
HTTP_MARKER="burrow-e2e private app $(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
HTTPS_MARKER="burrow-e2e secure app $(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"

# --- certificates: a test CA signs relay.public; the HTTPS app is self-signed -----------------
PKI="$WORK/pki"
mkdir -p "$PKI"
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -keyout "$PKI/ca.key" -out "$PKI/ca.pem" -subj "/CN=burrow e2e-browser test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$PKI/relay.key" -out "$PKI/relay.csr" -subj "/CN=relay.public"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=DNS:relay.public" >"$PKI/relay.ext"
    openssl x509 -req -in "$PKI/relay.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
        -CAcreateserial -days 2 -extfile "$PKI/relay.ext" -out "$PKI/relay.pem"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -keyout "$PKI/secure.key" -out "$PKI/secure.pem" -subj "/CN=secure.internal" \
        -addext "subjectAltName=DNS:secure.internal"
} >"$WORK/openssl.log" 2>&1 || die "openssl could not make the certificates" "$WORK/openssl.log"

# --- private network: the apps --------------------------------------------------------------
BIG="$WORK/big.bin"
BIG_SIZE=$((50 * 1024 * 1024))
head -c "$BIG_SIZE" /dev/urandom >"$BIG"
BIG_SHA=$(sha256sum "$BIG" | cut -d' ' -f1)
# 8 MiB/s: about 6 s for 50 MiB, so SIGTERM lands mid-transfer and the drain has work to do.
BIG_RATE=$((8 * 1024 * 1024))

bg "$NS_PRIV" "$WORK/app-http.log" python3 "$HERE/app.py" 80 "$HTTP_MARKER" "$BIG"
APP_HTTP_PID=$BG_PID
bg "$NS_PRIV" "$WORK/app-https.log" python3 "$HERE/app.py" 9443 "$HTTPS_MARKER" "$BIG" \
    "$PKI/secure.pem" "$PKI/secure.key"
wait_http "$NS_PRIV" 15 "http://app.internal/" || die "the HTTP app did not answer" \
    "$WORK/app-http.log"
running "$APP_HTTP_PID" || die "the HTTP app exited" "$WORK/app-http.log"
wait_http "$NS_PRIV" 15 "https://secure.internal:9443/" -k ||
    die "the HTTPS app did not answer" "$WORK/app-https.log"

# --- corp: tinyproxy, the private network's only way out ---------------------------------------
cat >"$WORK/tinyproxy.conf" <<EOF
Port 8888
Listen $CORP_IP
Allow 10.231.1.0/24
ConnectPort 8443
Timeout 600
MaxClients 20
LogLevel Info
EOF
TINYPROXY_LOG="$WORK/tinyproxy.log"
# start_tinyproxy LOG: tinyproxy (foreground, so its PID is TINYPROXY_PID) on $CORP_IP:8888;
# true once the private network can connect to it (bounded: 10 s).
start_tinyproxy() {
    bg "$NS_CORP" "$1" tinyproxy -d -c "$WORK/tinyproxy.conf"
    TINYPROXY_PID=$BG_PID
    for _ in $(seq 50); do
        if nsx "$NS_PRIV" bash -c "exec 3<>/dev/tcp/$CORP_IP/8888" 2>/dev/null; then
            return 0
        fi
        running "$TINYPROXY_PID" || return 1
        sleep 0.2
    done
    return 1
}
start_tinyproxy "$TINYPROXY_LOG" || die "tinyproxy did not listen on $CORP_IP:8888" "$TINYPROXY_LOG"

# --- public: the relay -------------------------------------------------------------------------
RELAY_N=0
# start_relay: `burrow server` on 0.0.0.0:8443 with the test CA's certificate; sets RELAY_PID
# and RELAY_LOG once it says it listens (retried, bounded, while the port is still taken).
start_relay() {
    local i
    for i in $(seq 20); do
        RELAY_N=$((RELAY_N + 1))
        RELAY_LOG="$WORK/relay-$RELAY_N.log"
        bg "$NS_PUB" "$RELAY_LOG" "$BURROW" server --listen 0.0.0.0:8443 --token "$TOKEN" \
            --tls-cert "$PKI/relay.pem" --tls-key "$PKI/relay.key" --admin "127.0.0.1:$ADMIN_PORT" \
            --lame-duck 0
        RELAY_PID=$BG_PID
        if wait_match "$RELAY_LOG" 'relay listening on [0-9.]+:8443' "$RELAY_PID" >/dev/null; then
            return 0
        fi
        ((i < 20)) && sleep 0.25
    done
    return 1
}
start_relay || die "burrow server did not report 'relay listening on 0.0.0.0:8443'" "$RELAY_LOG"
expect "relay: GET https://relay.public:8443/healthz (test CA) answers ok" \
    "$(nsx "$NS_PUB" curl -q -sS --max-time 10 --cacert "$PKI/ca.pem" \
        https://relay.public:8443/healthz 2>&1)" ok "$RELAY_LOG"

# --- the network is what it claims to be --------------------------------------------------------
# curl_reach NS URL: curl's exit code and message for URL from inside NS (7: could not connect,
# 28: timed out; 0 would mean it got there).
curl_reach() {
    local out rc=0
    out=$(nsx "$1" curl -q -sS -o /dev/null --max-time 5 "$2" 2>&1) || rc=$?
    echo "exit $rc: ${out:0:120}"
}
r=$(curl_reach "$NS_PRIV" "http://$RELAY_PUBLIC_IP:8443/")
if [[ $r == "exit 7:"* || $r == "exit 28:"* ]]; then
    pass "network: the private namespace cannot reach the relay directly ($r)"
else
    fail "network: the private namespace cannot reach the relay directly" "$r"
fi
r=$(curl_reach "$NS_CLOUD" "http://$APP_IP/")
if [[ $r == "exit 7:"* || $r == "exit 28:"* ]]; then
    pass "network: the cloud namespace cannot reach the private app's address $APP_IP ($r)"
else
    fail "network: the cloud namespace cannot reach the private app's address $APP_IP" "$r"
fi
r=$(curl_reach "$NS_CLOUD" "http://$CORP_IP:8888/")
if [[ $r == "exit 7:"* || $r == "exit 28:"* ]]; then
    pass "network: the cloud namespace cannot reach the corporate proxy ($r)"
else
    fail "network: the cloud namespace cannot reach the corporate proxy" "$r"
fi

# --- check 1: without the tunnel, the browser cannot load the private app ----------------------
B="$WORK/browser-1-direct.log"
browser "$B" --timeout 5000 "http://app.internal/" "http://$APP_IP/"
for url in "http://app.internal/" "http://$APP_IP/"; do
    line=$(goto_line "$B" "$url")
    if [[ $line == *" error="* ]]; then
        pass "isolation: Chromium in the cloud namespace, no proxy, cannot load $url (${line#* error=})"
    else
        fail "isolation: Chromium in the cloud namespace, no proxy, cannot load $url" \
            "got: ${line:-$(tr '\n' '|' <"$B")}" "$B.stderr"
    fi
done

# --- the client: inside the private network, out through tinyproxy -------------------------------
CLIENT_OUT="$WORK/client.out"
CLIENT_ERR="$WORK/client.log"
CLIENT_DRAIN_SECS=30
ip netns exec "$NS_PRIV" "$BURROW" client wss://relay.public:8443/burrow --token "$TOKEN" \
    --ca "$PKI/ca.pem" --via "http://$CORP_IP:8888" -R "0.0.0.0:$PROXY_PORT:proxy" \
    --proxy-auth "$P_USER:$P_PASS" --deny blocked.internal --status 127.0.0.1:9901 \
    --drain-timeout "${CLIENT_DRAIN_SECS}s" </dev/null >"$CLIENT_OUT" 2>"$CLIENT_ERR" &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")

# readyz READY-SECS: true once the client's /readyz answers 200 (the documented CI wait loop).
readyz() {
    local code
    for _ in $(seq $(($1 * 5))); do
        code=$(nsx "$NS_PRIV" curl -q -s -o /dev/null --max-time 2 -w '%{http_code}' \
            http://127.0.0.1:9901/readyz 2>/dev/null) || true
        [[ $code == 200 ]] && return 0
        running "$CLIENT_PID" || return 1
        sleep 0.2
    done
    return 1
}
if readyz 30; then
    pass "client: /readyz answers 200 (connected through tinyproxy, -R bound)"
else
    die "client: /readyz never answered 200 within 30 s; lines: $(client_lines)" "$CLIENT_ERR" \
        "$TINYPROXY_LOG" "$RELAY_LOG"
fi
expect "client: prints 'bound R 0.0.0.0:$PROXY_PORT -> proxy'" \
    "$(grep -E '^bound R ' "$CLIENT_OUT" | head -n 1)" "bound R 0.0.0.0:$PROXY_PORT -> proxy" \
    "$CLIENT_ERR"
if grep -q 'CONNECT relay.public:8443' "$TINYPROXY_LOG"; then
    pass "corp: tinyproxy carried the client's CONNECT relay.public:8443"
else
    fail "corp: tinyproxy carried the client's CONNECT relay.public:8443" "not in its log" \
        "$TINYPROXY_LOG"
fi

# --- check 2: through the relay's proxy port, the browser loads both private apps --------------
PROXY_ARGS=(--proxy "$RELAY_PROXY" --user "$P_USER" --pass "$P_PASS")
B="$WORK/browser-2-tunnel.log"
browser "$B" "${PROXY_ARGS[@]}" "http://app.internal/" "https://secure.internal:9443/" \
    "http://blocked.internal/"
expect_page "browser via the relay: http://app.internal/ shows the private app's marker" "$B" \
    "http://app.internal/" "$HTTP_MARKER" "$B.stderr" "$CLIENT_ERR" "$RELAY_LOG"
expect_page "browser via the relay: https://secure.internal:9443/ (CONNECT, self-signed) shows its marker" \
    "$B" "https://secure.internal:9443/" "$HTTPS_MARKER" "$B.stderr" "$CLIENT_ERR" "$RELAY_LOG"
line=$(goto_line "$B" "http://blocked.internal/")
if [[ $line == *" status=403 "* ]]; then
    pass "browser via the relay: http://blocked.internal/ (client --deny) answers 403"
else
    fail "browser via the relay: http://blocked.internal/ (client --deny) answers 403" \
        "got: ${line:-$(tr '\n' '|' <"$B")}" "$CLIENT_ERR"
fi
if grep -Eq '^request 10\.231\.1\.[0-9]+ "GET / HTTP/1\.1" host=app\.internal ua=.*HeadlessChrome' \
    "$WORK/app-http.log" &&
    grep -Eq '^request 10\.231\.1\.[0-9]+ .* host=secure\.internal:9443 ua=.*HeadlessChrome' \
        "$WORK/app-https.log"; then
    pass "apps: the browser's requests arrived from inside the private network (10.231.1.x)"
else
    fail "apps: the browser's requests arrived from inside the private network (10.231.1.x)" \
        "no such request lines" "$WORK/app-http.log" "$WORK/app-https.log"
fi

# --- check 3: the proxy's refusals, with curl from the cloud namespace -------------------------
# proxy_status ARGS...: the HTTP status curl in the cloud namespace saw via the relay's port.
proxy_status() {
    nsx "$NS_CLOUD" curl -q -sS -o /dev/null --max-time 10 -w '%{http_code}' -x "$RELAY_PROXY" \
        "$@" 2>/dev/null || true
}
expect "curl via the relay: blocked.internal with good credentials answers 403" \
    "$(proxy_status --proxy-user "$P_USER:$P_PASS" http://blocked.internal/)" 403 "$CLIENT_ERR"
expect "curl via the relay: wrong proxy credentials answer 407" \
    "$(proxy_status --proxy-user "$P_USER:wrong-$P_PASS" http://app.internal/)" 407 "$CLIENT_ERR"
expect "curl via the relay: no proxy credentials answer 407" \
    "$(proxy_status http://app.internal/)" 407 "$CLIENT_ERR"
if grep -q '^request .* host=blocked\.internal' "$WORK/app-http.log"; then
    fail "apps: the denied requests for blocked.internal never reached the app" "the app logged it" \
        "$WORK/app-http.log"
else
    pass "apps: the denied requests for blocked.internal never reached the app"
fi

# --- check 3b: the operator's view: the relay's /status in Chromium, with the live session ----
# A wrong token first, so the page has a refusal to list. The browser runs in the public
# namespace: the admin listener is on the relay's loopback.
names=("operator's view: the relay's /status loads in Chromium (200, 'burrow relay')"
    "operator's view: /status lists the client's session with its token name and peer"
    "operator's view: /status lists the binding 0.0.0.0:$PROXY_PORT (proxy) with its visitors"
    "operator's view: /status lists the wrong-token refusal"
    "operator's view: a screenshot of /status was saved"
    "operator's view: /config masks the relay's token")
nsx "$NS_PUB" curl -q -s -o /dev/null --max-time 5 --cacert "$PKI/ca.pem" \
    -H "Authorization: Bearer wrong-token" https://relay.public:8443/metrics || true
STATUS_URL="http://127.0.0.1:$ADMIN_PORT/status"
STATUS_SHOT="$WORK/status.png"
B="$WORK/browser-3b-status.log"
timeout 120 ip netns exec "$NS_PUB" node "$HERE/browser.mjs" --viewport 1000x600 \
    --dom '#sessions' --dom '#bindings' --dom '#refusals' --screenshot "$STATUS_SHOT" \
    "$STATUS_URL" </dev/null >"$B" 2>"$B.stderr" || echo "browser.mjs exit $?" >>"$B"
expect_page "${names[0]}" "$B" "$STATUS_URL" "burrow relay" "$B.stderr" "$RELAY_LOG"
dom_line() { grep -F -- "dom $1 text=" "$B" | head -n 1 || true; }
line=$(dom_line '#sessions')
# The session's peer is tinyproxy's address on the public side.
if [[ $line == *default*10.231.2.1:* ]]; then
    pass "${names[1]}"
else
    fail "${names[1]}" "got: ${line:-$(tr '\n' '|' <"$B")}" "$B.stderr"
fi
line=$(dom_line '#bindings')
if [[ $line == *"0.0.0.0:$PROXY_PORT"*"(proxy)"* ]]; then
    pass "${names[2]}"
else
    fail "${names[2]}" "got: ${line:-$(tr '\n' '|' <"$B")}" "$B.stderr"
fi
line=$(dom_line '#refusals')
if [[ $line == *"wrong token"* ]]; then
    pass "${names[3]}"
else
    fail "${names[3]}" "got: ${line:-$(tr '\n' '|' <"$B")}" "$B.stderr"
fi
if grep -Eq "^screenshot .* bytes=[1-9][0-9]*$" "$B" && [[ -s $STATUS_SHOT ]]; then
    pass "${names[4]} ($(stat -c %s "$STATUS_SHOT") bytes)"
    if [[ -n ${STATUS_PNG:-} ]]; then cp "$STATUS_SHOT" "$STATUS_PNG"; fi
else
    fail "${names[4]}" "$(tr '\n' '|' <"$B")" "$B.stderr"
fi
config=$(nsx "$NS_PUB" curl -q -sS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/config" 2>&1 || true)
if [[ $config == *'token = "***"'* && $config != *"$TOKEN"* ]]; then
    pass "${names[5]}"
else
    fail "${names[5]}" "no token = \"***\" line, or the token itself in the text"
fi
if [[ -n ${ONLY_STATUS:-} ]]; then
    summary
    exit
fi

# --- check 3c: SOCKS5 on a relay proxy port: Chromium with --proxy-server=socks5://… --------------
# Chromium does no SOCKS5 authentication, so a second client in the private network binds its
# own -R port without --proxy-auth (what it may reach is limited by --allow instead). Chromium sends the names to the proxy (socks5 is resolved
# remotely), and app.internal resolves only in the private namespace: the egress resolved it.
# The client is stopped afterwards, so the checks below see only the first one.
SOCKS_PORT=18081
SOCKS_OUT="$WORK/client-socks.out"
SOCKS_ERR="$WORK/client-socks.log"
names=("socks5: a second client binds -R 0.0.0.0:$SOCKS_PORT:proxy (no credentials)"
    "browser via socks5://relay: http://app.internal/ shows the private app's marker"
    "browser via socks5://relay: https://secure.internal:9443/ shows its marker"
    "socks5: the relay port's client logged the browser's connections as socks5")
ip netns exec "$NS_PRIV" "$BURROW" client wss://relay.public:8443/burrow --token "$TOKEN" \
    --ca "$PKI/ca.pem" --via "http://$CORP_IP:8888" -R "0.0.0.0:$SOCKS_PORT:proxy" \
    --allow app.internal:80 --allow secure.internal:9443 </dev/null >"$SOCKS_OUT" 2>"$SOCKS_ERR" &
SOCKS_PID=$!
PIDS+=("$SOCKS_PID")
if line=$(wait_match "$SOCKS_OUT" '^bound R .*' "$SOCKS_PID" 1 30); then
    expect "${names[0]}" "$line" "bound R 0.0.0.0:$SOCKS_PORT -> proxy" "$SOCKS_ERR"
    B="$WORK/browser-3c-socks.log"
    browser "$B" --proxy "socks5://$RELAY_CLOUD_IP:$SOCKS_PORT" "http://app.internal/" \
        "https://secure.internal:9443/"
    expect_page "${names[1]}" "$B" "http://app.internal/" "$HTTP_MARKER" "$B.stderr" \
        "$SOCKS_ERR" "$RELAY_LOG"
    expect_page "${names[2]}" "$B" "https://secure.internal:9443/" "$HTTPS_MARKER" "$B.stderr" \
        "$SOCKS_ERR" "$RELAY_LOG"
    # The relay serves the -R port's proxy door; its conn lines end in `socks5 OUTCOME`.
    if wait_match "$RELAY_LOG" 'conn [0-9]+ [0-9.]+:[0-9]+ -> app\.internal:80 .* socks5 ' "" 1 10 \
        >/dev/null; then
        pass "${names[3]}"
    else
        fail "${names[3]}" "no 'conn ... -> app.internal:80 ... socks5' line" "$RELAY_LOG"
    fi
else
    for n in "${names[@]}"; do fail "$n" "the second client bound nothing" "$SOCKS_ERR"; done
fi
kill -TERM "$SOCKS_PID" 2>/dev/null || true
wait_exit "$SOCKS_PID" 15 || kill -KILL "$SOCKS_PID" 2>/dev/null || true

# --- check 4: the relay dies (SIGKILL) and comes back; the client reconnects through tinyproxy ---
names=("relay SIGKILL: the client prints 'lost' and 'retrying'"
    "relay restart: the client prints 'connected' and 'bound R 0.0.0.0:$PROXY_PORT -> proxy' again"
    "relay restart: /readyz answers 200 again"
    "relay restart: the reconnect went through tinyproxy (a second CONNECT relay.public:8443)"
    "relay restart: the browser loads http://app.internal/ again")
disown "$RELAY_PID" 2>/dev/null || true # no "Killed" job notice in the output
kill -KILL "$RELAY_PID"
for _ in $(seq 50); do running "$RELAY_PID" || break; sleep 0.1; done
if wait_match "$CLIENT_OUT" '^lost: .*' "$CLIENT_PID" 1 30 >/dev/null &&
    wait_match "$CLIENT_OUT" '^retrying in [0-9.]+ s' "$CLIENT_PID" 1 30 >/dev/null; then
    pass "${names[0]}"
else
    fail "${names[0]}" "client lines: $(client_lines)" "$CLIENT_ERR"
fi
if ! start_relay; then
    for n in "${names[@]:1}"; do fail "$n" "no relay could listen on 0.0.0.0:8443 again" "$RELAY_LOG"; done
else
    # The backoff after one failed attempt or two is well under 10 s; 40 s is plenty.
    if wait_match "$CLIENT_OUT" '^connected$' "$CLIENT_PID" 2 40 >/dev/null &&
        line=$(wait_match "$CLIENT_OUT" '^bound R .*' "$CLIENT_PID" 2 10); then
        expect "${names[1]}" "$line" "bound R 0.0.0.0:$PROXY_PORT -> proxy" "$CLIENT_ERR" \
            "$RELAY_LOG"
    else
        fail "${names[1]}" "client lines: $(client_lines)" "$CLIENT_ERR" "$RELAY_LOG"
    fi
    if readyz 20; then
        pass "${names[2]}"
    else
        fail "${names[2]}" "client lines: $(client_lines)" "$CLIENT_ERR"
    fi
    n_connect=$(grep -c 'CONNECT relay.public:8443' "$TINYPROXY_LOG" || true)
    if ((n_connect >= 2)); then
        pass "${names[3]}"
    else
        fail "${names[3]}" "tinyproxy logged $n_connect CONNECTs" "$TINYPROXY_LOG"
    fi
    B="$WORK/browser-4-restart.log"
    browser "$B" "${PROXY_ARGS[@]}" "http://app.internal/"
    expect_page "${names[4]}" "$B" "http://app.internal/" "$HTTP_MARKER" "$B.stderr" \
        "$CLIENT_ERR" "$RELAY_LOG"
fi

# browser_download NAME: the browser fetches the 50 MiB file (rate-limited) in the background,
# its progress lines in $WORK/browser-NAME.log; returns once 4 MiB have arrived (bounded: 60 s,
# Chromium's start included), false if the download never got that far. Sets B (the log),
# DL_PID and at (bytes so far).
browser_download() {
    B="$WORK/browser-$1.log"
    timeout 120 ip netns exec "$NS_CLOUD" node "$HERE/browser.mjs" "${PROXY_ARGS[@]}" \
        --fetch "/big.bin?rate=$BIG_RATE" "http://app.internal/" </dev/null >"$B" 2>"$B.stderr" &
    DL_PID=$!
    PIDS+=("$DL_PID")
    at=0
    for _ in $(seq 600); do
        at=$(grep -Eo '^progress [0-9]+' "$B" 2>/dev/null | tail -n 1 | awk '{print $2}') || true
        at=${at:-0}
        ((at >= 4 * 1024 * 1024)) && return 0
        running "$DL_PID" || return 1
        sleep 0.1
    done
    return 1
}

# --- check 4b: the corporate proxy restarts while the browser downloads 50 MiB ------------------
# tinyproxy gets SIGTERM mid-download (it closes every connection it carries, the client's
# tunnel to the relay among them) and starts again on the same port: the client reconnects
# through it, the relay resumes the session, and the browser's download completes intact.
names=("tinyproxy restart mid-download: the browser's 50 MiB fetch completes with the right sha256"
    "tinyproxy restart mid-download: the client printed 'lost: ...; resuming N streams' and 'connected; resumed N streams'"
    "tinyproxy restart mid-download: the client reconnected through the new tinyproxy")
if ! running "$CLIENT_PID"; then
    for n in "${names[@]}"; do fail "$n" "the client is not running" "$CLIENT_ERR"; done
else
    if ! browser_download 4b-proxy-restart; then
        for n in "${names[@]}"; do
            fail "$n" "the download never got going: $(tr '\n' '|' <"$B")" "$B.stderr" "$CLIENT_ERR"
        done
    else
        lines_before=$(wc -l <"$CLIENT_OUT")
        log_before=$(wc -l <"$CLIENT_ERR")
        kill -TERM "$TINYPROXY_PID"
        wait_exit "$TINYPROXY_PID" 5 || { kill -KILL "$TINYPROXY_PID"; wait_exit "$TINYPROXY_PID" 5; } ||
            true
        echo "# tinyproxy stopped with $at of $BIG_SIZE bytes in the browser"
        if ((at >= BIG_SIZE)); then
            fail "tinyproxy restart mid-download: the restart landed mid-transfer" \
                "the browser already had all $at bytes"
        fi
        TINYPROXY2_LOG="$WORK/tinyproxy-2.log"
        tp_up=0
        for _ in $(seq 20); do # the port may linger for a moment: bounded retries
            if start_tinyproxy "$TINYPROXY2_LOG"; then
                tp_up=1
                break
            fi
            kill "$TINYPROXY_PID" 2>/dev/null || true
            sleep 0.25
        done
        ((tp_up)) || fail "tinyproxy restart mid-download: tinyproxy listens again on $CORP_IP:8888" \
            "it did not" "$TINYPROXY2_LOG"
        dl_rc=timeout
        if wait_exit "$DL_PID" 90; then dl_rc=$EXIT_RC; fi
        line=$(grep -E '^fetch ' "$B" | head -n 1 || true)
        expect "${names[0]}" "$line" "fetch /big.bin?rate=$BIG_RATE sha256=$BIG_SHA bytes=$BIG_SIZE" \
            "$B" "$B.stderr" "$CLIENT_ERR" "$RELAY_LOG"
        [[ $dl_rc == 0 ]] || echo "# browser.mjs exit $dl_rc"
        after=$(tail -n "+$((lines_before + 1))" "$CLIENT_OUT")
        # A reset would show as a `lost` without `; resuming` (other than a failed attempt while
        # tinyproxy was down: `lost: cannot reach relay ...`), or as the client's warning "relay
        # did not resume the session" in its log.
        resets=$(grep -E '^lost: ' <<<"$after" | grep -Ev '; resuming [0-9]+ streams$' |
            grep -v '^lost: cannot reach relay ' || true)
        resets+=$(tail -n "+$((log_before + 1))" "$CLIENT_ERR" | grep -E 'did not resume' || true)
        if grep -Eq '^lost: .*; resuming [0-9]+ streams$' <<<"$after" &&
            grep -Eq '^connected; resumed [0-9]+ streams$' <<<"$after" && [[ -z $resets ]]; then
            pass "${names[1]}"
        else
            fail "${names[1]}" "client lines since the restart: $(tr '\n' '|' <<<"$after")" \
                "$CLIENT_ERR"
        fi
        if ((tp_up)) && wait_match "$TINYPROXY2_LOG" 'CONNECT relay\.public:8443' "" 1 5 >/dev/null; then
            pass "${names[2]}"
        else
            fail "${names[2]}" "the new tinyproxy logged no CONNECT relay.public:8443" \
                "$TINYPROXY2_LOG"
        fi
    fi
fi

# --- check 5: SIGTERM to the client while the browser downloads 50 MiB through it --------------
names=("client SIGTERM mid-download: the browser's 50 MiB fetch completes with the right sha256"
    "client SIGTERM mid-download: the client exits 0 within its drain timeout (${CLIENT_DRAIN_SECS}s)")
if ! running "$CLIENT_PID"; then
    for n in "${names[@]}"; do fail "$n" "the client is not running" "$CLIENT_ERR"; done
else
    if ! browser_download 5-download; then
        for n in "${names[@]}"; do
            fail "$n" "the download never got going: $(tr '\n' '|' <"$B")" "$B.stderr" "$CLIENT_ERR"
        done
    else
        kill -TERM "$CLIENT_PID"
        term_at=$SECONDS
        echo "# SIGTERM to the client with $at of $BIG_SIZE bytes in the browser"
        if ((at >= BIG_SIZE)); then
            fail "client SIGTERM mid-download: the signal landed mid-transfer" \
                "the browser already had all $at bytes"
        fi
        dl_rc=timeout
        if wait_exit "$DL_PID" 90; then dl_rc=$EXIT_RC; fi
        line=$(grep -E '^fetch ' "$B" | head -n 1 || true)
        expect "${names[0]}" "$line" "fetch /big.bin?rate=$BIG_RATE sha256=$BIG_SHA bytes=$BIG_SIZE" \
            "$B" "$B.stderr" "$CLIENT_ERR"
        [[ $dl_rc == 0 ]] || echo "# browser.mjs exit $dl_rc"
        client_rc=still-running
        if wait_exit "$CLIENT_PID" $((CLIENT_DRAIN_SECS + 10)); then client_rc=$EXIT_RC; fi
        took=$((SECONDS - term_at))
        if [[ $client_rc == 0 ]] && ((took <= CLIENT_DRAIN_SECS + 2)); then
            pass "${names[1]} (exited ${took}s after SIGTERM)"
        else
            fail "${names[1]}" "exit $client_rc after ${took}s; lines: $(client_lines)" "$CLIENT_ERR"
        fi
    fi
fi

# --- secrets stay out of the logs --------------------------------------------------------------
basic=$(printf '%s' "$P_USER:$P_PASS" | base64)
leaks=$(grep -lF -e "$TOKEN" -e "$P_PASS" -e "$basic" "$WORK"/relay-*.log "$CLIENT_ERR" \
    "$CLIENT_OUT" 2>/dev/null || true)
if [[ -z $leaks ]]; then
    pass "no relay or client log contains the token or the proxy password"
else
    fail "no relay or client log contains the token or the proxy password" \
        "found in: $(tr '\n' ' ' <<<"${leaks//"$WORK"\//}")"
fi

summary
