#!/usr/bin/env python3
"""tools/kernel_timeline_summary.py on random timelines, fresh each run, against a brute-force oracle.

The oracle never uses the tool's front-tracking walk: it marks every nanosecond each record
covers. A replay's idle gaps are the nanoseconds between its first start and last end that no
record covers; a record's exclusive time is the nanoseconds it covers that no record before it
(in start order, ties in name order as the tool takes them) does; the gaps up to a record are the
uncovered nanoseconds before its start.
The timelines hold what a real trace holds: kernels back to back, idle gaps, early starts
(programmatic dependent launch), a record inside another, zero-length records, copies, records
outside any graph, comments, a malformed line, and a graph replayed too few times to report.
"""
import collections
import os
import random
import statistics
import subprocess
import sys
import tempfile
import unittest

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools")
SCRIPT = os.path.join(TOOLS, "kernel_timeline_summary.py")
sys.path.insert(0, TOOLS)
import kernel_timeline_summary as summary  # noqa: E402

SEED = int(os.environ.get("DSV4_TEST_SEED") or random.SystemRandom().randrange(2**63))
print(f"[seed] DSV4_TEST_SEED={SEED} (the timelines; set it to replay)", flush=True)

# (kind, name as CUPTI reports it, the short name the tables print, its family)
RECORD_KINDS = [
    ("kernel", "void dsv4::cuda::(anonymous namespace)::grouped_fp4_kernel<4, true>(dsv4::cuda::Params, int)",
     "grouped_fp4_kernel<4, true>", "routed experts"),
    ("kernel", "void dsv4::cuda::<unnamed>::skinny_gemm_kernel<8>(const unsigned char*, float*)",
     "skinny_gemm_kernel<8>", "dense linears"),
    ("kernel", "void dsv4::cuda::(anonymous namespace)::mhc_mix_kernel<24>(const __nv_bfloat16*, const float*)",
     "mhc_mix_kernel<24>", "mHC"),
    ("kernel", "void dsv4::cuda::(anonymous namespace)::sparse_attention_kernel(dsv4::cuda::AttnParams)",
     "sparse_attention_kernel", "attention"),
    ("kernel", "void dsv4::cuda::rmsnorm_kernel<true>(float, int)", "rmsnorm_kernel<true>", "norms and quantisation"),
    ("kernel", "void dsv4::cuda::(anonymous namespace)::mhc_pre_finish_kernel(dsv4::cuda::MhcPreParams, int)",
     "mhc_pre_finish_kernel", "mHC"),
    ("kernel", "void dsv4::cuda::indexer_score_kernel<64>(const float*)", "indexer_score_kernel<64>", "indexer"),
    ("kernel", "void dsv4::cuda::compressor_pool_kernel(int)", "compressor_pool_kernel", "compressor"),
    ("kernel", "void dsv4::cuda::moe_dispatch_kernel(int)", "moe_dispatch_kernel", "routing and combine"),
    ("kernel", "nvjet_tst_128x64_64x8_1x2_h_bz_coopA_NTN", "nvjet_tst_128x64_64x8_1x2_h_bz_coopA_NTN", "dense linears"),
    ("kernel", "void some_library_kernel(int)", "some_library_kernel", "other"),
    ("memcpy", "copy kind 1", "[memcpy] copy kind 1", "copies and memsets"),
    ("memset", "value 0", "[memset] value 0", "copies and memsets"),
]


def covered(records):
    """The set of nanoseconds [start, end) any of the records covers."""
    cells = set()
    for r in records:
        cells.update(range(r["start"], r["end"]))
    return cells


def oracle(replay):
    """(span, Σ gaps, Σ exclusive, (name, exclusive) per record in start order, cumulative gap per record)."""
    ordered = sorted(replay, key=lambda r: (r["start"], r["end"], r["name"]))  # the tool's tie rule
    first, last = ordered[0]["start"], max(r["end"] for r in ordered)
    span = last - first
    all_cells = covered(ordered)
    gaps = span - len(all_cells)
    exclusive, gaps_before = [], []
    seen = set()
    for r in ordered:
        own = set(range(r["start"], r["end"]))
        exclusive.append((r["name"], len(own - seen)))
        seen |= own
        gaps_before.append(sum(1 for t in range(first, r["start"]) if t not in all_cells))
    return span, gaps, sum(e for _, e in exclusive), exclusive, gaps_before


def random_timings(rng, t0, n):
    """n (start, end) pairs from t0: back to back, after a gap, started early, inside the previous, or
    exactly the previous one's (a tie the tool must break by name, not by the file's order)."""
    out = []
    front = t0
    for i in range(n):
        way = rng.random()
        if i == 0 or way < 0.35:
            start = front
        elif way < 0.6:
            start = front + rng.randint(1, 60)  # idle gap
        elif way < 0.8:
            start = max(out[-1][0], front - rng.randint(1, 40))  # early start (PDL)
        elif way < 0.9:
            start = out[-1][0] + rng.randint(0, max(0, out[-1][1] - out[-1][0]))  # inside the previous
        else:
            out.append(out[-1])  # the same start and end as the previous record
            continue
        end = start + (0 if rng.random() < 0.05 else rng.randint(1, 120))
        out.append((start, end))
        front = max(front, end)
    return out


def make_replays(rng, graph, sequence, n_replays, t0):
    """A graph's replays: the same record sequence each time, fresh timings, one correlation id each."""
    replays = []
    t = t0
    for k in range(n_replays):
        timings = random_timings(rng, t, len(sequence))
        corr = graph * 1000 + k
        replays.append([{"kind": kind, "start": s, "end": e, "graph": graph, "corr": corr, "raw": raw,
                         "name": short, "family": fam}
                        for (kind, raw, short, fam), (s, e) in zip(sequence, timings)])
        t = max(e for _, e in timings) + rng.randint(5, 80)  # the host's time between replays
    return replays, t


def tsv_line(r):
    grid = "132,1,1" if r["kind"] == "kernel" else "-"
    return "\t".join(str(x) for x in (r["kind"], r["start"], r["end"], 7, r["corr"], r["graph"], 3, grid,
                                      "256,1,1", "1,1,1", 64, 0, r["raw"])) + "\n"


def run_tool(path, *args):
    return subprocess.run([sys.executable, SCRIPT, path, *args], capture_output=True, text=True)


def fmt(ns):
    return f"{ns / 1e3:.1f}"


class Decompose(unittest.TestCase):
    def test_gaps_and_exclusive_times_match_the_covered_nanoseconds(self):
        rng = random.Random(SEED)
        for trial in range(300):
            sequence = [rng.choice(RECORD_KINDS) for _ in range(rng.randint(1, 25))]
            (replay,), _ = make_replays(rng, 1, sequence, 1, rng.randint(0, 10**6))
            rng.shuffle(replay)  # the tool must not rely on the file's order
            span, gaps, excl, per_record, gaps_before = oracle(replay)
            d = summary.decompose(replay)
            with self.subTest(trial=trial):
                self.assertEqual(max(r["end"] for r, _, _ in d) - d[0][0]["start"], span)
                self.assertEqual(sum(g for _, g, _ in d), gaps)
                self.assertEqual(sum(e for _, _, e in d), excl)
                self.assertEqual(gaps + excl, span)
                self.assertEqual([(r["name"], e) for r, _, e in d], per_record)
                cumulative = 0
                for i, (_, g, _) in enumerate(d):
                    cumulative += g
                    self.assertEqual(cumulative, gaps_before[i], f"record {i}")


class Summary(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(SEED + 1)
        self.dir = tempfile.TemporaryDirectory(prefix="dsv4_timeline_")
        self.path = os.path.join(self.dir.name, "timeline.tsv")

    def tearDown(self):
        self.dir.cleanup()

    def test_tables_match_the_oracle(self):
        rng = self.rng
        skip = 2
        graphs = {}  # graph id -> replays
        t = 1_000_000
        for gid, n_replays in ((11, rng.randint(5, 9)), (12, rng.randint(5, 9)), (13, 3)):
            sequence = [rng.choice(RECORD_KINDS) for _ in range(rng.randint(4, 20))]
            graphs[gid], t = make_replays(rng, gid, sequence, n_replays, t)
        eager = [{"kind": "kernel", "start": t + 10 * i, "end": t + 10 * i + 5, "graph": 0, "corr": 5,
                  "raw": "void eager_kernel()"} for i in range(3)]
        records = [r for rps in graphs.values() for rp in rps for r in rp] + eager
        rng.shuffle(records)
        with open(self.path, "w") as f:
            f.write("# kind\tstart_ns\tend_ns\t...\n")
            f.write("kernel\t1\t2\tonly three columns\n")  # malformed: skipped
            for r in records:
                f.write(tsv_line(r))
        res = run_tool(self.path, "--skip", str(skip), "--listing")
        self.assertEqual(res.returncode, 0, res.stderr)
        out = res.stdout
        graph_records = sum(len(rp) for rps in graphs.values() for rp in rps)
        self.assertIn(f": {graph_records + len(eager)} records, 3 graphs, {len(eager)} records outside graphs", out)
        self.assertNotIn("## graph 13:", out, "3 replays are fewer than --min-replays 4")

        sections = {int(s.split(":", 1)[0]): s for s in out.split("## graph ")[1:]}
        for gid in (11, 12):
            replays = sorted(graphs[gid], key=lambda rp: min(r["start"] for r in rp))
            steady = replays[skip:]
            n = len(steady)
            text = sections[gid]
            stats = [oracle(rp) for rp in steady]
            spans = [s[0] for s in stats]
            with self.subTest(graph=gid):
                self.assertIn(f"{len(replays)} replays ({n} after skipping {skip}), {len(steady[0])} records each", text)
                self.assertIn(f"span (first start to last end), median: {fmt(statistics.median(spans))} us; "
                              f"min {fmt(min(spans))}, max {fmt(max(spans))}", text)
                starts = [min(r["start"] for r in rp) for rp in steady]
                period = statistics.median(b - a for a, b in zip(starts, starts[1:]))
                self.assertIn(f"period (replay start to the next one's), median: {fmt(period)} us: "
                              f"{fmt(period - statistics.median(spans))} us outside the replay", text)
                self.assertIn(f"the span = exclusive {fmt(statistics.median(s[2] for s in stats))} us + idle gaps "
                              f"{fmt(statistics.median(s[1] for s in stats))} us", text)
                # Family rows: exclusive time per replay, from the oracle's per-record split.
                per_family = collections.Counter()
                per_kernel = collections.Counter()
                for rp, s in zip(steady, stats):
                    ordered = sorted(rp, key=lambda r: (r["start"], r["end"], r["name"]))
                    for r, (name, e) in zip(ordered, s[3]):
                        self.assertEqual(r["name"], name)
                        per_family[r["family"]] += e
                        per_kernel[name] += e
                per_family["idle gaps"] = sum(s[1] for s in stats)
                rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
                for fam, excl in per_family.items():
                    self.assertIn(fam, rows, f"no row for {fam}")
                    self.assertEqual(rows[fam].split(" | ")[2], fmt(excl / n), rows[fam])
                for name, excl in per_kernel.items():
                    self.assertIn(name, rows, f"no row for {name}")
                    self.assertEqual(rows[name].split(" | ")[2], fmt(excl / n), rows[name])
                # The listing has the median replay's records, one row each.
                listing = text.split("### the median replay")[1]
                self.assertEqual(sum(1 for line in listing.splitlines() if line.startswith("| ") and
                                     line.split(" | ")[0].lstrip("| ").isdigit()), len(steady[0]))

    def test_a_file_without_records_is_an_error(self):
        with open(self.path, "w") as f:
            f.write("# kind\tstart_ns\tend_ns\n")
        res = run_tool(self.path)
        self.assertEqual(res.returncode, 1)
        self.assertIn("no records", res.stderr)


if __name__ == "__main__":
    unittest.main()
