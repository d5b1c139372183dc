#!/usr/bin/env python3
"""Sums kernels by name from an Nsight Compute CSV (scripts/gpu_kernel_profile.sh).

The file holds the kernels of one pass (DSV4_PROFILE_PASS: a prefill pass, or the traced decode
step that `dsv4 bench` runs after its timed ones); every kernel in it is summed.
"""
import argparse
import collections
import csv
import sys


def short_name(full: str) -> str:
    name = full.replace("void ", "")
    for prefix in ("dsv4::cuda::", "dsv4::", "(anonymous namespace)::", "<unnamed>::"):  # ncu spells both ways
        name = name.replace(prefix, "")
    depth = 0
    for i, ch in enumerate(name):  # cut the parameter list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            return name[:i]
    return name


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    rows = []
    with open(args.csv, newline="") as f:
        lines = [ln for ln in f if ln.startswith('"')]
    header = None
    for rec in csv.reader(lines):
        if rec and rec[0] == "ID":
            header = rec
            continue
        if header is None or len(rec) != len(header):
            continue
        r = dict(zip(header, rec))
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        rows.append((int(r["ID"]), short_name(r["Kernel Name"]), r.get("Grid Size", ""), float(r["Metric Value"].replace(",", ""))))
    rows.sort()
    if not rows:
        print(f"{args.csv}: no kernel timings in the file", file=sys.stderr)
        return 1
    total = sum(r[3] for r in rows)
    print(f"# {args.title}: {len(rows)} kernels, {total / 1e3:.1f} us "
          f"(each kernel alone, cold L2)")
    by_launch = collections.defaultdict(lambda: [0, 0.0])
    by_name = collections.defaultdict(lambda: [0, 0.0])
    for _, name, grid, ns in rows:
        by_launch[(name, grid)][0] += 1
        by_launch[(name, grid)][1] += ns
        base = name.split("<")[0]
        by_name[base][0] += 1
        by_name[base][1] += ns
    print(f"\n{'kernel':<60} {'calls':>6} {'us':>10} {'share':>7}")
    for name, (n, ns) in sorted(by_name.items(), key=lambda kv: -kv[1][1]):
        print(f"{name[:60]:<60} {n:>6} {ns / 1e3:>10.1f} {100 * ns / total:>6.1f}%")
    print(f"\n{'kernel (template) and grid':<90} {'calls':>6} {'us':>10} {'share':>7}")
    for (name, grid), (n, ns) in sorted(by_launch.items(), key=lambda kv: -kv[1][1])[:40]:
        label = f"{name} {grid}"
        print(f"{label[:90]:<90} {n:>6} {ns / 1e3:>10.1f} {100 * ns / total:>6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
