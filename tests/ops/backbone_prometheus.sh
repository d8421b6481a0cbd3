#!/usr/bin/env bash
# A real Prometheus scraping the whole local backbone, right after `deploy/local-backbone.sh demo`
# and while the backbone still runs (what .ci/run does):
#
#   tests/ops/backbone_prometheus.sh [DEMO_OUTPUT]
#
# Writes a Prometheus configuration from deploy/prometheus/prometheus.yml with the ops ports of
# this environment (CHASQUI_<PART>_OPS_PORT, the defaults of deploy/local-backbone.sh), starts
# Prometheus on a free loopback port with a temporary store, waits until every target is up,
# sends two more refusals through sin's gateway, and asserts through Prometheus's HTTP API what
# the demo's traffic must have left in every process's series: exchanges by outcome, the
# durable trace, catalog snapshot versions, quota, crypto, revocation lists and certificate
# expiry; that the recording rules compute, every rule evaluates without error, no alert fires
# on a healthy backbone, and every dashboard query parses.
#
# DEMO_OUTPUT is the demo's output: its burst line ("status codes: 200 ... 429") says how many of
# the 12 burst requests were served and how many refused over quota. Without it only their sum
# is checked. Needs a fresh demo (a new CHASQUI_DATA): the counts are the demo's, once.
#
# Needs: prometheus and promtool (Debian package prometheus), curl, python3 with yaml. Every wait
# is bounded (about 60 s in all); on any exit Prometheus is stopped and its directory removed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PROM_DIR="$REPO/deploy/prometheus"
GRAFANA_DIR="$REPO/deploy/grafana"
DATA=${CHASQUI_DATA:-$REPO/data}
ENV_NAME=${CHASQUI_ENV:-test}
SIN_GW_PORT=${CHASQUI_SIN_GATEWAY_PORT:-8080}
DEMO_OUT=${1:-}

fail() {
  echo "FAIL: backbone_prometheus: $*" >&2
  exit 1
}

# find_bin, free_port, prom_query and $PYTHON, shared with prometheus_test.sh.
# shellcheck source=tests/ops/prom_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/prom_lib.sh"

PROMETHEUS=$(find_bin prometheus prometheus)
PROMTOOL=$(find_bin promtool prometheus)
find_bin curl curl >/dev/null

# The default ops port of each part (deploy/prometheus/prometheus.yml) and the port this
# backbone uses.
declare -A PORT_OF=(
  [9101]=${CHASQUI_ROUTER_OPS_PORT:-9101}
  [9102]=${CHASQUI_SIN_GATEWAY_OPS_PORT:-9102}
  [9103]=${CHASQUI_SEGIP_GATEWAY_OPS_PORT:-9103}
  [9104]=${CHASQUI_AUDIT_OPS_PORT:-9104}
  [9105]=${CHASQUI_CRYPTO_OPS_PORT:-9105}
  [9106]=${CHASQUI_CATALOG_OPS_PORT:-9106}
  [9107]=${CHASQUI_QUOTA_OPS_PORT:-9107}
)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/chasqui-backbone-prom.XXXXXX")
PROM_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$PROM_PID" ]; then
    kill -TERM "$PROM_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PROM_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PROM_PID" 2>/dev/null || true
    wait "$PROM_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$TMP/prometheus.log" ]; then
    echo "---- last lines of prometheus.log" >&2
    tail -n 15 "$TMP/prometheus.log" >&2
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ the demo's burst
# Demo traffic that reaches the router (deploy/local-backbone.sh demo): step 1 OK; step 3
# UNAVAILABLE (persona_historial, granted, served by nobody); step 6 FORBIDDEN
# (certificado_defuncion, never granted); step 7 END_USER_UNKNOWN; step 8, 12 requests at once
# to persona_consulta, each OK or QUOTA_EXCEEDED. Steps 2 (no end user: 400) and 4 (wrong API
# key: 401) stop at sin's gateway, step 5 (mallory) at nats-server.
BURST_OK="" BURST_429=""
if [ -n "$DEMO_OUT" ]; then
  [ -f "$DEMO_OUT" ] || fail "demo output $DEMO_OUT not found"
  codes=$(sed -n 's/^status codes://p' "$DEMO_OUT" | tail -n 1)
  [ -n "$codes" ] || fail "no 'status codes:' line (the demo's burst) in $DEMO_OUT"
  BURST_OK=$(tr ' ' '\n' <<<"$codes" | grep -c '^200$' || true)
  BURST_429=$(tr ' ' '\n' <<<"$codes" | grep -c '^429$' || true)
  [ $((BURST_OK + BURST_429)) -eq 12 ] ||
    fail "the demo's burst answered '$codes': expected 12 answers, each 200 or 429"
  echo "demo burst: $BURST_OK served, $BURST_429 refused over quota"
fi

PROM_PORT=$(free_port)
PROM_URL="http://127.0.0.1:$PROM_PORT"
port_map=""
for p in "${!PORT_OF[@]}"; do port_map+="$p=${PORT_OF[$p]} "; done
# The shipped file's targets with this backbone's ports; scraped every 2 s and evaluated every
# second so the check is short; rule files by absolute path. Prints "job target" per target.
"$PYTHON" - "$PROM_DIR/prometheus.yml" "$TMP/prometheus.yml" "$PROM_DIR" $port_map \
  >"$TMP/targets" <<'EOF' || fail "cannot write the Prometheus configuration"
import sys, yaml
src, dst, rules_dir, *pairs = sys.argv[1:]
ports = dict(p.split("=") for p in pairs)
cfg = yaml.safe_load(open(src))
cfg["global"] = {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"}
cfg["rule_files"] = [rules_dir + "/" + f for f in cfg["rule_files"]]
seen = set()
for job in cfg["scrape_configs"]:
    for sc in job["static_configs"]:
        moved = []
        for t in sc["targets"]:
            host, port = t.rsplit(":", 1)
            if port not in ports:
                sys.exit("prometheus.yml: target %s of %s is no ops port of the local backbone"
                         % (t, job["job_name"]))
            seen.add(port)
            moved.append("%s:%s" % (host, ports[port]))
            print(job["job_name"], moved[-1])
        sc["targets"] = moved
missing = set(ports) - seen
if missing:
    sys.exit("prometheus.yml does not scrape the local backbone's default ops ports %s"
             % sorted(missing))
yaml.safe_dump(cfg, open(dst, "w"), sort_keys=False)
EOF
NTARGETS=$(wc -l <"$TMP/targets")
"$PROMTOOL" check config "$TMP/prometheus.yml" >"$TMP/promtool.out" 2>&1 ||
  { cat "$TMP/promtool.out" >&2; fail "promtool check config (generated from prometheus.yml)"; }
echo "== [${SECONDS}s] prometheus on $PROM_URL scraping $NTARGETS targets:" $(awk '{print $2}' "$TMP/targets")

"$PROMETHEUS" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
PROM_PID=$!

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    kill -0 "$PROM_PID" 2>/dev/null || fail "prometheus exited (log below)"
    sleep 0.3
  done
  "$@" || true  # say why, once
  fail "timed out after ${secs}s waiting for $what"
}
wait_for 30 "Prometheus's /-/ready" curl -sf --max-time 2 "$PROM_URL/-/ready"

targets_up() {  # every configured target scraped and up; else names the ones that are not
  curl -sf --max-time 3 "$PROM_URL/api/v1/targets?state=active" | "$PYTHON" -c '
import json, sys
want = int(sys.argv[1])
t = json.load(sys.stdin)["data"]["activeTargets"]
down = ["%s %s: %s %s" % (x["labels"]["job"], x["labels"]["instance"], x["health"], x["lastError"])
        for x in t if x["health"] != "up"]
if len(t) != want or down:
    sys.exit("%d of %d targets known; not up: %s" % (len(t), want, down or "none"))' "$NTARGETS"
}
wait_for 30 "every target to be up" targets_up
echo "ok: all $NTARGETS targets up"


FAILURES=0
# expect EXPR WANT [SECONDS]: waits (bounded) until EXPR gives WANT; records a failure naming
# the series and the value seen, and goes on so one run shows every wrong series. Past 80 s in
# all, it no longer waits: the whole check stays bounded however many series are wrong.
expect() {
  local expr=$1 want=$2 secs=${3:-3} got=""
  [ "$SECONDS" -lt 80 ] || secs=0
  local deadline=$((SECONDS + secs))
  while :; do
    got=$(prom_query "$expr" 2>&1) || got="query failed: $got"
    if [ "$got" = "$want" ]; then echo "ok: $expr = $got"; return 0; fi
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 0.5
  done
  echo "FAIL: $expr: expected $want, Prometheus says $got" >&2
  FAILURES=$((FAILURES + 1))
}

r='job="chasqui-router"'
req="chasqui_router_requests_total{$r,env=\"$ENV_NAME\",consumer=\"sin\",provider=\"segip\""
gw='job="chasqui-gateway"'

echo "== [${SECONDS}s] the router: the demo's exchanges by outcome"
if [ -n "$BURST_OK" ]; then
  expect "sum($req,service=\"persona_consulta\",code=\"OK\"})" $((1 + BURST_OK)) 15
  if [ "$BURST_429" -gt 0 ]; then
    expect "sum($req,service=\"persona_consulta\",code=\"QUOTA_EXCEEDED\"})" "$BURST_429"
  else
    expect "sum($req,code=\"QUOTA_EXCEEDED\"})" none
  fi
else
  expect "sum($req,service=\"persona_consulta\",code=~\"OK|QUOTA_EXCEEDED\"})" 13 15
fi
expect "sum($req,service=\"persona_historial\",code=\"UNAVAILABLE\"})" 1
expect "sum($req,service=\"certificado_defuncion\",code=\"FORBIDDEN\"})" 1
expect "sum($req,service=\"persona_consulta\",code=\"END_USER_UNKNOWN\"})" 1
expect "sum(chasqui_router_requests_total{$r})" 16
expect "count(count by (code) (chasqui_router_requests_total{$r}))" \
  "$([ "${BURST_429:-1}" -gt 0 ] && echo 5 || echo 4)"
expect "sum(chasqui_router_dropped_total{$r})" 0
expect "chasqui_router_ready{$r,env=\"$ENV_NAME\"}" 1
expect "chasqui_router_in_flight{$r}" 0
expect "chasqui_router_audit_up{$r}" 1
expect "chasqui_router_audit_backlog{$r}" 0
expect "chasqui_nats_reconnects_total{$r,part=\"router\"}" 0

echo "== [${SECONDS}s] the gateways"
expect "count(up{$gw} == 1)" 2
if [ -n "$BURST_OK" ]; then
  expect "sum(chasqui_gateway_requests_total{$gw,direction=\"consume\",provider=\"segip\",service=\"persona_consulta\",code=\"OK\"})" $((1 + BURST_OK))
  expect "sum(chasqui_gateway_requests_total{$gw,direction=\"provide\",service=\"persona_consulta\",code=\"OK\"})" $((1 + BURST_OK))
fi
gwc="chasqui_gateway_requests_total{$gw,direction=\"consume\",provider=\"segip\""
if [ -n "$BURST_429" ]; then
  expect "sum($gwc,code=\"QUOTA_EXCEEDED\"}) or vector(0)" "$BURST_429"
fi
# sin's gateway also answered step 2 itself (no end user: 400) and step 4 (wrong API key: 401).
expect "sum($gwc,code=\"BAD_REQUEST\"})" 1
expect "sum($gwc,code=\"UNAUTHENTICATED\"})" 1
expect "sum($gwc,code=\"FORBIDDEN\"})" 1
expect "sum($gwc,code=\"UNAVAILABLE\"})" 1
expect "sum($gwc,code=\"END_USER_UNKNOWN\"})" 1
expect "sum($gwc})" 18

echo "== [${SECONDS}s] the trace: one durable record per exchange the router decided (16) and per certificate issued (10)"
expect "sum(chasqui_audit_records_appended_total{job=\"chasqui-audit\",outcome=\"durable\"})" 26
expect "sum(chasqui_audit_records_appended_total{job=\"chasqui-audit\",outcome=~\"rejected|failed\"})" 0
expect "sum(chasqui_audit_exchanges_total{job=\"chasqui-audit\",consumer=\"sin\",provider=\"segip\"})" 16
expect "chasqui_audit_backlog{job=\"chasqui-audit\"}" 0
expect "chasqui_audit_chain_length{job=\"chasqui-audit\"} >= bool 26" 1

echo "== [${SECONDS}s] the catalog, and the snapshots the router and the gateways hold"
expect "chasqui_catalog_version{job=\"chasqui-catalog\"} > bool 0" 1
expect "count(chasqui_router_catalog_snapshot_version{$r} > 0)" 1
expect "count(chasqui_gateway_catalog_snapshot_version{$gw} > 0)" 2
expect "count(chasqui_router_catalog_snapshot_age_seconds{$r} < 300)" 1
expect "count(chasqui_gateway_catalog_snapshot_age_seconds{$gw} < 300)" 2

echo "== [${SECONDS}s] quota"
expect "chasqui_quota_enforcer_service_up{$r}" 1
# The demo's grants: persona_consulta and persona_historial at 5/s and 1000 a day each.
q="job=\"chasqui-quota\",env=\"$ENV_NAME\",consumer=\"sin\",provider=\"segip\",service=\"persona_consulta\""
expect "chasqui_quota_limit{$q,limit=\"day\"}" 1000
expect "chasqui_quota_limit{$q,limit=\"rate_per_second\"}" 5
expect "count(chasqui_quota_limit{job=\"chasqui-quota\",limit=\"day\"})" 2
# Leased to the router ahead of use, so at least what was served.
expect "chasqui_quota_consumed{$q,period=\"day\"} >= bool $((1 + ${BURST_OK:-0}))" 1
if [ -n "$BURST_429" ]; then
  expect "sum(chasqui_quota_enforcer_refusals_total{$r})" "$BURST_429"
fi

echo "== [${SECONDS}s] crypto, revocation lists and certificate expiry"
expect "chasqui_crypto_revocation_list_version{job=\"chasqui-crypto\"} >= bool 1" 1
expect "chasqui_crypto_revocation_list_seconds_to_valid_until{job=\"chasqui-crypto\"} > bool 900" 1
# router, segip, sin, audit, the operator, two MAEs, two managers, the catalog
expect "sum(chasqui_crypto_certificates_issued_total{job=\"chasqui-crypto\"})" 10
expect "chasqui_crypto_certificate_earliest_expiry_seconds{job=\"chasqui-crypto\"} > bool 86400" 1
for part in router gateway; do
  n=$([ $part = router ] && echo 1 || echo 2)
  expect "count(chasqui_${part}_revocation_list_version{job=\"chasqui-$part\"} == on () group_left max(chasqui_crypto_revocation_list_version))" "$n"
  expect "count(chasqui_${part}_revocation_list_valid_until_seconds{job=\"chasqui-$part\"} - time() > 900)" "$n"
  expect "count(chasqui_${part}_certificate_expiry_timestamp_seconds{job=\"chasqui-$part\"} - time() > 14 * 86400)" "$n"
done

echo "== [${SECONDS}s] two more refusals (END_USER_UNKNOWN) through sin's gateway, while scraped"
key_file="$DATA/keys/sin-api.key"
[ -f "$key_file" ] || fail "sin's API key $key_file not found (CHASQUI_DATA=$DATA)"
for i in 1 2; do
  status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
    -X POST "http://127.0.0.1:$SIN_GW_PORT/v1/segip/persona_consulta" \
    -H "Content-Type: application/json" -H "X-Chasqui-Purpose: ops-check" \
    -H "Authorization: Bearer $(cat "$key_file")" -H "X-Chasqui-End-User: nadie.registrado" \
    -d '{"ci":"4567890"}') || status="no answer"
  [ "$status" = 403 ] || fail "refusal $i through sin's gateway: expected HTTP 403, got $status"
done
expect "sum($req,service=\"persona_consulta\",code=\"END_USER_UNKNOWN\"})" 3 15
expect "sum(chasqui_audit_records_appended_total{job=\"chasqui-audit\",outcome=\"durable\"})" 28
expect "sum($gwc,code=\"END_USER_UNKNOWN\"})" 3

echo "== [${SECONDS}s] recording rules"
# Prometheus saw only the two refusals grow: over its window every request was refused.
expect "env:chasqui_router_refusals:ratio_rate5m{env=\"$ENV_NAME\"}" 1 20
expect "env_consumer_code:chasqui_router_requests:rate1m{env=\"$ENV_NAME\",consumer=\"sin\",code=\"END_USER_UNKNOWN\"} > bool 0" 1
expect "env_provider_service_consumer_code:chasqui_router_requests:rate5m{env=\"$ENV_NAME\",provider=\"segip\",service=\"persona_consulta\",consumer=\"sin\",code=\"OK\"}" 0
expect "count(env_code:chasqui_router_requests:rate1m{env=\"$ENV_NAME\"})" \
  "$([ "${BURST_429:-1}" -gt 0 ] && echo 5 || echo 4)"

echo "== [${SECONDS}s] every rule evaluates; no alert fires on this healthy backbone"
rules_healthy() {
  curl -sf --max-time 5 "$PROM_URL/api/v1/rules" | "$PYTHON" -c '
import json, sys, yaml
want = sum(1 for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"] if "alert" in r)
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
alerts = [r for r in rules if r["type"] == "alerting"]
unevaluated = [r["name"] for r in rules if not r.get("lastEvaluation", "").startswith("2")]
bad = [(r["name"], r["health"], r.get("lastError", "")) for r in rules if r["health"] != "ok"]
if bad or unevaluated or len(alerts) != want:
    sys.exit("rules: %d alerts loaded of %d in alert_rules.yml; not evaluated yet: %s; unhealthy: %s"
             % (len(alerts), want, unevaluated, bad))
firing = ["%s %s" % (r["name"], a["labels"]) for r in alerts for a in r.get("alerts", [])
          if a["state"] == "firing"]
if firing:
    sys.exit("alerts firing on a healthy backbone: %s" % firing)
pending = [r["name"] for r in alerts if r["state"] == "pending"]
print("%d rules in %d groups, %d of them alerts, all evaluate; none firing; pending: %s"
      % (len(rules), len(groups), len(alerts), pending or "none"))' "$PROM_DIR/alert_rules.yml"
}
if wait_for 15 "every rule to evaluate without error" rules_healthy; then rules_healthy; fi

echo "== [${SECONDS}s] every dashboard query parses against this Prometheus"
"$PYTHON" "$HERE/dashboard_queries.py" "$PROM_URL" "$GRAFANA_DIR"/*.json ||
  fail "a dashboard query does not parse (above)"

[ "$FAILURES" -eq 0 ] || fail "$FAILURES series did not have the expected value (each named above)"
echo "PASS: Prometheus scraped all $NTARGETS parts of the backbone, saw the demo's traffic, evaluated every rule (${SECONDS}s)"
