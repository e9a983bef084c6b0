#!/usr/bin/env python3
"""Admin API and cluster mode at scale (issue 20).

1. Startup: a local config store (--data-dir) holding N consumers, each with an API key;
   the time from exec to /readyz answering 200, and the process's RSS then.
2. One consumer change on that node: PUT a consumer and POST a key, timed to the answer
   (the change is applied when the answer comes), median of 5.
3. With DATABASE_URL: three nodes in cluster mode on a fresh database seeded with the same N
   consumers; startup of each, then a consumer created on node 1 timed until its key
   authenticates on nodes 2 and 3 (median of 5).
4. Traffic during changes: wrk on a key_auth route of a small config while CHANGES
   writes are applied one after another (nine consumer changes to one route change);
   wrk's error and non-2xx counts.

Usage: bench/admin_scale.py TORII_BINARY    # N=100000 CHANGES=1000 DATABASE_URL=...
Needs python3, curl-free (urllib), wrk for step 4, psql for step 3.
"""
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__)
N = int(os.environ.get("N", "100000"))
CHANGES = int(os.environ.get("CHANGES", "1000"))
DB = os.environ.get("DATABASE_URL")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def config(public, admin):
    return f"""listeners:
  - name: public
    bind: 127.0.0.1:{public}
admin:
  bind: 127.0.0.1:{admin}
access_log:
  enabled: false
server:
  watch_config: false
routes:
  - name: private
    match: {{path: /private}}
    direct_response: {{body: ok}}
    plugins:
      key_auth: {{}}
"""


def key_hash(i):
    return "sha256:" + hashlib.sha256(f"key-{i}".encode()).hexdigest()


def runtime_json(n):
    consumers = {
        f"c{i:06d}": {"value": {"name": f"c{i:06d}", "keys": [key_hash(i)]}, "revision": 1}
        for i in range(n)
    }
    return {"revision": 1, "entities": {"consumers": consumers}}


def http(method, url, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def start(args, admin, timeout=120):
    t0 = time.monotonic()
    p = subprocess.Popen([BIN, "run", *args], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    while time.monotonic() - t0 < timeout:
        if http("GET", f"http://127.0.0.1:{admin}/readyz")[0] == 200:
            return p, time.monotonic() - t0
        if p.poll() is not None:
            sys.exit(f"torii exited with {p.returncode}")
        time.sleep(0.02)
    p.kill()
    sys.exit("torii did not become ready")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def one_change(admin, name):
    t0 = time.monotonic()
    s1, _ = http("PUT", f"http://127.0.0.1:{admin}/config/consumers/{name}", {})
    s2, body = http("POST", f"http://127.0.0.1:{admin}/config/consumers/{name}/keys", {})
    took = time.monotonic() - t0
    assert s1 == 201 and s2 == 201, (s1, s2, body[:300])
    return took, json.loads(body)["key"]


def single_node(tmp):
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    with open(os.path.join(data, "runtime.json"), "w") as f:
        json.dump(runtime_json(N), f)
    public, admin = free_port(), free_port()
    conf = os.path.join(tmp, "torii.yaml")
    with open(conf, "w") as f:
        f.write(config(public, admin))
    p, took = start(["-c", conf, "--data-dir", data], admin)
    rss = rss_mib(p.pid)
    ok = http("GET", f"http://127.0.0.1:{public}/private", headers={"x-api-key": f"key-{N - 1}"})[0]
    changes = [one_change(admin, f"new{i}")[0] for i in range(5)]
    p.terminate()
    p.wait()
    print(f"single node, {N} consumers: ready in {took:.2f} s, RSS {rss:.0f} MiB, "
          f"last consumer's key -> {ok}; one change (PUT consumer + POST key) "
          f"median {statistics.median(changes) * 1000:.0f} ms")


def cluster(tmp):
    base, _, _ = DB.rpartition("/")
    name = f"torii_scale_{os.getpid()}"
    subprocess.run(["psql", DB, "-qc", f"CREATE DATABASE {name}"], check=True)
    url = f"{base}/{name}"
    nodes = []
    try:
        # The first node applies the migrations on an empty store; then the store is seeded.
        for i in range(3):
            public, admin = free_port(), free_port()
            conf = os.path.join(tmp, f"node{i}.yaml")
            with open(conf, "w") as f:
                f.write(config(public, admin))
            nodes.append((conf, public, admin, os.path.join(tmp, f"n{i}")))
        first, _ = start(["-c", nodes[0][0], "--database-url", url], nodes[0][2])
        first.terminate()
        first.wait()
        seed = os.path.join(tmp, "seed.sql")
        with open(seed, "w") as f:
            f.write("BEGIN;\nINSERT INTO torii_revisions (revision, actor, action, changes) VALUES (1, 'seed', 'apply', '[]');\n")
            f.write("COPY torii_entities (kind, name, value, revision) FROM stdin;\n")
            for i in range(N):
                v = json.dumps({"name": f"c{i:06d}", "keys": [key_hash(i)]})
                f.write(f"consumers\tc{i:06d}\t{v}\t1\n")
            f.write("\\.\nCOMMIT;\n")
        subprocess.run(["psql", url, "-q", "-f", seed], check=True, stdout=subprocess.DEVNULL)
        procs = []
        for conf, public, admin, data in nodes:
            p, took = start(["-c", conf, "--database-url", url, "--data-dir", data], admin)
            procs.append(p)
            print(f"cluster node ready in {took:.2f} s with {N} consumers, RSS {rss_mib(p.pid):.0f} MiB")
        times = []
        for i in range(5):
            t0 = time.monotonic()
            _, key = one_change(nodes[0][2], f"prop{i}")
            for _, public, _, _ in nodes[1:]:
                while http("GET", f"http://127.0.0.1:{public}/private", headers={"x-api-key": key})[0] != 200:
                    if time.monotonic() - t0 > 30:
                        sys.exit("no propagation within 30 s")
                    time.sleep(0.005)
            times.append(time.monotonic() - t0)
        print(f"cluster, {N} consumers: a consumer and key created on node 1 authenticate on "
              f"nodes 2 and 3 after (median of 5) {statistics.median(times) * 1000:.0f} ms "
              f"(max {max(times) * 1000:.0f} ms)")
        for p in procs:
            p.terminate()
            p.wait()
    finally:
        subprocess.run(["psql", DB, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)


def traffic_during_changes(tmp):
    if not shutil.which("wrk"):
        print("traffic during changes: skipped (no wrk)")
        return
    data = os.path.join(tmp, "small")
    os.makedirs(data)
    public, admin = free_port(), free_port()
    conf = os.path.join(tmp, "small.yaml")
    with open(conf, "w") as f:
        f.write(config(public, admin))
    p, _ = start(["-c", conf, "--data-dir", data], admin)
    _, key = one_change(admin, "client")
    script = os.path.join(tmp, "key.lua")
    with open(script, "w") as f:
        f.write(f'wrk.headers["x-api-key"] = "{key}"\n')
    wrk = subprocess.Popen(["wrk", "-t1", "-c16", "-d600s", "-s", script,
                            f"http://127.0.0.1:{public}/private"],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    t0 = time.monotonic()
    # Nine consumer changes (applied to the consumer directory) to one route change (a
    # whole load and a new snapshot), so both ways of applying a change run under traffic.
    for i in range(CHANGES):
        if i % 10 == 9:
            s, body = http("PUT", f"http://127.0.0.1:{admin}/config/routes/extra{i % 7}",
                           {"match": {"path": f"/extra{i % 7}"}, "direct_response": {"body": f"{i}"}})
        else:
            s, body = http("PUT", f"http://127.0.0.1:{admin}/config/consumers/w{i % 50}",
                           {"groups": [f"g{i}"]})
        assert s in (200, 201), (s, body[:200])
    took = time.monotonic() - t0
    wrk.send_signal(2)
    out = wrk.communicate()[0]
    p.terminate()
    p.wait()
    reqs = next((l for l in out.splitlines() if "requests in" in l), "").strip()
    bad = [l.strip() for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l]
    print(f"traffic during {CHANGES} changes ({took:.1f} s): {reqs}; "
          f"{'; '.join(bad) if bad else 'no errors, no non-2xx'}")


def main():
    tmp = tempfile.mkdtemp(prefix="torii-scale-")
    try:
        single_node(tmp)
        if DB:
            cluster(tmp)
        else:
            print("cluster: skipped (DATABASE_URL unset)")
        traffic_during_changes(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
