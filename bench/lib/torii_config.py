#!/usr/bin/env python3
"""Render bench/conf/torii.yaml.tmpl into a Torii config, optionally with N generated routes.

Usage: torii_config.py TEMPLATE OUT ROUTES LISTEN ADMIN BACKEND_ADDR
Prints the benchmark path (the URL path that run.sh should request) on stdout.

ROUTES=1: only the template's catch-all `path_prefix: /` route; benchmark path /hello.
ROUTES=N>1: N generated routes before the catch-all, the same mix as the router's criterion
benchmark (crates/torii-router/benches/lookup.rs), route i by i % 10:
  0-5 (60 %)  static          path: /svc{i}/items
  6-8 (30 %)  with a param    path: /svc{i}/items/{id}
  9   (10 %)  host-specific   path: /svc{i}/items on host svc{i}.example.com
The benchmark path is /svc{m}/items/42 for the param route m closest above N/2 (5006 for
N=10000), so the measured request is routed by one of the N routes, not by the catch-all.
"""
import sys


def route(i):
    kind = i % 10
    if kind <= 5:
        match = f"      path: /svc{i}/items\n"
    elif kind <= 8:
        match = f"      path: /svc{i}/items/{{id}}\n"
    else:
        match = f"      hosts: [svc{i}.example.com]\n      path: /svc{i}/items\n"
    return f"  - name: svc{i}\n    match:\n{match}    upstream: backend\n"


def main():
    tmpl, out, n, listen, admin, backend = sys.argv[1:7]
    n = int(n)
    if n < 1:
        sys.exit("ROUTES must be >= 1")
    text = open(tmpl, encoding="utf-8").read()
    for k, v in (("LISTEN", listen), ("ADMIN", admin), ("BACKEND_ADDR", backend)):
        text = text.replace(f"@{k}@", v)
    marker = "  # @EXTRA_ROUTES@\n"
    if marker not in text:
        sys.exit("template has no EXTRA_ROUTES marker line")
    bench_path = "/hello"
    extra = ""
    if n > 1:
        extra = f"  # {n} generated routes (60 % static, 30 % param, 10 % host-specific)\n"
        extra += "".join(route(i) for i in range(n))
        m = (n // 2) - (n // 2) % 10 + 6
        if m >= n:
            m -= 10
        if m >= 0:
            bench_path = f"/svc{m}/items/42"
    text = text.replace(marker, extra)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(bench_path)


if __name__ == "__main__":
    main()
