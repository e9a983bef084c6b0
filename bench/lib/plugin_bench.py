#!/usr/bin/env python3
"""Render the plugin benchmark: a Torii config with 10,000 consumers and one route per scenario,
plus 1,000 distinct credentials per scenario for wrk to cycle through.

Usage: plugin_bench.py OUTDIR LISTEN ADMIN BACKEND_ADDR [CONSUMERS] [DISTINCT]
Writes OUTDIR/torii.yaml and OUTDIR/<scenario>.values (one header value per line).

Scenarios (route path -> plugin; every route is rewritten to the backend's /hello):
  /plain   no plugins (the baseline)
  /key     key_auth (X-Api-Key), keys stored as SHA-256 hashes
  /jwths   jwt HS256 (shared secret)
  /jwtes   jwt ES256 (P-256 public key inline)
  /jwtes0  jwt ES256 with the verified-token cache off (every request verifies a signature)
JWTs are made here with the standard library (HS256) and the `cryptography` package (ES256),
independently of the gateway's JWT code.
"""
import base64, hashlib, hmac, json, os, sys, time

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def jwt_hs256(secret, claims):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"

def main():
    out, listen, admin, backend = sys.argv[1:5]
    consumers = int(sys.argv[5]) if len(sys.argv) > 5 else 10000
    distinct = int(sys.argv[6]) if len(sys.argv) > 6 else 1000
    os.makedirs(out, exist_ok=True)
    secret = hashlib.sha256(b"torii-bench-secret").hexdigest().encode()  # 64 bytes
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, utils
        from cryptography.hazmat.primitives import hashes, serialization
    except ImportError:
        sys.exit("plugin_bench.py: needs the `cryptography` package (pip install cryptography)")
    es_key = ec.generate_private_key(ec.SECP256R1())
    es_pub = es_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def jwt_es256(claims):
        head = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "bench"}).encode())
        body = b64(json.dumps(claims).encode())
        der = es_key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        return f"{head}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    lines = [f"listeners:\n  - name: bench\n    bind: {listen}\n",
             f"upstreams:\n  - name: backend\n    targets: [{{url: 'http://{backend}'}}]\n",
             f"admin:\n  bind: {admin}\naccess_log:\n  enabled: false\nserver:\n  watch_config: false\n",
             "consumers:\n"]
    keys = []
    step = max(1, consumers // distinct)
    for i in range(consumers):
        key = f"bench-key-{i:05d}-{hashlib.sha256(str(i).encode()).hexdigest()[:16]}"
        digest = hashlib.sha256(key.encode()).hexdigest()
        lines.append(f"  - name: c{i}\n    keys: ['sha256:{digest}']\n")
        if i % step == 0 and len(keys) < distinct:
            keys.append((i, key))
    pem = "\n".join("                  " + l for l in es_pub.strip().splitlines())
    lines.append(
        "routes:\n"
        "  - name: plain\n    match: {path: /plain}\n    upstream: backend\n    rewrite: {path: /hello}\n"
        "  - name: key\n    match: {path: /key}\n    upstream: backend\n    rewrite: {path: /hello}\n    plugins:\n      key_auth: {}\n"
        "  - name: jwths\n    match: {path: /jwths}\n    upstream: backend\n    rewrite: {path: /hello}\n    plugins:\n"
        "      jwt:\n        issuers:\n          - issuer: bench\n            algorithms: [HS256]\n"
        f"            keys: [{{secret: '{secret.decode()}'}}]\n"
        "  - name: jwtes\n    match: {path: /jwtes}\n    upstream: backend\n    rewrite: {path: /hello}\n    plugins:\n"
        "      jwt:\n        issuers:\n          - issuer: bench\n            algorithms: [ES256]\n"
        "            keys:\n              - kid: bench\n                pem: |\n" + pem + "\n"
        "  - name: jwtes0\n    match: {path: /jwtes0}\n    upstream: backend\n    rewrite: {path: /hello}\n    plugins:\n"
        "      jwt:\n        verified_cache_ttl: 0s\n        issuers:\n          - issuer: bench\n            algorithms: [ES256]\n"
        "            keys:\n              - kid: bench\n                pem: |\n" + pem + "\n")
    with open(os.path.join(out, "torii.yaml"), "w") as fh:
        fh.write("".join(lines))
    exp = int(time.time()) + 7 * 86400
    values = {
        "plain": ["-"] * distinct,
        "key": [k for _, k in keys],
        "jwths": [jwt_hs256(secret, {"iss": "bench", "sub": f"c{i}", "exp": exp}) for i, _ in keys],
        "jwtes": [jwt_es256({"iss": "bench", "sub": f"c{i}", "exp": exp}) for i, _ in keys],
    }
    values["jwtes0"] = values["jwtes"]
    for name, vals in values.items():
        with open(os.path.join(out, f"{name}.values"), "w") as fh:
            fh.write("\n".join(vals) + "\n")

if __name__ == "__main__":
    main()
