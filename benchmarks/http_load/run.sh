#!/usr/bin/env bash
# HTTP load through Chasqui beside a plain nginx reverse proxy, in one run (issue 8):
#
#   chasqui: wrk -> sin's chasqui-gateway -> NATS -> chasqui-router -> NATS -> segip's
#            chasqui-gateway -> upstream
#   nginx:   wrk -> nginx (proxy_pass) -> upstream
#
# The upstream is nginx answering a fixed 1 KiB JSON document (`return 200`), the same one for
# both paths. Everything runs on loopback, on free ports, under one temp dir, and is stopped on
# every way out. Each phase is a short warm-up then SECONDS of measured load; the whole run
# takes about 2 x (WARMUP + SECONDS) + a few seconds of setup.
#
#   benchmarks/http_load/run.sh
#
# Settings (environment): CHASQUI_BUILD_DIR (default build), SECONDS_PER_PHASE (10),
# WARMUP_SECONDS (2), CONNECTIONS (16: wrk connections = requests in flight), THREADS (2),
# SEND_ASAP (1 passes --send-asap to the router and both gateways: every NATS publish flushed at
# once instead of nats.c's batching of up to 1 ms), PROVIDER_WORKERS (8: the provider gateway's
# --provider-workers), KEEP_DIR (1 keeps the temp dir with every
# log). Needs wrk and nginx (Debian packages wrk and
# nginx-light), nats-server, python3, curl, and chasqui, chasqui-router, chasqui-gateway built.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD_DIR=${CHASQUI_BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
SECS=${SECONDS_PER_PHASE:-10}
WARMUP=${WARMUP_SECONDS:-2}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
ASAP=()
if [ "${SEND_ASAP:-0}" = 1 ]; then ASAP=(--send-asap); fi
CHASQUI="$BUILD_DIR/services/gateway/chasqui"
GATEWAY="$BUILD_DIR/services/gateway/chasqui-gateway"
ROUTER="$BUILD_DIR/services/router/chasqui-router"

fail() { echo "http_load: $*" >&2; exit 2; }

for bin in "$CHASQUI" "$GATEWAY" "$ROUTER"; do
  [ -x "$bin" ] || fail "$bin is missing; build it: ninja -C $BUILD_DIR chasqui chasqui-gateway chasqui-router"
done
for tool in wrk nginx nats-server python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 ||
    fail "$tool is missing (apt-get install -y wrk nginx-light nats-server python3 curl)"
done
NGINX=$(PATH="$PATH:/usr/sbin" command -v nginx)

DIR=$(mktemp -d /tmp/chasqui-http-load.XXXXXX)
chmod 755 "$DIR"  # nginx's workers may run as another user and read their temp paths here
PIDS=()
NAMES=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_DIR:-0}" = 1 ]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() {  # start NAME CMD...: in the background, output to $DIR/NAME.log
  local name=$1; shift
  "$@" >"$DIR/$name.log" 2>&1 &
  PIDS+=($!)
  NAMES+=("$name")
}

cpu_ticks() {  # utime+stime of each started process and its children (nginx's workers), in
  local pid p   # clock ticks, one line each
  for pid in "${PIDS[@]}"; do
    for p in $pid $(pgrep -P "$pid" || true); do cat "/proc/$p/stat" 2>/dev/null || true; done |
      awk '{sub(/.*\) /, ""); t += $12 + $13} END {print t + 0}'
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # wait_for SECONDS WHAT CMD...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "timed out after ${secs}s waiting for $what (logs in $DIR; KEEP_DIR=1 keeps them)"
}

# --- the upstream and the plain reverse proxy: two nginx instances ---------------------------
UPSTREAM_PORT=$(free_port)
PROXY_PORT=$(free_port)
# 1024 bytes exactly: {"data":"xxx..."}
PAYLOAD=$(python3 -c 'print("{\"data\":\"" + "x" * (1024 - 11) + "\"}", end="")')
[ ${#PAYLOAD} -eq 1024 ] || fail "payload is ${#PAYLOAD} bytes, expected 1024"

nginx_conf() {  # nginx_conf NAME SERVER_BLOCK
  local name=$1 server=$2
  mkdir -p "$DIR/$name"
  cat >"$DIR/$name/nginx.conf" <<EOF
worker_processes 1;
pid $DIR/$name/nginx.pid;
error_log $DIR/$name/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $DIR/$name/body;
  proxy_temp_path $DIR/$name/proxy;
  fastcgi_temp_path $DIR/$name/fastcgi;
  uwsgi_temp_path $DIR/$name/uwsgi;
  scgi_temp_path $DIR/$name/scgi;
  keepalive_requests 1000000;
  $server
}
EOF
}
nginx_conf upstream "server {
    listen 127.0.0.1:$UPSTREAM_PORT;
    location / { default_type application/json; return 200 '$PAYLOAD'; }
  }"
# A plain reverse proxy, as Kong (IOP v1's gateway) is nginx underneath: proxy_pass with
# nginx's defaults, i.e. a new connection to the upstream per request, as chasqui-gateway does.
nginx_conf proxy "server {
    listen 127.0.0.1:$PROXY_PORT;
    location / { proxy_pass http://127.0.0.1:$UPSTREAM_PORT; }
  }"
start nginx-upstream "$NGINX" -p "$DIR/upstream" -c "$DIR/upstream/nginx.conf" -g 'daemon off;'
start nginx-proxy "$NGINX" -p "$DIR/proxy" -c "$DIR/proxy/nginx.conf" -g 'daemon off;'

# --- the backbone: nats-server, router, segip's gateway (provider), sin's gateway (consumer) --
mkdir -p "$DIR/keys"
for e in segip sin; do
  "$CHASQUI" keygen --entity "$e" --env test --out "$DIR/keys" >/dev/null
done
"$CHASQUI" keygen --entity router --role router --env test --out "$DIR/keys" >/dev/null
"$CHASQUI" trust --out "$DIR/trust.json" \
  "$DIR/keys/segip.test.pub" "$DIR/keys/sin.test.pub" "$DIR/keys/router.test.pub" >/dev/null

start nats nats-server -a 127.0.0.1 -p -1 --ports_file_dir "$DIR"
wait_for 10 "nats-server's ports file" bash -c "ls $DIR/*.ports"
NATS_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nats"][0])' "$(ls "$DIR"/*.ports)")
ROUTER_OPS=$(free_port)
SEGIP_OPS=$(free_port)
SIN_OPS=$(free_port)
SIN_PORT=$(free_port)
start router "$ROUTER" --env test --nats "$NATS_URL" --key "$DIR/keys/router.test.key" \
  --trust "$DIR/trust.json" --id bench --ops-port "$ROUTER_OPS" --startup-hold-ms 0 "${ASAP[@]}"
start segip "$GATEWAY" --env test --nats "$NATS_URL" --key "$DIR/keys/segip.test.key" \
  --trust "$DIR/trust.json" --listen 127.0.0.1:0 --ops-port "$SEGIP_OPS" \
  --serve "bench_json=http://127.0.0.1:$UPSTREAM_PORT/json" \
  --provider-workers "${PROVIDER_WORKERS:-8}" "${ASAP[@]}"
start sin "$GATEWAY" --env test --nats "$NATS_URL" --key "$DIR/keys/sin.test.key" \
  --trust "$DIR/trust.json" --listen "127.0.0.1:$SIN_PORT" --ops-port "$SIN_OPS" "${ASAP[@]}"

wait_for 10 "the upstream nginx" curl -sf -X POST "http://127.0.0.1:$UPSTREAM_PORT/json"
wait_for 10 "the proxy nginx" curl -sf -X POST "http://127.0.0.1:$PROXY_PORT/json"
wait_for 20 "the router" curl -sf "http://127.0.0.1:$ROUTER_OPS/readyz"
wait_for 20 "segip's gateway" curl -sf "http://127.0.0.1:$SEGIP_OPS/readyz"
wait_for 20 "sin's gateway" curl -sf "http://127.0.0.1:$SIN_OPS/readyz"

CHASQUI_URL="http://127.0.0.1:$SIN_PORT/v1/segip/bench_json"
NGINX_URL="http://127.0.0.1:$PROXY_PORT/json"
REQUEST_BODY='{"ci":"4567890"}'
for url in "$CHASQUI_URL" "$NGINX_URL"; do
  got=$(curl -s -X POST -H 'Content-Type: application/json' -H 'X-Chasqui-End-User: bench.user' \
    -d "$REQUEST_BODY" "$url")
  [ "$got" = "$PAYLOAD" ] || fail "$url did not answer the upstream's document: ${got:0:200}"
done

cat >"$DIR/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$REQUEST_BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Chasqui-End-User"] = "bench.user"
EOF

# --- load -----------------------------------------------------------------------------------
run_wrk() {  # run_wrk NAME URL: warm-up, then the measured phase into $DIR/NAME.wrk
  local name=$1 url=$2
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 10s -s "$DIR/post.lua" "$url" \
    >/dev/null
  cpu_ticks >"$DIR/$name.cpu0"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECS}s" --timeout 10s --latency -s "$DIR/post.lua" \
    "$url" >"$DIR/$name.wrk"
  cpu_ticks >"$DIR/$name.cpu1"
}
# CPU microseconds per request of each process that did work in phase NAME.
cpu_per_request() {
  local name=$1 requests
  requests=$(awk '/requests in/ {print $1}' "$DIR/$name.wrk")
  paste <(printf '%s\n' "${NAMES[@]}") "$DIR/$name.cpu0" "$DIR/$name.cpu1" |
    awk -v n="$requests" -v hz="$(getconf CLK_TCK)" '
      { d = ($3 - $2) * 1e6 / hz / n; if (d >= 1) { printf "%s%s %.0f", sep, $1, d; sep = ", " } }
      END { print "" }'
}
rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
pct() { awk -v p="$2%" '$1 == p {print $2}' "$1"; }
non2xx() { awk '/Non-2xx or 3xx responses:/ {print $NF; f=1} END {if (!f) print 0}' "$1"; }
sockerr() { grep -o 'Socket errors:.*' "$1" || echo "Socket errors: none"; }

echo "http_load: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, loopback; 1 KiB JSON answer;" \
  "wrk -t$THREADS -c$CONNECTIONS, ${WARMUP}s warm-up + ${SECS}s per phase," \
  "send_asap ${SEND_ASAP:-0}, provider workers ${PROVIDER_WORKERS:-8}"
run_wrk chasqui "$CHASQUI_URL"
run_wrk nginx "$NGINX_URL"

printf '\n%-8s %12s %10s %10s %10s %8s  %s\n' path req/s p50 p90 p99 non-2xx errors
for name in chasqui nginx; do
  f="$DIR/$name.wrk"
  printf '%-8s %12s %10s %10s %10s %8s  %s\n' "$name" "$(rps "$f")" "$(pct "$f" 50)" \
    "$(pct "$f" 90)" "$(pct "$f" 99)" "$(non2xx "$f")" "$(sockerr "$f")"
done
echo
for name in chasqui nginx; do
  echo "$name: CPU us/request by process (wrk itself not counted): $(cpu_per_request "$name")"
done
python3 - "$(rps "$DIR/chasqui.wrk")" "$(rps "$DIR/nginx.wrk")" <<'EOF'
import sys
c, n = float(sys.argv[1]), float(sys.argv[2])
print(f"\nchasqui / nginx throughput: {c / n:.3f} ({c:,.0f} vs {n:,.0f} req/s)")
EOF
bad=$(( $(non2xx "$DIR/chasqui.wrk") + $(non2xx "$DIR/nginx.wrk") ))
if [ "$bad" -ne 0 ]; then
  echo "http_load: $bad answers were not 2xx; see $DIR (KEEP_DIR=1 keeps it)" >&2
  exit 1
fi
