#!/usr/bin/env python3
"""Where a replayed step's wall time goes, from a CUPTI timeline (bench/timeline/kernel_timeline.cpp).

Every launch of a CUDA graph is one replay: its kernels share the graph's id and the correlation id
of the cudaGraphLaunch call. For each graph, the replays after the first --skip are split exactly
into their kernels' exclusive times and the idle gaps between them:

  walking a replay's records in start order, with `front` the latest end so far,
    gap       = max(0, start - front)                the GPU ran nothing of this replay
    exclusive = max(0, end - max(start, front))      time only this record adds to the wall
  so that span (first start to last end) = sum(gaps) + sum(exclusive).

A kernel launched early (programmatic dependent launch) whose blocks wait at griddepcontrol.wait
starts before its predecessor ends; its exclusive time then counts from that end, so the wait is
not charged to it twice. The period (one replay's start to the next one's) adds the host's time
between steps: the bench synchronises and samples after each.
"""
import argparse
import collections
import statistics
import sys

from kernel_profile_summary import short_name


# Kernel families for the roll-up: the first rule whose substring is in the kernel's name.
FAMILIES = [
    ("routed experts", ("grouped_fp4", "grouped_wgmma", "grouped_bf16")),
    ("dense linears", ("skinny_gemm", "skinny_wgmma", "gemv_", "nvjet", "cutlass", "gemm")),
    ("attention", ("sparse_attention",)),
    ("indexer", ("indexer",)),
    ("mHC", ("mhc_",)),
    ("compressor", ("compressor",)),
    ("norms and quantisation", ("rmsnorm", "act_quant", "hadamard")),
    ("routing and combine", ("router", "moe_dispatch", "moe_combine", "swiglu", "gather_rows")),
    ("copies and memsets", ("[memcpy]", "[memset]")),
]


def family(name):
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other"


def read(path):
    recs = []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            p = line.rstrip("\n").split("\t")
            if len(p) != 13:
                continue
            recs.append({
                "kind": p[0], "start": int(p[1]), "end": int(p[2]), "stream": int(p[3]),
                "corr": int(p[4]), "graph": int(p[5]), "grid": p[7], "block": p[8], "cluster": p[9],
                "name": short_name(p[12]) if p[0] == "kernel" else f"[{p[0]}] {p[12]}",
            })
    return recs


def decompose(replay):
    """The replay's records in start order, each with its gap before and its exclusive time.

    Records that start and end at the same nanosecond are taken in name order, so which of them
    the shared time is charged to does not depend on the order of the file."""
    replay = sorted(replay, key=lambda r: (r["start"], r["end"], r["name"]))
    front = replay[0]["start"]
    out = []
    for r in replay:
        gap = max(0, r["start"] - front)
        excl = max(0, r["end"] - max(r["start"], front))
        front = max(front, r["end"])
        out.append((r, gap, excl))
    return out


def us(ns):
    return ns / 1e3


def summarise_graph(gid, replays, skip, listing):
    replays = sorted(replays, key=lambda rp: min(r["start"] for r in rp))
    steady = replays[skip:] if len(replays) > skip else replays
    spans, gaps, excls, sums, periods = [], [], [], [], []
    by_name = collections.defaultdict(lambda: [0, 0, 0, 0])  # launches, duration, exclusive, gap before
    for i, rp in enumerate(steady):
        d = decompose(rp)
        start = d[0][0]["start"]
        end = max(r["end"] for r, _, _ in d)
        spans.append(end - start)
        gaps.append(sum(g for _, g, _ in d))
        excls.append(sum(e for _, _, e in d))
        sums.append(sum(r["end"] - r["start"] for r, _, _ in d))
        for r, g, e in d:
            a = by_name[r["name"]]
            a[0] += 1
            a[1] += r["end"] - r["start"]
            a[2] += e
            a[3] += g
    for a, b in zip(steady, steady[1:]):
        periods.append(min(r["start"] for r in b) - min(r["start"] for r in a))
    n = len(steady)
    med = statistics.median
    span = med(spans)
    print(f"## graph {gid}: {len(replays)} replays ({n} after skipping {len(replays) - n}), "
          f"{len(steady[0])} records each")
    print(f"- span (first start to last end), median: {us(span):.1f} us; "
          f"min {us(min(spans)):.1f}, max {us(max(spans)):.1f}")
    if periods:
        print(f"- period (replay start to the next one's), median: {us(med(periods)):.1f} us: "
              f"{us(med(periods) - span):.1f} us outside the replay (host, sampling, the next launch)")
    print(f"- the span = exclusive {us(med(excls)):.1f} us + idle gaps {us(med(gaps)):.1f} us "
          f"({100 * med(gaps) / span:.1f} %); durations sum to {us(med(sums)):.1f} us "
          f"(> span where kernels overlap)")
    print()
    by_family = collections.defaultdict(lambda: [0, 0, 0])  # launches, exclusive, gap before
    for name, (cnt, _, excl, gap) in by_name.items():
        f = by_family[family(name)]
        f[0] += cnt
        f[1] += excl
        f[2] += gap
    by_family["idle gaps"] = [0, sum(gaps), 0]
    print("| family | launches per replay | exclusive us per replay | share of span | gaps before us |")
    print("|---|---|---|---|---|")
    for fam, (cnt, excl, gap) in sorted(by_family.items(), key=lambda kv: -kv[1][1]):
        print(f"| {fam} | {cnt / n:g} | {us(excl / n):.1f} | {100 * excl / n / span:.1f} % | {us(gap / n):.1f} |")
    print()
    print("| kernel | launches per replay | exclusive us per replay | share of span | duration us | "
          "gap before us |")
    print("|---|---|---|---|---|---|")
    for name, (cnt, dur, excl, gap) in sorted(by_name.items(), key=lambda kv: -kv[1][2]):
        print(f"| {name} | {cnt / n:g} | {us(excl / n):.1f} | {100 * excl / n / span:.1f} % | "
              f"{us(dur / n):.1f} | {us(gap / n):.1f} |")
    print()
    if listing:
        idx = spans.index(sorted(spans)[len(spans) // 2])
        d = decompose(steady[idx])
        t0 = d[0][0]["start"]
        print(f"### the median replay, record by record (replay {idx + skip} of graph {gid})")
        print()
        print("| # | kernel | grid | block | start us | duration us | exclusive us | gap before us |")
        print("|---|---|---|---|---|---|---|---|")
        for i, (r, g, e) in enumerate(d):
            print(f"| {i} | {r['name']} | {r['grid']} | {r['block']} | {us(r['start'] - t0):.2f} | "
                  f"{us(r['end'] - r['start']):.2f} | {us(e):.2f} | {us(g):.2f} |")
        print()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("timeline")
    ap.add_argument("--skip", type=int, default=2, help="replays of each graph to leave out (warm-up)")
    ap.add_argument("--listing", action="store_true", help="list the median replay record by record")
    ap.add_argument("--min-replays", type=int, default=4, help="graphs replayed fewer times are left out")
    args = ap.parse_args()
    recs = read(args.timeline)
    if not recs:
        print(f"{args.timeline}: no records", file=sys.stderr)
        return 1
    by_replay = collections.defaultdict(list)
    eager = []
    for r in recs:
        if r["graph"] != 0:
            by_replay[(r["graph"], r["corr"])].append(r)
        else:
            eager.append(r)
    graphs = collections.defaultdict(list)
    for (gid, _), rp in by_replay.items():
        graphs[gid].append(rp)
    print(f"# {args.timeline}: {len(recs)} records, {len(graphs)} graphs, {len(eager)} records outside graphs")
    print()
    for gid in sorted(graphs, key=lambda g: min(r["start"] for rp in graphs[g] for r in rp)):
        if len(graphs[gid]) < args.min_replays:
            continue
        summarise_graph(gid, graphs[gid], args.skip, args.listing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
