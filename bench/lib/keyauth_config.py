#!/usr/bin/env python3
"""Writes a Torii config template for the key_auth + rate_limit benchmark.

Usage: keyauth_config.py BASE_TEMPLATE OUT_TEMPLATE [CONSUMERS]

The base template (conf/torii.yaml.tmpl) plus CONSUMERS consumers (10,000 by default), each
with one API key `key-<i>` stored as its SHA-256 hash, and global `key_auth` and a local
`rate_limit` keyed by the consumer with a limit the load never reaches (the decision path
runs in full and nothing is refused). bench/lib/api-keys.lua sends 1,000 of those keys.
"""
import hashlib
import sys


def main():
    base, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    text = open(base).read()
    lines = [
        "",
        "plugins:",
        "  key_auth: {}",
        "  rate_limit:",
        "    limits: [{requests: 100000000, per: 1s}]",
        "    key: [consumer]",
        "",
        "consumers:",
    ]
    for i in range(n):
        digest = hashlib.sha256(f"key-{i}".encode()).hexdigest()
        lines.append(f"  - name: c{i}")
        lines.append(f"    keys: ['sha256:{digest}']")
    with open(out, "w") as f:
        f.write(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
