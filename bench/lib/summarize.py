#!/usr/bin/env python3
"""Summarize a run.sh results directory.

Reads <dir>/runs.tsv (one row per measured wrk run) and the raw wrk outputs it points to,
prints a human table, writes <dir>/summary.json, and prints ONE final machine-parsable line:

  BENCH_RESULT key=value key=value ... ratio_vs_nginx=<x|NA>

Ratios are computed per round (both numbers from the same round, i.e. measured minutes
apart under the same background noise) and the median over rounds is reported.
"""
import csv
import json
import os
import re
import statistics
import sys

UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}
ORDER = ["direct", "nginx1", "nginx2", "haproxy", "gateway"]


def to_us(tok):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", tok)
    if not m:
        return None
    return float(m.group(1)) * UNIT_US[m.group(2)]


def parse_wrk(path):
    out = {"rps": None, "p50_us": None, "p75_us": None, "p90_us": None, "p99_us": None,
           "requests": None, "socket_errors": 0, "non2xx": 0}
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        return out
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M)
        if m:
            out["p%s_us" % pct] = to_us(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    return out


def fnum(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    if x is None:
        return "NA"
    return f"{x:.{nd}f}"


def main():
    d = sys.argv[1]
    ref = sys.argv[2] if len(sys.argv) > 2 else "nginx1"
    env = {}
    try:
        for line in open(os.path.join(d, "env.txt")):
            for kv in line.split():
                if "=" in kv:
                    k, v = kv.split("=", 1)
                    env.setdefault(k, v)
    except OSError:
        pass

    runs = []
    with open(os.path.join(d, "runs.tsv")) as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            w = parse_wrk(row["wrk_out"])
            rec = {"round": int(row["round"]), "target": row["target"], **w}
            for k in ("wrk_cpu_s", "sut_cpu_s", "backend_cpu_s", "busy_all_s",
                      "busy_client_s", "busy_server_s", "elapsed_s"):
                rec[k] = fnum(row[k])
            rec["backend_estab"] = int(row["backend_estab"])
            rec["backend_timewait"] = int(row["backend_timewait"])
            el = rec["elapsed_s"] or 1.0
            wrk, sut, be = (rec["wrk_cpu_s"] or 0.0), (rec["sut_cpu_s"] or 0.0), (rec["backend_cpu_s"] or 0.0)
            # Kernel time spent on our loopback traffic (softirq) is charged to our processes
            # (no IRQ_TIME_ACCOUNTING on this kernel), so "others" really is other work.
            if env.get("pin") == "split":
                # CPU taken from the system-under-test core(s) by anything that is not ours:
                # this is what actually distorts the proxied numbers.
                on_server = sut + (be if env.get("backend_cpus") == env.get("server_cpus") else 0.0)
                on_client = wrk + (be if env.get("backend_cpus") == env.get("client_cpus") else 0.0)
                rec["others_pct"] = max(0.0, (rec["busy_server_s"] - on_server) / el * 100)
                rec["client_others_pct"] = max(0.0, (rec["busy_client_s"] - on_client) / el * 100)
            else:
                rec["others_pct"] = max(0.0, (rec["busy_all_s"] - wrk - sut - be) / el * 100)
                rec["client_others_pct"] = None
            rec["server_busy_pct"] = rec["busy_server_s"] / el * 100 if rec["busy_server_s"] else None
            rec["client_busy_pct"] = rec["busy_client_s"] / el * 100 if rec["busy_client_s"] else None
            n = rec["requests"]
            rec["sut_us_per_req"] = rec["sut_cpu_s"] * 1e6 / n if (n and rec["sut_cpu_s"] is not None) else None
            rec["backend_us_per_req"] = rec["backend_cpu_s"] * 1e6 / n if n else None
            rec["wrk_us_per_req"] = rec["wrk_cpu_s"] * 1e6 / n if n else None
            rec["valid"] = rec["rps"] is not None and rec["socket_errors"] == 0 and rec["non2xx"] == 0
            runs.append(rec)

    targets = [t for t in ORDER if any(r["target"] == t for r in runs)]
    targets += sorted({r["target"] for r in runs} - set(targets))
    rounds = sorted({r["round"] for r in runs})
    by = {(r["round"], r["target"]): r for r in runs}

    def per_round_ratio(num, den, key="rps"):
        vals = []
        for rd in rounds:
            a, b = by.get((rd, num)), by.get((rd, den))
            if a and b and a.get(key) and b.get(key):
                vals.append(a[key] / b[key])
        return vals

    summary = {"env": env, "ref": ref, "targets": {}, "runs": runs}
    print()
    print(f"path={env.get('path', '?')} pin={env.get('pin', '?')} "
          f"client_cpus={env.get('client_cpus', '?')} server_cpus={env.get('server_cpus', '?')} "
          f"wrk={env.get('wrk', '?')} rounds={len(rounds)}")
    hdr = (f"{'target':<9}{'req/s med':>10}{'min':>8}{'max':>8}{'spread%':>8}"
           f"{'p50 us':>8}{'p99 us':>9}{'proxy us/req':>13}{'backend us/req':>15}{'wrk us/req':>11}"
           f"{'vs direct':>10}{'others%':>8}")
    print(hdr)
    print("-" * len(hdr))
    for t in targets:
        rs = [r for r in runs if r["target"] == t]
        rps = [r["rps"] for r in rs if r["rps"]]
        m = med(rps)
        spread = (max(rps) - min(rps)) / m * 100 if rps and m else None
        vs_direct = med(per_round_ratio(t, "direct")) if t != "direct" else 1.0
        s = {
            "rps_median": m, "rps_min": min(rps) if rps else None, "rps_max": max(rps) if rps else None,
            "rps_all": rps, "spread_pct": spread,
            "cov_pct": (statistics.pstdev(rps) / statistics.mean(rps) * 100) if len(rps) > 1 else None,
            "p50_us": med([r["p50_us"] for r in rs]), "p99_us": med([r["p99_us"] for r in rs]),
            "sut_us_per_req": med([r["sut_us_per_req"] for r in rs]),
            "backend_us_per_req": med([r["backend_us_per_req"] for r in rs]),
            "wrk_us_per_req": med([r["wrk_us_per_req"] for r in rs]),
            "client_others_pct": med([r["client_others_pct"] for r in rs]),
            "ratio_vs_direct": vs_direct,
            "server_busy_pct": med([r["server_busy_pct"] for r in rs]),
            "others_pct": med([r["others_pct"] for r in rs]),
            "backend_timewait_max": max(r["backend_timewait"] for r in rs),
            "invalid_runs": sum(1 for r in rs if not r["valid"]),
        }
        summary["targets"][t] = s
        print(f"{t:<9}{fmt(m):>10}{fmt(s['rps_min']):>8}{fmt(s['rps_max']):>8}{fmt(spread, 1):>8}"
              f"{fmt(s['p50_us']):>8}{fmt(s['p99_us']):>9}{fmt(s['sut_us_per_req'], 1):>13}"
              f"{fmt(s['backend_us_per_req'], 1):>15}{fmt(s['wrk_us_per_req'], 1):>11}{fmt(vs_direct, 3):>10}"
              f"{fmt(s['others_pct']):>8}")

    # gateway vs reference nginx
    gw = "gateway" in summary["targets"]
    ratio = med(per_round_ratio("gateway", ref)) if gw else None
    p99_ratio = med(per_round_ratio("gateway", ref, "p99_us")) if gw else None
    cpu_ratio = med(per_round_ratio("gateway", ref, "sut_us_per_req")) if gw else None
    # gateway vs haproxy, when it ran too (the faster anchor)
    hap = gw and "haproxy" in summary["targets"]
    ratio_hap = med(per_round_ratio("gateway", "haproxy")) if hap else None
    cpu_ratio_hap = med(per_round_ratio("gateway", "haproxy", "sut_us_per_req")) if hap else None
    noisy = sum(1 for r in runs if (r["others_pct"] or 0) > 10)
    invalid = sum(1 for r in runs if not r["valid"])
    spreads = [s["spread_pct"] for s in summary["targets"].values() if s["spread_pct"] is not None]
    summary.update({"ratio_vs_nginx": ratio, "p99_ratio_vs_nginx": p99_ratio,
                    "cpu_per_req_ratio_vs_nginx": cpu_ratio, "ratio_vs_haproxy": ratio_hap,
                    "cpu_per_req_ratio_vs_haproxy": cpu_ratio_hap,
                    "noisy_runs": noisy, "invalid_runs": invalid})
    with open(os.path.join(d, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)

    print()
    where = "the system-under-test core(s)" if env.get("pin") == "split" else "the box"
    print("notes: ratios = median over rounds of per-round ratios; 'proxy us/req' = CPU time of the proxy")
    print("       process tree per request (lower is better); others% = CPU taken from " + where)
    print(f"       by processes that are not part of the benchmark (% of one core; >10 flags a noisy run:")
    print(f"       {noisy} of {len(runs)}).")
    if invalid:
        print(f"WARNING: {invalid} run(s) had socket errors or non-2xx responses (see raw/)")
    for t, s in summary["targets"].items():
        if t != "direct" and s["backend_timewait_max"] > 1000:
            print(f"WARNING: {t}: {s['backend_timewait_max']} TIME_WAIT sockets to the backend "
                  "-> upstream keep-alive is probably not working")

    kv = os.environ.get("BENCH_LABELS", "").split()
    kv += [f"path={env.get('path', 'NA')}", f"pin={env.get('pin', 'NA')}", f"rounds={len(rounds)}"]
    for t in targets:
        s = summary["targets"][t]
        kv += [f"{t}_rps={fmt(s['rps_median'])}", f"{t}_p50_us={fmt(s['p50_us'])}",
               f"{t}_p99_us={fmt(s['p99_us'])}"]
        if t != "direct":
            kv.append(f"{t}_vs_direct={fmt(s['ratio_vs_direct'], 3)}")
            kv.append(f"{t}_cpu_us_per_req={fmt(s['sut_us_per_req'], 2)}")
    kv += [f"spread_max_pct={fmt(max(spreads) if spreads else None, 1)}", f"noisy_runs={noisy}",
           f"invalid_runs={invalid}", f"ref={ref}",
           f"p99_ratio_vs_nginx={fmt(p99_ratio, 3)}", f"cpu_ratio_vs_nginx={fmt(cpu_ratio, 3)}",
           f"ratio_vs_nginx={fmt(ratio, 3)}"]
    if hap:
        kv += [f"cpu_ratio_vs_haproxy={fmt(cpu_ratio_hap, 3)}", f"ratio_vs_haproxy={fmt(ratio_hap, 3)}"]
    print("BENCH_RESULT " + " ".join(kv))


if __name__ == "__main__":
    main()
