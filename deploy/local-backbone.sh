#!/usr/bin/env bash
# A whole Chasqui backbone on this machine, on loopback, with every file under one directory.
#
#   ./deploy/local-backbone.sh demo     install, build, start, and run the demo exchange
#   ./deploy/local-backbone.sh up       install, build and start: nats-server, the audit service,
#                                       the router, segip's registry (deploy/demo_registry.py)
#                                       behind segip's gateway, and sin's gateway
#   ./deploy/local-backbone.sh status   readiness of each part
#   ./deploy/local-backbone.sh down     stop everything, in order
#
# Settings (environment): CHASQUI_DATA (default ./data), CHASQUI_NATS_PORT (4222),
# CHASQUI_ROUTER_OPS_PORT (9101), CHASQUI_ENV (test), CHASQUI_BUILD_DIR (build),
# CHASQUI_SIN_GATEWAY_PORT (8080), CHASQUI_SEGIP_GATEWAY_PORT (8090), CHASQUI_REGISTRY_PORT (8081),
# CHASQUI_SIN_GATEWAY_OPS_PORT (9102), CHASQUI_SEGIP_GATEWAY_OPS_PORT (9103),
# CHASQUI_AUDIT_OPS_PORT (9104).
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
SIN_GW_PORT=${CHASQUI_SIN_GATEWAY_PORT:-8080}
SEGIP_GW_PORT=${CHASQUI_SEGIP_GATEWAY_PORT:-8090}
REGISTRY_PORT=${CHASQUI_REGISTRY_PORT:-8081}
SIN_OPS_PORT=${CHASQUI_SIN_GATEWAY_OPS_PORT:-9102}
SEGIP_OPS_PORT=${CHASQUI_SEGIP_GATEWAY_OPS_PORT:-9103}
AUDIT_OPS_PORT=${CHASQUI_AUDIT_OPS_PORT:-9104}
CHASQUI="$BUILD_DIR/services/gateway/chasqui"
GATEWAY="$BUILD_DIR/services/gateway/chasqui-gateway"
ROUTER="$BUILD_DIR/services/router/chasqui-router"
AUDIT="$BUILD_DIR/services/audit/chasqui-audit"
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
  # The audit service signs the trace's checkpoints with its own key.
  [ -f "$KEYS/audit.$ENV_NAME.key" ] ||
    "$CHASQUI" keygen --role audit --env "$ENV_NAME" --out "$KEYS" >/dev/null
  # mallory has keys the platform never trusted: the demo's refused request.
  [ -f "$KEYS/mallory.$ENV_NAME.key" ] ||
    "$CHASQUI" keygen --entity mallory --env "$ENV_NAME" --out "$KEYS" >/dev/null
  # sin's systems authenticate to sin's gateway with this key.
  if [ ! -f "$KEYS/sin-api.key" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$KEYS/sin-api.key")
  fi
  "$CHASQUI" trust --out "$DATA/trust.json" "$KEYS/segip.$ENV_NAME.pub" \
    "$KEYS/sin.$ENV_NAME.pub" "$KEYS/router.$ENV_NAME.pub" "$KEYS/audit.$ENV_NAME.pub" >/dev/null
  echo "keys in $KEYS (private keys mode 0600); trust file $DATA/trust.json"
  # The bus enforces the subject plan: one nats-server user per entity and env, one for the
  # routers, each allowed only its own subjects; passwords in 0600 files, bcrypt in the config.
  # A data directory from an older version lacks users for newer parts: remake them all.
  local force=""
  if [ -f "$DATA/nats.conf" ] && ! grep -q "audit.$ENV_NAME" "$DATA/nats.conf"; then force=--force; fi
  if [ ! -f "$DATA/nats.conf" ] || [ -n "$force" ]; then
    "$CHASQUI" nats-config --trust "$DATA/trust.json" --env "$ENV_NAME" --out "$DATA/nats.conf" \
      --secrets-dir "$KEYS/nats" --listen "127.0.0.1:$NATS_PORT" $force
  fi
}

nats_login() {  # nats_login ENTITY: the flags that log ENTITY's process into the bus
  echo --nats "$NATS_URL" --nats-user "$1.$ENV_NAME" --nats-password-file "$KEYS/nats/$1.$ENV_NAME.password"
}

up() {
  ./deploy/install-deps.sh
  say "build"
  ./deploy/build.sh
  mkdir -p "$RUN" "$LOGS" "$DATA/nats"
  say "keys and trust"
  keys
  say "start"
  start nats nats-server -c "$DATA/nats.conf" -sd "$DATA/nats" -l "$LOGS/nats-server.log"
  wait_for 10 "nats-server on 127.0.0.1:$NATS_PORT" bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT"
  # The trace first: the router relays no reply whose record is not durable.
  # shellcheck disable=SC2046
  start audit "$AUDIT" serve --env "$ENV_NAME" --data "$DATA/audit" \
    --checkpoint-key "$KEYS/audit.$ENV_NAME.key" $(nats_login audit) --ops-port "$AUDIT_OPS_PORT"
  wait_for 20 "the audit service's /readyz on port $AUDIT_OPS_PORT" curl -sf "http://127.0.0.1:$AUDIT_OPS_PORT/readyz"
  # shellcheck disable=SC2046 # nats_login's words are separate flags
  start router "$ROUTER" --env "$ENV_NAME" $(nats_login router) --key "$KEYS/router.$ENV_NAME.key" \
    --trust "$DATA/trust.json" --id local1 --ops-port "$OPS_PORT" \
    --freshness-window-ms "$WINDOW_MS"
  start registry python3 deploy/demo_registry.py --port "$REGISTRY_PORT"
  # shellcheck disable=SC2046
  start segip "$GATEWAY" --env "$ENV_NAME" $(nats_login segip) --key "$KEYS/segip.$ENV_NAME.key" \
    --trust "$DATA/trust.json" --listen "127.0.0.1:$SEGIP_GW_PORT" --ops-port "$SEGIP_OPS_PORT" \
    --serve "persona_consulta=http://127.0.0.1:$REGISTRY_PORT/persona"
  # shellcheck disable=SC2046
  start sin "$GATEWAY" --env "$ENV_NAME" $(nats_login sin) --key "$KEYS/sin.$ENV_NAME.key" \
    --trust "$DATA/trust.json" --listen "127.0.0.1:$SIN_GW_PORT" --ops-port "$SIN_OPS_PORT" \
    --api-key-file "$KEYS/sin-api.key"
  wait_for 20 "segip's gateway" curl -sf "http://127.0.0.1:$SEGIP_OPS_PORT/readyz"
  wait_for 20 "sin's gateway" curl -sf "http://127.0.0.1:$SIN_OPS_PORT/readyz"
  echo "router is unready for $((2 * WINDOW_MS / 1000)) s after a start (replay protection: it waits out the freshness window)..."
  wait_for 60 "the router's /readyz on port $OPS_PORT" curl -sf "http://127.0.0.1:$OPS_PORT/readyz"
  echo "backbone up: nats $NATS_URL, router metrics http://127.0.0.1:$OPS_PORT/metrics, audit metrics http://127.0.0.1:$AUDIT_OPS_PORT/metrics"
  echo "sin's gateway http://127.0.0.1:$SIN_GW_PORT (API key in $KEYS/sin-api.key), segip's gateway serves persona_consulta from http://127.0.0.1:$REGISTRY_PORT"
}

down() {
  stop sin
  stop segip
  stop registry
  stop router
  stop audit
  stop nats
}

status() {
  for p in nats audit router registry segip sin; do
    if running "$p"; then echo "$p: running (pid $(cat "$RUN/$p.pid"))"; else echo "$p: stopped"; fi
  done
  echo -n "router /readyz: "
  curl -s "http://127.0.0.1:$OPS_PORT/readyz" || echo "no answer"
  echo
}

call() {  # call ENTITY SERVICE BODY [extra args]: ENTITY's key, straight onto the bus
  local who=$1 service=$2 body=$3; shift 3
  "$CHASQUI" call --key "$KEYS/$who.$ENV_NAME.key" --trust "$DATA/trust.json" \
    --provider segip --service "$service" --end-user ana.perez --purpose "demo" --body "$body" "$@"
}

ask() {  # ask SERVICE BODY [curl args]: sin's system asks through sin's gateway
  local service=$1 body=$2; shift 2
  local shown="" a
  for a in "$@"; do
    case "$a" in
      -H) ;;
      "Authorization: Bearer $(cat "$KEYS/sin-api.key")") shown+=" -H 'Authorization: Bearer <sin-api.key>'" ;;
      *) shown+=" -H '$a'" ;;
    esac
  done
  echo "\$ curl -X POST http://127.0.0.1:$SIN_GW_PORT/v1/segip/$service$shown -d '$body'"
  curl -s -i -X POST "http://127.0.0.1:$SIN_GW_PORT/v1/segip/$service" \
    -H "Content-Type: application/json" -H "X-Chasqui-Purpose: demo" "$@" -d "$body" |
    grep -viE '^(date|content-length|connection|keep-alive):' | tr -d '\r'
  echo
}

demo() {
  up
  local key; key=$(cat "$KEYS/sin-api.key")
  say "1. sin's system asks segip about CI 4567890, over plain HTTP to sin's own gateway"
  echo "   (sealed for segip and batch-signed by sin's gateway, checked by the router, opened by"
  echo "    segip's gateway, answered by segip's registry, sealed back)"
  ask persona_consulta '{"ci":"4567890"}' -H "Authorization: Bearer $key" -H "X-Chasqui-End-User: ana.perez"
  say "2. the same without naming the official it is for"
  ask persona_consulta '{"ci":"4567890"}' -H "Authorization: Bearer $key"
  say "3. a service nobody serves"
  ask persona_historial '{"ci":"4567890"}' -H "Authorization: Bearer $key" -H "X-Chasqui-End-User: ana.perez"
  say "4. a system inside sin without sin's API key"
  ask persona_consulta '{"ci":"4567890"}' -H "Authorization: Bearer not-the-key" -H "X-Chasqui-End-User: ana.perez"
  say "5. mallory, whom the platform never enrolled, goes straight to the bus"
  call mallory persona_consulta '{"ci":"4567890"}' --nats "$NATS_URL" || echo "-> refused by nats-server: mallory has no user on the bus"
  say "what the router counted (chasqui_router_requests_total)"
  curl -s "http://127.0.0.1:$OPS_PORT/metrics" | grep '^chasqui_router_requests_total' || true
  say "what the audit service made durable before each reply was released"
  curl -s "http://127.0.0.1:$AUDIT_OPS_PORT/metrics" |
    grep -E '^chasqui_audit_(records_appended_total\{outcome="durable"\}|chain_length)' || true
  echo "(stop the backbone, then: $AUDIT query --data $DATA/audit  and  $AUDIT verify --data $DATA/audit --env $ENV_NAME --trust $DATA/trust.json)"
  say "the router's log"
  tail -n 4 "$LOGS/router.log"
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
