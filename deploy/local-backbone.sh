#!/usr/bin/env bash
# A whole Chasqui backbone on this machine, on loopback, with every file under one directory.
#
#   ./deploy/local-backbone.sh demo     install, build, start, tell the catalog story, and run
#                                       the demo exchanges
#   ./deploy/local-backbone.sh up       install, build and start: the crypto service (root key,
#                                       certificates), nats-server and its revocation watch
#                                       (`chasqui nats-config --watch`), the catalog, the quota and
#                                       audit services, the router, segip's registry
#                                       (deploy/demo_registry.py) behind segip's gateway, and
#                                       sin's gateway; then publish persona_consulta and grant it
#   ./deploy/local-backbone.sh status   readiness of each part
#   ./deploy/local-backbone.sh down     stop everything, in order
#
# Settings (environment): CHASQUI_DATA (default ./data), CHASQUI_NATS_PORT (4222),
# CHASQUI_ROUTER_OPS_PORT (9101), CHASQUI_ENV (test), CHASQUI_BUILD_DIR (build),
# CHASQUI_SIN_GATEWAY_PORT (8080), CHASQUI_SEGIP_GATEWAY_PORT (8090), CHASQUI_REGISTRY_PORT (8081),
# CHASQUI_SIN_GATEWAY_OPS_PORT (9102), CHASQUI_SEGIP_GATEWAY_OPS_PORT (9103),
# CHASQUI_AUDIT_OPS_PORT (9104), CHASQUI_CRYPTO_OPS_PORT (9105), CHASQUI_CATALOG_OPS_PORT (9106),
# CHASQUI_QUOTA_OPS_PORT (9107), CHASQUI_NATS_TLS (1: TLS-only bus with a local CA in $DATA/tls; 0: plain).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=${CHASQUI_DATA:-$ROOT/data}
BUILD_DIR=${CHASQUI_BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
ENV_NAME=${CHASQUI_ENV:-test}
NATS_PORT=${CHASQUI_NATS_PORT:-4222}
OPS_PORT=${CHASQUI_ROUTER_OPS_PORT:-9101}
# CHASQUI_NATS_TLS=1 makes the bus TLS-only: a local CA (deploy/tls-ca.sh, under $DATA/tls)
# signs nats-server's certificate, and every process trusts that CA (--nats-ca).
NATS_TLS=${CHASQUI_NATS_TLS:-1}
TLS_DIR="$DATA/tls"
NATS_CA="$TLS_DIR/ca.crt"
NATS_URL="nats://127.0.0.1:$NATS_PORT"
NATS_CA_FLAGS=""
if [ "$NATS_TLS" = 1 ]; then NATS_URL="tls://127.0.0.1:$NATS_PORT" NATS_CA_FLAGS="--nats-ca $NATS_CA"; fi
# A local backbone runs on one clock: a short freshness window keeps the router's startup
# hold (window plus skew, its replay protection after a start) at 10 s.
WINDOW_MS=${CHASQUI_FRESHNESS_WINDOW_MS:-5000}
SIN_GW_PORT=${CHASQUI_SIN_GATEWAY_PORT:-8080}
SEGIP_GW_PORT=${CHASQUI_SEGIP_GATEWAY_PORT:-8090}
REGISTRY_PORT=${CHASQUI_REGISTRY_PORT:-8081}
SIN_OPS_PORT=${CHASQUI_SIN_GATEWAY_OPS_PORT:-9102}
SEGIP_OPS_PORT=${CHASQUI_SEGIP_GATEWAY_OPS_PORT:-9103}
AUDIT_OPS_PORT=${CHASQUI_AUDIT_OPS_PORT:-9104}
CRYPTO_OPS_PORT=${CHASQUI_CRYPTO_OPS_PORT:-9105}
CATALOG_OPS_PORT=${CHASQUI_CATALOG_OPS_PORT:-9106}
QUOTA_OPS_PORT=${CHASQUI_QUOTA_OPS_PORT:-9107}
CHASQUI="$BUILD_DIR/services/gateway/chasqui"
GATEWAY="$BUILD_DIR/services/gateway/chasqui-gateway"
ROUTER="$BUILD_DIR/services/router/chasqui-router"
AUDIT="$BUILD_DIR/services/audit/chasqui-audit"
CRYPTO="$BUILD_DIR/services/crypto/chasqui-crypto"
CATALOG="$BUILD_DIR/services/catalog/chasqui-catalog"
QUOTA="$BUILD_DIR/services/quota/chasqui-quota"
KEYS="$DATA/keys"
CERTS="$DATA/certs"
SECRETS="$DATA/secrets"
RUN="$DATA/run"
LOGS="$DATA/logs"
STORY="$DATA/story"
ROOTS="$DATA/crypto/roots.json"
# The people of the story: the platform's operator (agetic), and each entity's MAE (who signs
# the adhesion agreement) and manager (who submits, requests and approves).
OPERATOR=agetic.olga SEGIP_MAE=segip.maria SEGIP_MANAGER=segip.pedro
SIN_MAE=sin.juan SIN_MANAGER=sin.lucia

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

fail() {  # fail STEP LOG: stop, naming the step and where to look
  echo "FAILED: $1 (log: $2)" >&2
  [ -f "$2" ] && tail -n 5 "$2" | sed 's/^/  | /' >&2
  exit 1
}

step() {  # step NAME CMD...: one line per step; its output goes to $LOGS/steps.log
  local name=$1; shift
  echo "--- $name" >>"$LOGS/steps.log"
  if "$@" >>"$LOGS/steps.log" 2>&1; then echo "ok: $name"; else fail "$name" "$LOGS/steps.log"; fi
}

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

wait_for() {  # wait_for SECONDS NAME DESCRIPTION CMD...: NAME's log is named if it never comes
  local secs=$1 name=$2 what=$3; shift 3
  for _ in $(seq $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [ "$name" != - ] && [ -f "$RUN/$name.pid" ] && ! running "$name"; then
      fail "$name exited while starting ($what)" "$LOGS/$name.log"
    fi
    sleep 0.1
  done
  fail "timed out after ${secs}s waiting for $what" "$LOGS/$name.log"
}

ready() {  # ready NAME PORT: wait for NAME's /readyz
  wait_for "${3:-20}" "$1" "$1's /readyz on port $2" curl -sf "http://127.0.0.1:$2/readyz"
}

secret() {  # secret FILE: 32 random bytes, hex, mode 0600; never printed
  [ -f "$1" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1")
}

keys() {
  mkdir -p "$KEYS" "$CERTS" "$SECRETS"
  chmod 700 "$SECRETS"
  for e in segip sin; do
    [ -f "$KEYS/$e.$ENV_NAME.key" ] || "$CHASQUI" keygen --entity "$e" --env "$ENV_NAME" --out "$KEYS" >/dev/null
  done
  [ -f "$KEYS/router.$ENV_NAME.key" ] ||
    "$CHASQUI" keygen --entity router --role router --env "$ENV_NAME" --out "$KEYS" >/dev/null
  # The audit service's key: it asks the crypto service to sign the trace's checkpoints.
  [ -f "$KEYS/audit.$ENV_NAME.key" ] ||
    "$CHASQUI" keygen --role audit --env "$ENV_NAME" --out "$KEYS" >/dev/null
  # mallory has keys the platform never certified and no user on the bus: the refused request.
  [ -f "$KEYS/mallory.$ENV_NAME.key" ] ||
    "$CHASQUI" keygen --entity mallory --env "$ENV_NAME" --out "$KEYS" >/dev/null
  local p
  for p in "$OPERATOR:operator" "$SEGIP_MAE:mae" "$SEGIP_MANAGER:manager" "$SIN_MAE:mae" \
           "$SIN_MANAGER:manager"; do
    local who=${p%%:*} role=${p##*:}
    [ -f "$KEYS/$who.$ENV_NAME.key" ] ||
      "$CHASQUI" keygen --entity "${who%%.*}" --subject "${who#*.}" --role "$role" \
        --env "$ENV_NAME" --out "$KEYS" >/dev/null
  done
  # sin's systems authenticate to sin's gateway with this key.
  secret "$KEYS/sin-api.key"
  echo "keys in $KEYS (private keys mode 0600)"
}

crypto_init() {
  # The demo's passphrases are random files (0600, never shown), hashed at the "interactive"
  # cost: the demo is not a production ceremony, which asks a person at "moderate" cost.
  secret "$SECRETS/root.passphrase"
  secret "$SECRETS/catalog.passphrase"
  if [ ! -f "$ROOTS" ]; then
    step "crypto: root key ceremony ($DATA/crypto, pinned roots $ROOTS)" \
      "$CRYPTO" init --data "$DATA/crypto" --passphrase-file "$SECRETS/root.passphrase" --kdf interactive
  fi
  if [ ! -f "$DATA/catalog/.initialised" ]; then
    step "catalog: key and store ($DATA/catalog)" "$CATALOG" init --data "$DATA/catalog" \
      --passphrase-file "$SECRETS/catalog.passphrase" --kdf interactive
    touch "$DATA/catalog/.initialised"
  fi
}

nats_plan() {  # who has a nats-server user: the same words for `nats-config` and its --watch
  local tls_flags=""
  if [ "$NATS_TLS" = 1 ]; then tls_flags="--tls-cert $TLS_DIR/server.crt --tls-key $TLS_DIR/server.key"; fi
  # agetic is the platform operator's entity: its user may also send `chasqui revoke`.
  echo --env "$ENV_NAME" --router --entity agetic --entity segip --entity sin \
    --operator-entity agetic --nats-watch \
    --service crypto --service catalog --service quota --service audit \
    --out "$DATA/nats.conf" --secrets-dir "$KEYS/nats" --listen "127.0.0.1:$NATS_PORT" $tls_flags
}

nats_config() {
  # The bus enforces the subject plan: one nats-server user per entity and env (people log in
  # as their entity), one for the routers, one per platform service, one for the revocation
  # watch, each allowed only its own subjects; passwords in 0600 files, bcrypt in the config. A
  # data directory from an older version lacks users for newer parts: remake them all (or, if
  # only the revocation watch's user is missing, add it keeping everyone's password).
  # With CHASQUI_NATS_TLS=1, TLS only: the local CA and nats-server's certificate (kept across
  # runs), named in the config's tls block; a config whose TLS does not match is remade.
  local force=""
  if [ "$NATS_TLS" = 1 ]; then
    step "tls: local CA and nats-server's certificate ($TLS_DIR, keys mode 0600)" \
      ./deploy/tls-ca.sh "$TLS_DIR"
  fi
  if [ -f "$DATA/nats.conf" ] && ! grep -q "quota.$ENV_NAME" "$DATA/nats.conf"; then force=--force; fi
  local had_tls=0
  if [ -f "$DATA/nats.conf" ] && grep -q "^tls {" "$DATA/nats.conf"; then had_tls=1; fi
  if [ -f "$DATA/nats.conf" ] && [ "$had_tls" != "$NATS_TLS" ]; then force=--force; fi
  if [ -z "$force" ] && [ -f "$DATA/nats.conf" ] && ! grep -q "nats-watch.$ENV_NAME" "$DATA/nats.conf"; then
    force=--keep-passwords
  fi
  if [ ! -f "$DATA/nats.conf" ] || [ -n "$force" ]; then
    # shellcheck disable=SC2046 # nats_plan's words are separate flags
    step "nats-config: users for routers, agetic, segip, sin, crypto, catalog, quota, audit" \
      "$CHASQUI" nats-config $(nats_plan) $force
  fi
}

nats_login() {  # nats_login USER: the flags that log USER's process into the bus (<entity>.<env>)
  echo --nats "$NATS_URL" $NATS_CA_FLAGS --nats-user "$1.$ENV_NAME" \
    --nats-password-file "$KEYS/nats/$1.$ENV_NAME.password"
}

token_to() {  # token_to FILE ENTITY ROLE [SUBJECT]: a one-time token into FILE (0600), not shown
  local file=$1 entity=$2 role=$3 subject=${4:-}
  (umask 077; "$CRYPTO" token --data "$DATA/crypto" --entity "$entity" --role "$role" \
    --env "$ENV_NAME" ${subject:+--subject "$subject"} | sed -n 's/^token: //p' >"$file")
  [ -s "$file" ]
}

enrol() {  # enrol KEYFILE ROLE ENTITY [SUBJECT]: a one-time token, then the certificate
  local key=$1 role=$2 entity=$3 subject=${4:-}
  local name; name=$(basename "$key" .key)
  local cert="$CERTS/$name.cert"
  [ -f "$cert" ] && return 0
  local tok="$SECRETS/$name.token"
  step "token for $name ($role)" token_to "$tok" "$entity" "$role" "$subject"
  local user=$entity
  [ "$role" = router ] && user=router
  [ "$role" = audit ] && user=audit
  # shellcheck disable=SC2046
  step "enrol $name: certificate $cert" "$CHASQUI" enrol $(nats_login "$user") --key "$key" \
    --token-file "$tok" --role "$role" ${subject:+--subject "$subject"} --roots "$ROOTS" --out "$cert"
  rm -f "$tok"
}

person() {  # person WHO: --key and --cert of a person, and their entity's bus login
  # shellcheck disable=SC2046
  echo --key "$KEYS/$1.$ENV_NAME.key" --cert "$CERTS/$1.$ENV_NAME.cert" $(nats_login "${1%%.*}")
}

told() {  # told NAME WHO VERB ARGS...: one step of the catalog story, told once
  local name=$1 who=$2; shift 2
  local done="$STORY/${name//[^A-Za-z0-9_.-]/_}"
  if [ -f "$done" ]; then echo "ok: $name (already done)"; return 0; fi
  # shellcheck disable=SC2046
  step "$name" "$CHASQUI" "$@" $(person "$who")
  touch "$done"
}

schemas() {
  cat >"$DATA/nta.txt" <<'NTA'
Norma Técnica de Adhesión (demo): the entity connects through its own gateway, answers the
services it publishes, names the official behind every request, and keeps its keys to itself.
NTA
  cat >"$DATA/persona_consulta.request.json" <<'JSON'
{"type": "object", "required": ["ci"], "additionalProperties": false,
 "properties": {"ci": {"type": "string", "pattern": "^[0-9]{5,10}$"}},
 "examples": [{"ci": "4567890"}]}
JSON
  cat >"$DATA/persona_consulta.response.json" <<'JSON'
{"type": "object", "required": ["ci", "encontrado"],
 "properties": {"ci": {"type": "string"}, "encontrado": {"type": "boolean"},
                "estado": {"type": "string"}, "nombre": {"type": "string"},
                "fecha_nacimiento": {"type": "string", "format": "date"}},
 "examples": [{"ci": "4567890", "encontrado": true, "estado": "VIGENTE",
               "nombre": "Ana Mamani Quispe", "fecha_nacimiento": "1990-04-12"}]}
JSON
}

story() {  # the catalog story, with the people's own keys: from adhesion to an end user
  mkdir -p "$STORY"
  told "operator registers segip" "$OPERATOR" catalog register_entity --id segip --name SEGIP
  told "operator registers sin" "$OPERATOR" catalog register_entity --id sin \
    --name "Servicio de Impuestos Nacionales"
  told "segip's MAE adheres to the NTA" "$SEGIP_MAE" catalog adhere --entity segip --nta "$DATA/nta.txt"
  told "sin's MAE adheres to the NTA" "$SIN_MAE" catalog adhere --entity sin --nta "$DATA/nta.txt"
  told "segip's manager submits persona_consulta (quota 5/s burst 5, 1000/day)" "$SEGIP_MANAGER" \
    catalog submit --provider segip --name persona_consulta --version 1.0.0 \
    --description "looks a person up by national id (CI)" --classification private \
    --personal-data --legal-basis "Ley 145, art. 12" \
    --request-schema "$DATA/persona_consulta.request.json" \
    --response-schema "$DATA/persona_consulta.response.json" --rate 5 --burst 5 --per-day 1000
  # persona_historial is granted to sin but nobody serves it (demo step 3); certificado_defuncion
  # is published but never granted to sin (its 403).
  told "segip's manager submits persona_historial" "$SEGIP_MANAGER" \
    catalog submit --provider segip --name persona_historial --version 1.0.0 \
    --description "a person's civil record history" --classification private --personal-data \
    --legal-basis "Ley 145, art. 12" --rate 5 --burst 5 --per-day 1000
  told "segip's manager submits certificado_defuncion" "$SEGIP_MANAGER" \
    catalog submit --provider segip --name certificado_defuncion --version 1.0.0 \
    --description "whether a death certificate exists" --classification private \
    --personal-data --legal-basis "Ley 145, art. 12" --rate 5 --burst 5
  local s
  for s in persona_consulta persona_historial certificado_defuncion; do
    told "operator publishes $s" "$OPERATOR" catalog publish --provider segip --service "$s"
  done
  for s in persona_consulta persona_historial; do
    told "sin's manager requests access to $s" "$SIN_MANAGER" catalog request_access \
      --consumer sin --provider segip --service "$s" \
      --justification "tax registration checks identity" --legal-basis "Ley 843, art. 3"
    told "segip's manager approves sin's access to $s (test)" "$SEGIP_MANAGER" \
      catalog approve --consumer sin --provider segip --service "$s"
  done
  told "sin's manager registers end user ana.perez" "$SIN_MANAGER" \
    catalog register_end_user --consumer sin --user ana.perez
}

up() {
  ./deploy/install-deps.sh
  say "build"
  ./deploy/build.sh
  mkdir -p "$RUN" "$LOGS" "$DATA/nats"
  say "keys, root ceremony and the bus's users"
  keys
  crypto_init
  nats_config
  say "start the platform"
  start nats nats-server -c "$DATA/nats.conf" -sd "$DATA/nats" -l "$LOGS/nats-server.log" \
    -P "$RUN/nats-server.pid"
  wait_for 10 nats "nats-server on 127.0.0.1:$NATS_PORT" bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT"
  # shellcheck disable=SC2046 # nats_login's words are separate flags
  start crypto "$CRYPTO" serve --data "$DATA/crypto" --passphrase-file "$SECRETS/root.passphrase" \
    --env "$ENV_NAME" $(nats_login crypto) --ops-port "$CRYPTO_OPS_PORT"
  ready crypto "$CRYPTO_OPS_PORT"
  # The revocation watch: once an entity's certificates are revoked as entity_withdrawn
  # (`chasqui revoke`), its nats-server user goes (the config rewritten, nats-server signalled
  # through its pid file); everyone else keeps their password. One log line per rewrite.
  # shellcheck disable=SC2046
  start nats-watch "$CHASQUI" nats-config --watch $(nats_plan) --roots "$ROOTS" \
    --nats-pid-file "$RUN/nats-server.pid" $(nats_login nats-watch)
  wait_for 20 nats-watch "the revocation watch's first configuration" \
    grep -q "rewritten" "$LOGS/nats-watch.log"
  say "certificates, each with a one-time token"
  enrol "$KEYS/router.$ENV_NAME.key" router router
  enrol "$KEYS/segip.$ENV_NAME.key" entity segip
  enrol "$KEYS/sin.$ENV_NAME.key" entity sin
  enrol "$KEYS/audit.$ENV_NAME.key" audit audit
  enrol "$KEYS/$OPERATOR.$ENV_NAME.key" operator agetic olga
  enrol "$KEYS/$SEGIP_MAE.$ENV_NAME.key" mae segip maria
  enrol "$KEYS/$SEGIP_MANAGER.$ENV_NAME.key" manager segip pedro
  enrol "$KEYS/$SIN_MAE.$ENV_NAME.key" mae sin juan
  enrol "$KEYS/$SIN_MANAGER.$ENV_NAME.key" manager sin lucia
  if [ ! -f "$DATA/catalog/.enrolled.$ENV_NAME" ]; then
    local tok="$SECRETS/catalog.token"
    step "token for the catalog" token_to "$tok" catalog catalog
    # shellcheck disable=SC2046
    step "enrol the catalog" "$CATALOG" enrol --data "$DATA/catalog" \
      --passphrase-file "$SECRETS/catalog.passphrase" --env "$ENV_NAME" --token "$(cat "$tok")" \
      $(nats_login catalog)
    rm -f "$tok"
    touch "$DATA/catalog/.enrolled.$ENV_NAME"
  fi
  say "start the services"
  schemas
  # shellcheck disable=SC2046
  start catalog "$CATALOG" serve --data "$DATA/catalog" --passphrase-file "$SECRETS/catalog.passphrase" \
    --anchors "$ROOTS" --nta-file "$DATA/nta.txt" --env "$ENV_NAME" $(nats_login catalog) \
    --ops-port "$CATALOG_OPS_PORT"
  ready catalog "$CATALOG_OPS_PORT"
  # shellcheck disable=SC2046
  start quota "$QUOTA" serve --data "$DATA/quota" --catalog --anchors "$ROOTS" --env "$ENV_NAME" \
    $(nats_login quota) --ops-port "$QUOTA_OPS_PORT"
  # The trace first: the router relays no reply whose record is not durable.
  # shellcheck disable=SC2046
  # Its checkpoints are signed by the crypto service, asked with the audit's enrolled key.
  start audit "$AUDIT" serve --env "$ENV_NAME" --data "$DATA/audit" --anchors "$ROOTS" \
    --checkpoint-signer crypto --checkpoint-key "$KEYS/audit.$ENV_NAME.key" \
    --checkpoint-cert "$CERTS/audit.$ENV_NAME.cert" $(nats_login audit) --ops-port "$AUDIT_OPS_PORT"
  ready quota "$QUOTA_OPS_PORT"
  ready audit "$AUDIT_OPS_PORT"
  # shellcheck disable=SC2046
  start router "$ROUTER" --env "$ENV_NAME" $(nats_login router) --key "$KEYS/router.$ENV_NAME.key" \
    --roots "$ROOTS" --cert "$CERTS/router.$ENV_NAME.cert" --catalog --quota --id local1 \
    --ops-port "$OPS_PORT" --freshness-window-ms "$WINDOW_MS"
  start registry python3 deploy/demo_registry.py --port "$REGISTRY_PORT"
  # shellcheck disable=SC2046
  start segip "$GATEWAY" --env "$ENV_NAME" $(nats_login segip) --key "$KEYS/segip.$ENV_NAME.key" \
    --roots "$ROOTS" --cert "$CERTS/segip.$ENV_NAME.cert" --catalog \
    --listen "127.0.0.1:$SEGIP_GW_PORT" --ops-port "$SEGIP_OPS_PORT" \
    --serve "persona_consulta=http://127.0.0.1:$REGISTRY_PORT/persona"
  # shellcheck disable=SC2046
  start sin "$GATEWAY" --env "$ENV_NAME" $(nats_login sin) --key "$KEYS/sin.$ENV_NAME.key" \
    --roots "$ROOTS" --cert "$CERTS/sin.$ENV_NAME.cert" --catalog \
    --listen "127.0.0.1:$SIN_GW_PORT" --ops-port "$SIN_OPS_PORT" --api-key-file "$KEYS/sin-api.key"
  say "the catalog story: adhesion, a service published, access granted, an end user"
  story
  ready segip "$SEGIP_OPS_PORT"
  ready sin "$SIN_OPS_PORT"
  echo "router is unready for $((2 * WINDOW_MS / 1000)) s after a start (replay protection: it waits out the freshness window)..."
  ready router "$OPS_PORT" 60
  echo "backbone up: nats $NATS_URL, router metrics http://127.0.0.1:$OPS_PORT/metrics, audit metrics http://127.0.0.1:$AUDIT_OPS_PORT/metrics"
  echo "sin's gateway http://127.0.0.1:$SIN_GW_PORT (API key in $KEYS/sin-api.key), segip's gateway serves persona_consulta from http://127.0.0.1:$REGISTRY_PORT"
}

down() {
  stop sin
  stop segip
  stop registry
  stop router
  stop audit
  stop quota
  stop catalog
  stop crypto
  stop nats-watch
  stop nats
}

status() {
  for p in nats nats-watch crypto catalog quota audit router registry segip sin; do
    if running "$p"; then echo "$p: running (pid $(cat "$RUN/$p.pid"))"; else echo "$p: stopped"; fi
  done
  echo -n "router /readyz: "
  curl -s "http://127.0.0.1:$OPS_PORT/readyz" || echo "no answer"
  echo
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
  echo "   (sealed for segip and batch-signed by sin's gateway, checked by the router against its"
  echo "    certificate, the catalog's grant and the quota, opened by segip's gateway, answered by"
  echo "    segip's registry, sealed back)"
  ask persona_consulta '{"ci":"4567890"}' -H "Authorization: Bearer $key" -H "X-Chasqui-End-User: ana.perez"
  say "2. the same without naming the official it is for"
  ask persona_consulta '{"ci":"4567890"}' -H "Authorization: Bearer $key"
  say "3. a service sin is granted but nobody serves"
  ask persona_historial '{"ci":"4567890"}' -H "Authorization: Bearer $key" -H "X-Chasqui-End-User: ana.perez"
  say "4. a system inside sin without sin's API key"
  ask persona_consulta '{"ci":"4567890"}' -H "Authorization: Bearer not-the-key" -H "X-Chasqui-End-User: ana.perez"
  say "5. mallory, whom the platform never enrolled, goes straight to the bus"
  # She has no certificate: she brings a trust file of her own making.
  "$CHASQUI" trust --out "$DATA/mallory-trust.json" "$KEYS/mallory.$ENV_NAME.pub" >/dev/null
  "$CHASQUI" call --key "$KEYS/mallory.$ENV_NAME.key" --trust "$DATA/mallory-trust.json" \
    --provider segip --service persona_consulta --end-user ana.perez --purpose demo \
    --body '{"ci":"4567890"}' --nats "$NATS_URL" $NATS_CA_FLAGS ||
    echo "-> refused by nats-server: mallory has no user on the bus"
  say "6. a service segip publishes but never granted to sin"
  ask certificado_defuncion '{"ci":"4567890"}' -H "Authorization: Bearer $key" -H "X-Chasqui-End-User: ana.perez"
  say "7. an official sin never registered as an end user"
  ask persona_consulta '{"ci":"4567890"}' -H "Authorization: Bearer $key" -H "X-Chasqui-End-User: eve.unknown"
  say "8. a burst beyond the grant's quota (5/s, burst 5): 12 requests at once, the first refusal shown"
  local i codes="" out="$RUN/burst" pids=()
  for i in $(seq 12); do
    curl -s -i -X POST "http://127.0.0.1:$SIN_GW_PORT/v1/segip/persona_consulta" \
      -H "Content-Type: application/json" -H "X-Chasqui-Purpose: demo" \
      -H "Authorization: Bearer $key" -H "X-Chasqui-End-User: ana.perez" -d '{"ci":"1234567"}' \
      >"$out.$i" &
    pids+=($!)
  done
  wait "${pids[@]}"  # only the curls: the backbone's processes are this shell's children too
  for i in $(seq 12); do codes+=" $(head -n1 "$out.$i" | awk '{print $2}')"; done
  echo "status codes:$codes"
  for i in $(seq 12); do
    if head -n1 "$out.$i" | grep -q ' 429 '; then
      grep -viE '^(date|content-length|connection|keep-alive):' "$out.$i" | tr -d '\r'; echo; break
    fi
  done
  rm -f "$out".*
  say "9. what sin's gateway says sin may call: GET /v1/openapi.json"
  echo "\$ curl http://127.0.0.1:$SIN_GW_PORT/v1/openapi.json -H 'Authorization: Bearer <sin-api.key>'"
  curl -s "http://127.0.0.1:$SIN_GW_PORT/v1/openapi.json" -H "Authorization: Bearer $key" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("paths:", ", ".join(sorted(d.get("paths", {}))))'
  say "10. sin's manager looks at the grants' use: chasqui quota usage"
  # shellcheck disable=SC2046
  "$CHASQUI" quota usage --consumer sin $(person "$SIN_MANAGER")
  say "what the router counted (chasqui_router_requests_total)"
  curl -s "http://127.0.0.1:$OPS_PORT/metrics" | grep '^chasqui_router_requests_total' || true
  say "what the audit service made durable before each reply was released"
  curl -s "http://127.0.0.1:$AUDIT_OPS_PORT/metrics" |
    grep -E '^chasqui_audit_(records_appended_total\{outcome="durable"\}|chain_length)' || true
  echo "(stop the backbone, then: $AUDIT query --data $DATA/audit  and  $AUDIT verify --data $DATA/audit --env $ENV_NAME --roots $ROOTS)"
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
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
