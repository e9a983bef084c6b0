#!/usr/bin/env python3
"""Writes a Torii config template for the key_auth + rate_limit benchmark.

Usage: keyauth_config.py BASE_TEMPLATE OUT_TEMPLATE [CONSUMERS] [--key-auth-only]

The base template (conf/torii.yaml.tmpl) plus CONSUMERS consumers (10,000 by default), each
with one API key `key-<i>` stored as its SHA-256 hash, and global `key_auth` and a local
`rate_limit` keyed by the consumer with a limit the load never reaches (the decision path
runs in full and nothing is refused). bench/lib/api-keys.lua sends 1,000 of those keys.
With --key-auth-only, no rate_limit (to tell the two plugins' costs apart).
"""
import hashlib
import sys


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    key_auth_only = "--key-auth-only" in sys.argv
    base, out = args[0], args[1]
    n = int(args[2]) if len(args) > 2 else 10_000
    text = open(base).read()
    lines = ["", "plugins:", "  key_auth: {}"]
    if not key_auth_only:
        lines += [
            "  rate_limit:",
            "    limits: [{requests: 1000000, per: 1s}]",
            "    key: [consumer]",
        ]
    lines += ["", "consumers:"]
    for i in range(n):
        digest = hashlib.sha256(f"key-{i}".encode()).hexdigest()
        lines.append(f"  - name: c{i}")
        lines.append(f"    keys: ['sha256:{digest}']")
    with open(out, "w") as f:
        f.write(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
