#!/usr/bin/env python3
"""Where one kernel's warps wait, from Nsight Compute's SASS source page.

Input: `ncu -i REPORT --page source --csv --print-source sass` of a report taken with the
SourceCounters section (`--set full` has it). Prints
  - the executed instructions per loop iteration and warp, by opcode, with each opcode's share of
    the stall samples: the loop's trip count is taken as the execution count that accounts for
    the most executed instructions (count × instructions executed that many times: the main loop
    body's straight-line code), and printed;
  - the instructions with the most stall samples, with the stall reasons that make up at least a
    tenth of each, so a wait can be read against the SASS around it.
Usage: tools/ncu_stall_summary.py SOURCE.csv [--top 30]
"""
import argparse
import collections
import csv
import re
import sys

REASONS = ["stall_wait", "stall_long_sb", "stall_short_sb", "stall_barrier", "stall_math", "stall_mio",
           "stall_not_selected", "stall_selected", "stall_branch_resolving", "stall_dispatch", "stall_no_inst",
           "stall_lg", "stall_membar", "stall_drain", "stall_sleep", "stall_tex", "stall_misc", "stall_imc"]


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def read(path):
    """The header row and the instruction rows of the CSV (its first row names the kernel)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    for i, row in enumerate(rows):
        if "Address" in row and "Source" in row:
            return rows[i - 1] if i else [], row, [r for r in rows[i + 1:] if len(r) == len(row)]
    sys.exit(f"{path}: no 'Address' / 'Source' header: not an ncu source page")


def opcode(sass):
    """The opcode without its predicate and modifiers: '@!P0 IMAD.MOV.U32 R1, ...' -> 'IMAD'."""
    words = sass.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=30, help="instructions with the most stall samples to list")
    args = ap.parse_args()
    title, header, rows = read(args.csv)
    col = {name: i for i, name in enumerate(header)}
    for needed in ("Source", "Instructions Executed", "Warp Stall Sampling (All Samples)"):
        if needed not in col:
            sys.exit(f"{args.csv}: no column '{needed}' (take the report with --set full or --section SourceCounters)")
    executed = [number(r[col["Instructions Executed"]]) for r in rows]
    samples = [number(r[col["Warp Stall Sampling (All Samples)"]]) for r in rows]
    total_samples = sum(samples) or 1.0
    counts = collections.Counter(e for e in executed if e > 0)
    if not counts:
        sys.exit(f"{args.csv}: no executed instructions")
    trip = max(counts, key=lambda c: c * counts[c])

    if title:
        print(" ".join(t for t in title if t).strip()[:200])
    print(f"{len(rows)} SASS instructions, {sum(executed):.4g} warp instructions executed, "
          f"{total_samples:.0f} stall samples; loop body executed {trip:.0f} times "
          f"({counts[trip]} instructions ran that often)")
    print("\nper loop iteration and warp, by opcode (share of all stall samples):")
    per_op = collections.Counter()
    stalls_op = collections.Counter()
    for r, e, s in zip(rows, executed, samples):
        op = opcode(r[col["Source"]])
        per_op[op] += e / trip
        stalls_op[op] += s
    for op, n in per_op.most_common():
        if n < 0.5:
            break
        print(f"  {op:12s} {n:7.1f}   {100 * stalls_op[op] / total_samples:5.1f} %")
    print(f"  {'all':12s} {sum(per_op.values()):7.1f}")

    print("\nstall reasons over the kernel (share of samples):")
    present = [name for name in REASONS if name in col]
    by_reason = {name: sum(number(r[col[name]]) for r in rows) for name in present}
    for name, n in sorted(by_reason.items(), key=lambda kv: -kv[1]):
        if n / total_samples >= 0.005:
            print(f"  {name[6:]:18s} {100 * n / total_samples:5.1f} %")

    print(f"\nthe {args.top} instructions with the most samples (address, share, executions per iteration, "
          "SASS | main reasons):")
    order = sorted(range(len(rows)), key=lambda i: -samples[i])[:args.top]
    for i in order:
        reasons = " ".join(f"{name[6:]}={number(rows[i][col[name]]):.0f}" for name in present
                           if number(rows[i][col[name]]) >= 0.1 * samples[i] > 0)
        sass = re.sub(r"\s+", " ", rows[i][col["Source"]]).strip()
        print(f"  {rows[i][col['Address']][-6:]:>6s} {100 * samples[i] / total_samples:5.1f} % "
              f"{executed[i] / trip:5.2f}  {sass[:80]} | {reasons}")


if __name__ == "__main__":
    main()
