#!/usr/bin/env bash
# A whole Chasqui backbone on this machine, on loopback, with every file under one directory.
#
#   ./deploy/local-backbone.sh demo     install, build, start, and run the demo exchange
#   ./deploy/local-backbone.sh up       install, build and start (nats-server, router, segip)
#   ./deploy/local-backbone.sh status   readiness of each part
#   ./deploy/local-backbone.sh down     stop everything, in order
#
# Settings (environment): CHASQUI_DATA (default ./data), CHASQUI_NATS_PORT (4222),
# CHASQUI_ROUTER_OPS_PORT (9101), CHASQUI_ENV (test), CHASQUI_BUILD_DIR (build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=${CHASQUI_DATA:-$ROOT/data}
BUILD_DIR=${CHASQUI_BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
ENV_NAME=${CHASQUI_ENV:-test}
NATS_PORT=${CHASQUI_NATS_PORT:-4222}
OPS_PORT=${CHASQUI_ROUTER_OPS_PORT:-9101}
NATS_URL="nats://127.0.0.1:$NATS_PORT"
# A local backbone runs on one clock: a short freshness window keeps the router's startup
# hold (window plus skew, its replay protection after a start) at 10 s.
WINDOW_MS=${CHASQUI_FRESHNESS_WINDOW_MS:-5000}
CHASQUI="$BUILD_DIR/services/gateway/chasqui"
ROUTER="$BUILD_DIR/services/router/chasqui-router"
KEYS="$DATA/keys"
RUN="$DATA/run"
LOGS="$DATA/logs"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

start() {  # start NAME CMD...: runs in the background, logs to $LOGS/NAME.log
  local name=$1; shift
  if running "$name"; then echo "$name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  "$@" >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  echo "$name started (pid $!), log $LOGS/$name.log"
}

stop() {
  local name=$1
  if ! running "$name"; then rm -f "$RUN/$name.pid"; return; fi
  local pid; pid=$(cat "$RUN/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$RUN/$name.pid"
  echo "$name stopped"
}

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out after ${secs}s waiting for $what" >&2
  return 1
}

keys() {
  mkdir -p "$KEYS"
  for e in segip sin; do
    [ -f "$KEYS/$e.$ENV_NAME.key" ] || "$CHASQUI" keygen --entity "$e" --env "$ENV_NAME" --out "$KEYS" >/dev/null
  done
  [ -f "$KEYS/router.$ENV_NAME.key" ] ||
    "$CHASQUI" keygen --entity router --role router --env "$ENV_NAME" --out "$KEYS" >/dev/null
  # mallory has keys the platform never trusted: the demo's refused request.
  [ -f "$KEYS/mallory.$ENV_NAME.key" ] ||
    "$CHASQUI" keygen --entity mallory --env "$ENV_NAME" --out "$KEYS" >/dev/null
  "$CHASQUI" trust --out "$DATA/trust.json" \
    "$KEYS/segip.$ENV_NAME.pub" "$KEYS/sin.$ENV_NAME.pub" "$KEYS/router.$ENV_NAME.pub" >/dev/null
  echo "keys in $KEYS (private keys mode 0600); trust file $DATA/trust.json"
}

up() {
  ./deploy/install-deps.sh
  say "build"
  ./deploy/build.sh
  mkdir -p "$RUN" "$LOGS" "$DATA/nats"
  say "keys and trust"
  keys
  say "start"
  start nats nats-server -a 127.0.0.1 -p "$NATS_PORT" -sd "$DATA/nats" -l "$LOGS/nats-server.log"
  wait_for 10 "nats-server on 127.0.0.1:$NATS_PORT" bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT"
  start router "$ROUTER" --env "$ENV_NAME" --nats "$NATS_URL" --key "$KEYS/router.$ENV_NAME.key" \
    --trust "$DATA/trust.json" --id local1 --ops-port "$OPS_PORT" \
    --freshness-window-ms "$WINDOW_MS"
  start segip "$CHASQUI" serve-demo --nats "$NATS_URL" --key "$KEYS/segip.$ENV_NAME.key" \
    --trust "$DATA/trust.json"
  echo "router is unready for $((2 * WINDOW_MS / 1000)) s after a start (replay protection: it waits out the freshness window)..."
  wait_for 60 "the router's /readyz on port $OPS_PORT" curl -sf "http://127.0.0.1:$OPS_PORT/readyz"
  echo "backbone up: nats $NATS_URL, router metrics http://127.0.0.1:$OPS_PORT/metrics"
}

down() {
  stop segip
  stop router
  stop nats
}

status() {
  for p in nats router segip; do
    if running "$p"; then echo "$p: running (pid $(cat "$RUN/$p.pid"))"; else echo "$p: stopped"; fi
  done
  echo -n "router /readyz: "
  curl -s "http://127.0.0.1:$OPS_PORT/readyz" || echo "no answer"
  echo
}

call() {  # call ENTITY SERVICE BODY [extra args]
  local who=$1 service=$2 body=$3; shift 3
  "$CHASQUI" call --nats "$NATS_URL" --key "$KEYS/$who.$ENV_NAME.key" --trust "$DATA/trust.json" \
    --provider segip --service "$service" --end-user ana.perez --purpose "demo" --body "$body" "$@"
}

demo() {
  up
  say "1. sin asks segip's persona_consulta about CI 4567890 (sealed end to end, signed, checked by the router)"
  call sin persona_consulta '{"ci":"4567890"}'
  say "2. mallory, whose key the platform never enrolled, tries the same"
  call mallory persona_consulta '{"ci":"4567890"}' || echo "-> refused, as it must be"
  say "3. sin asks for a service nobody serves"
  call sin persona_historial '{"ci":"4567890"}' --timeout-ms 3000 || echo "-> refused, as it must be"
  say "what the router counted (chasqui_router_requests_total)"
  curl -s "http://127.0.0.1:$OPS_PORT/metrics" | grep '^chasqui_router_requests_total' || true
  say "the router's log"
  tail -n 5 "$LOGS/router.log"
  echo
  echo "The backbone keeps running. Stop it with: ./deploy/local-backbone.sh down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  demo) demo ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
