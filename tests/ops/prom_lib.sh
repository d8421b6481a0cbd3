#!/usr/bin/env bash
# Shared by prometheus_test.sh and backbone_prometheus.sh (sourced, after each defines `fail`):
# finding Debian's binaries, a free loopback port, and one-sample Prometheus queries
# ($PROM_URL, set by the caller once Prometheus runs).

find_bin() {  # find_bin NAME PACKAGE: prints the path, or fails naming the package to install
  local name=$1 pkg=$2 d
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return 0
  fi
  for d in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin /sbin /bin; do
    if [ -x "$d/$name" ]; then
      echo "$d/$name"
      return 0
    fi
  done
  echo "FAIL: $name not found on PATH or in /usr/sbin, /usr/bin, /usr/local/*: install Debian's" \
    "package $pkg (./deploy/install-deps.sh)" >&2
  return 1
}

# The system's python3 first: a version manager's shim on PATH costs a fraction of a second a call.
if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=$(find_bin python3 python3); fi

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# prom_query EXPR: prints the value of the single sample EXPR returns, "none" if it returns
# nothing, "many:N" if it returns N samples; fails if the query fails.
prom_query() {
  curl -sfG --max-time 5 "$PROM_URL/api/v1/query" --data-urlencode "query=$1" |
    "$PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
if d.get("status") != "success":
    sys.exit("query failed: %s" % d)
r = d["data"]["result"]
print("none" if not r else r[0]["value"][1] if len(r) == 1 else "many:%d" % len(r))'
}
