#!/usr/bin/env bash
# Checks deploy/prometheus and deploy/grafana against the tools and against a real router and
# audit service.
#
#   prometheus_test.sh rules  REPO_ROOT
#       promtool check config / check rules / test rules, and the dashboards are valid JSON.
#   prometheus_test.sh scrape REPO_ROOT CHASQUI_ROUTER CHASQUI CHASQUI_AUDIT
#       starts nats-server, chasqui-audit, a router, the demo provider and a real Prometheus (all on random
#       loopback ports, in a temporary directory), sends known traffic, and asserts through
#       Prometheus's HTTP API what it scraped, what the recording rules computed, that every rule
#       evaluates, and that every dashboard query parses.
#
# Needs: prometheus and promtool (Debian package prometheus), nats-server, curl, python3.
# Every wait is bounded; on exit (any exit) every process started here is stopped.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# find_bin, free_port, prom_query and $PYTHON, shared with backbone_prometheus.sh.
# shellcheck source=tests/ops/prom_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/prom_lib.sh"

usage() {
  sed -n '2,10p' "$0" >&2
  exit 2
}

[ $# -ge 2 ] || usage
MODE=$1
REPO=$(cd "$2" && pwd) || fail "repository root $2 not found"
PROM_DIR="$REPO/deploy/prometheus"
GRAFANA_DIR="$REPO/deploy/grafana"
PROMTOOL=$(find_bin promtool prometheus)

# ------------------------------------------------------------------------------------- rules
rules() {
  local f
  cd "$PROM_DIR"
  echo "== [${SECONDS}s] promtool check config prometheus.yml"
  "$PROMTOOL" check config prometheus.yml || fail "promtool check config prometheus.yml"
  for f in *_rules.yml; do
    echo "== promtool check rules $f"
    "$PROMTOOL" check rules "$f" || fail "promtool check rules $f"
  done
  echo "== [${SECONDS}s] promtool test rules alert_rules_test.yml"
  "$PROMTOOL" test rules alert_rules_test.yml || fail "promtool test rules alert_rules_test.yml"
  local n=0
  for f in "$GRAFANA_DIR"/*.json; do
    [ -e "$f" ] || fail "no dashboards in $GRAFANA_DIR"
    echo "== dashboard $f"
    "$PYTHON" -m json.tool "$f" >/dev/null || fail "$f is not valid JSON"
    n=$((n + 1))
  done
  echo "PASS: config, rules, rule tests and $n dashboards"
}

# ------------------------------------------------------------------------------------ scrape
TMP=""
PIDS=()
NAMES=()

cleanup() {
  local rc=$? i pid
  trap - EXIT INT TERM
  # Newest first, each gone before the next: the router drains while nats-server still runs.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[$i]}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "${NAMES[$i]} (pid $pid) ignored SIGTERM for 5 s: killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ -n "$TMP" ] && [ -d "$TMP" ]; then
    for f in "$TMP"/*.log; do
      [ -e "$f" ] || continue
      echo "---- last lines of $(basename "$f")" >&2
      tail -n 25 "$f" >&2
    done
  fi
  [ -n "$TMP" ] && rm -rf "$TMP"
  exit "$rc"
}

spawn() {  # spawn NAME CMD...: runs in the background, output in $TMP/NAME.log
  local name=$1
  shift
  "$@" >"$TMP/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
}

alive() {  # alive NAME: fails if the process spawned as NAME has exited
  local i
  for i in "${!NAMES[@]}"; do
    if [ "${NAMES[$i]}" = "$1" ]; then
      kill -0 "${PIDS[$i]}" 2>/dev/null || fail "$1 exited early (log below)"
      return 0
    fi
  done
  fail "no process named $1"
}

wait_for() {  # wait_for SECONDS DESCRIPTION PROCESS CMD...: polls CMD until it succeeds
  local secs=$1 what=$2 proc=$3
  shift 3
  local deadline=$((SECONDS + secs))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    [ -z "$proc" ] || alive "$proc"
    sleep 0.2
  done
  fail "timed out after ${secs}s waiting for $what"
}


PROM_URL=""


expect_value() {  # expect_value EXPR WANT [SECONDS]: waits (bounded) until EXPR gives WANT
  local expr=$1 want=$2 secs=${3:-15} got=""
  local deadline=$((SECONDS + secs))
  while :; do
    got=$(prom_query "$expr") || got="(query failed)"
    [ "$got" = "$want" ] && { echo "ok: $expr = $got"; return 0; }
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 0.5
  done
  fail "$expr: expected $want, Prometheus says $got (after ${secs}s)"
}

nats_has_subscriber() {  # nats_has_subscriber SUBJECT: someone subscribes to what SUBJECT matches
  curl -sf --max-time 2 "$NATS_MON/subsz?subs=1&test=$1" |
    "$PYTHON" -c 'import json, sys; sys.exit(0 if json.load(sys.stdin).get("subscriptions_list") else 1)'
}

scrape() {
  [ $# -eq 5 ] || usage
  local router=$3 chasqui=$4 audit=$5
  [ -x "$router" ] || fail "chasqui-router binary $router not found (build the tree first)"
  [ -x "$chasqui" ] || fail "chasqui binary $chasqui not found (build the tree first)"
  [ -x "$audit" ] || fail "chasqui-audit binary $audit not found (build the tree first)"
  local nats prometheus
  nats=$(find_bin nats-server nats-server)
  prometheus=$(find_bin prometheus prometheus)
  find_bin curl curl >/dev/null

  TMP=$(mktemp -d "${TMPDIR:-/tmp}/chasqui-ops.XXXXXX")
  trap cleanup EXIT
  trap 'echo "interrupted (SIGINT): stopping everything" >&2; exit 130' INT
  trap 'echo "terminated (SIGTERM): stopping everything" >&2; exit 143' TERM
  local keys="$TMP/keys" e
  mkdir -p "$keys" "$TMP/nats"

  echo "== [${SECONDS}s] nats-server"
  spawn nats "$nats" -a 127.0.0.1 -p -1 -m -1 --ports_file_dir "$TMP/nats" -sd "$TMP/nats"
  local ports="$TMP/nats/nats-server_${PIDS[0]}.ports"
  wait_for 10 "nats-server's ports file" nats test -s "$ports"
  local nats_url
  nats_url=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["nats"][0])' "$ports")
  NATS_MON=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["monitoring"][0])' "$ports")
  echo "nats $nats_url, monitoring $NATS_MON"

  echo "== [${SECONDS}s] keys and trust"
  for e in segip sin mallory; do
    "$chasqui" keygen --entity "$e" --env test --out "$keys" >/dev/null || fail "keygen $e"
  done
  "$chasqui" keygen --entity router --role router --env test --out "$keys" >/dev/null ||
    fail "keygen router"
  "$chasqui" keygen --role audit --env test --out "$keys" >/dev/null || fail "keygen audit"
  # mallory is left out of the trust file: its call must be refused.
  "$chasqui" trust --out "$TMP/trust.json" \
    "$keys/segip.test.pub" "$keys/sin.test.pub" "$keys/router.test.pub" >/dev/null ||
    fail "chasqui trust"

  echo "== [${SECONDS}s] audit (the router relays a reply only once its record is durable)"
  local audit_port
  audit_port=$(free_port)
  spawn audit "$audit" serve --env test --data "$TMP/audit" --checkpoint-key "$keys/audit.test.key" \
    --nats "$nats_url" --ops-port "$audit_port"
  wait_for 15 "chasqui-audit's /readyz on 127.0.0.1:$audit_port" audit \
    curl -sf --max-time 2 "http://127.0.0.1:$audit_port/readyz"

  echo "== [${SECONDS}s] router"
  local ops_port
  ops_port=$(free_port)
  spawn router "$router" --env test --nats "$nats_url" --key "$keys/router.test.key" \
    --trust "$TMP/trust.json" --id ops1 --ops-port "$ops_port" --startup-hold-ms 0 \
    --refusal-count-interval-ms 600000  # refusal counts would add entries to what is counted below
  wait_for 15 "the router's /readyz on 127.0.0.1:$ops_port" router \
    curl -sf --max-time 2 "http://127.0.0.1:$ops_port/readyz"

  echo "== [${SECONDS}s] demo provider (segip)"
  spawn segip "$chasqui" serve-demo --nats "$nats_url" --key "$keys/segip.test.key" \
    --trust "$TMP/trust.json"
  wait_for 15 "segip's gateway to subscribe to chq.test.svc.segip.persona_consulta" segip \
    nats_has_subscriber chq.test.svc.segip.persona_consulta

  call() {  # call ENTITY SERVICE [args]: stderr of the call in $TMP/call.err
    local who=$1 service=$2
    shift 2
    "$chasqui" call --nats "$nats_url" --key "$keys/$who.test.key" --trust "$TMP/trust.json" \
      --provider segip --service "$service" --end-user ana.perez --purpose ops-test \
      --body '{"ci":"4567890"}' "$@" >"$TMP/call.out" 2>"$TMP/call.err"
  }
  local ok_calls=0 i
  call_ok() {
    call sin persona_consulta --timeout-ms 5000 ||
      fail "call $((ok_calls + 1)) from sin should be OK: $(cat "$TMP/call.err")"
    ok_calls=$((ok_calls + 1))
  }

  echo "== [${SECONDS}s] traffic before Prometheus starts"
  for i in 1 2 3; do call_ok; done
  if call mallory persona_consulta --timeout-ms 5000; then fail "mallory's call was answered"; fi
  grep -q '^UNAUTHENTICATED' "$TMP/call.err" ||
    fail "mallory's call: expected UNAUTHENTICATED, got: $(cat "$TMP/call.err")"
  if call sin persona_historial --timeout-ms 3000; then fail "the unserved service answered"; fi
  grep -q '^UNAVAILABLE' "$TMP/call.err" ||
    fail "unserved service: expected UNAVAILABLE, got: $(cat "$TMP/call.err")"
  echo "sent $ok_calls OK, 1 UNAUTHENTICATED, 1 UNAVAILABLE"

  echo "== [${SECONDS}s] prometheus"
  local prom_port
  prom_port=$(free_port)
  PROM_URL="http://127.0.0.1:$prom_port"
  cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - "$PROM_DIR/recording_rules.yml"
  - "$PROM_DIR/alert_rules.yml"
scrape_configs:
  - job_name: chasqui-router
    static_configs:
      - targets: ["127.0.0.1:$ops_port"]
  - job_name: chasqui-audit
    static_configs:
      - targets: ["127.0.0.1:$audit_port"]
EOF
  spawn prometheus "$prometheus" --config.file="$TMP/prometheus.yml" \
    --storage.tsdb.path="$TMP/tsdb" --web.listen-address="127.0.0.1:$prom_port" \
    --log.level=warn
  wait_for 30 "Prometheus's /-/ready on 127.0.0.1:$prom_port" prometheus \
    curl -sf --max-time 2 "$PROM_URL/-/ready"
  expect_value 'up{job="chasqui-router"}' 1 20

  echo "== [${SECONDS}s] traffic while Prometheus scrapes (so rates are above 0)"
  for i in 1 2; do call_ok; done

  echo "== [${SECONDS}s] what Prometheus sees"
  expect_value "chasqui_router_requests_total{code=\"OK\",consumer=\"sin\",provider=\"segip\"}" "$ok_calls"
  expect_value 'chasqui_router_requests_total{code="UNAUTHENTICATED"}' 1
  expect_value 'chasqui_router_requests_total{code="UNAUTHENTICATED",consumer="unknown",provider="segip"}' 1
  expect_value 'chasqui_router_requests_total{code="UNAVAILABLE"}' 1
  expect_value 'chasqui_router_requests_total{code="UNAVAILABLE",consumer="sin",provider="segip",service="persona_historial"}' 1
  expect_value 'chasqui_router_ready{env="test"}' 1
  expect_value 'chasqui_nats_reconnects_total{job="chasqui-router",part="router"}' 0
  expect_value 'up{job="chasqui-router"}' 1
  expect_value 'sum(chasqui_router_request_batch_size_count{env="test"})' "$((ok_calls + 1))"
  # Every OK exchange and the UNAVAILABLE refusal were traced, one record each, each synced
  # before the reply was relayed; mallory's refusal is only counted (before authentication).
  expect_value 'up{job="chasqui-audit"}' 1
  expect_value 'sum(chasqui_audit_records_appended_total{outcome="durable"})' "$((ok_calls + 1))"
  expect_value 'chasqui_router_audit_up' 1
  expect_value 'chasqui_audit_sync_seconds_count > bool 0' 1
  expect_value 'chasqui_audit_backlog' 0

  echo "== [${SECONDS}s] recording rules"
  expect_value 'env_provider_service_consumer_code:chasqui_router_requests:rate1m{env="test",provider="segip",service="persona_consulta",consumer="sin",code="OK"} > bool 0' 1
  expect_value 'env_consumer_code:chasqui_router_requests:rate5m{env="test",consumer="sin",code="OK"} > bool 0' 1
  expect_value 'env:chasqui_router_refusals:ratio_rate5m{env="test"} >= bool 0' 1
  expect_value 'env:chasqui_router_added_latency_seconds:p99_1m{env="test"} > bool 0' 1

  echo "== [${SECONDS}s] every rule evaluates"
  rules_healthy() {
    curl -sf --max-time 5 "$PROM_URL/api/v1/rules" | "$PYTHON" -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [(r["name"], r["health"], r.get("lastError", "")) for r in rules if r["health"] != "ok"]
alerts = sum(1 for r in rules if r["type"] == "alerting")
if bad or alerts == 0 or len(rules) == alerts:
    sys.exit("rules not healthy (%d rules, %d alerts): %s" % (len(rules), alerts, bad))
print("%d rules in %d groups, %d of them alerts, all healthy" % (len(rules), len(groups), alerts))'
  }
  wait_for 15 "every rule to evaluate without error" prometheus rules_healthy
  rules_healthy

  echo "== [${SECONDS}s] every dashboard query parses against this Prometheus"
  "$PYTHON" "$HERE/dashboard_queries.py" "$PROM_URL" "$GRAFANA_DIR"/*.json ||
    fail "a dashboard query does not parse (above)"
  echo "PASS: Prometheus scraped the router and the audit service and evaluated the rules"
}

case "$MODE" in
  rules) rules ;;
  scrape) scrape "$@" ;;
  *) usage ;;
esac
