#!/usr/bin/env python3
"""Runs every query of the Grafana dashboards against a live Prometheus.

    dashboard_queries.py PROMETHEUS_URL DASHBOARD.json...

Each panel target's expr and each label_values(...) template variable is sent to
/api/v1/query with the dashboard variables filled in; exits non-zero naming the dashboard,
panel and query that Prometheus refused. Prints how many queries returned no data (some only
have data after drops, reconnects or timeouts).
"""
import json
import re
import sys
import urllib.parse
import urllib.request

VALUES = {"env": "test", "provider": "segip", "consumer": "sin", "service": ".+",
          "instance": ".+", "__rate_interval": "1m", "__interval": "15s", "__range": "5m"}


def exprs(panels):
    for p in panels:
        yield from exprs(p.get("panels", []))
        for t in p.get("targets", []):
            if t.get("expr"):
                yield p.get("title", "?"), t["expr"]


def main():
    url, files = sys.argv[1], sys.argv[2:]
    if not files:
        sys.exit("usage: dashboard_queries.py PROMETHEUS_URL DASHBOARD.json...")
    n = empty = 0
    for f in files:
        with open(f) as fh:
            d = json.load(fh)
        found = list(exprs(d.get("panels", [])))
        for v in d.get("templating", {}).get("list", []):
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q or "")
            if m:
                found.append(("variable " + v["name"], m.group(1)))
        if not found:
            sys.exit("%s: no queries" % f)
        for title, e in found:
            try:
                q = re.sub(r"\$\{?(\w+)\}?", lambda m: VALUES[m.group(1)], e)
            except KeyError as ex:
                sys.exit("%s: panel %r: unknown dashboard variable %s in %r" % (f, title, ex, e))
            try:
                with urllib.request.urlopen(
                        url + "/api/v1/query?" + urllib.parse.urlencode({"query": q}),
                        timeout=5) as r:
                    res = json.load(r)
            except Exception as ex:  # noqa: BLE001 - any failure names the query
                body = ex.read().decode() if hasattr(ex, "read") else ""
                sys.exit("%s: panel %r: query %r failed: %s %s" % (f, title, q, ex, body))
            if res.get("status") != "success":
                sys.exit("%s: panel %r: query %r: %s" % (f, title, q, res))
            n += 1
            empty += not res["data"]["result"]
    print("%d dashboard queries parse (%d without data yet, e.g. drops and reconnects)" % (n, empty))


if __name__ == "__main__":
    main()
