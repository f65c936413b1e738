#!/usr/bin/env python3
"""Compares two op censuses (agent/bench/op_census/op_census.cpp output): ndhtl's and PyTorch's.

For each workload: the operator calls per step that each framework made itself ("top": the
model code, Burn or torch.nn, and the autograd engine; not the calls an operator makes inside
its own implementation), split into those that can launch work and views (reshape, transpose,
expand, detach, ...: metadata only, no kernel on any device); then the operators whose counts
differ. A step is one batch, or for NDHTL one K = 10 window (10 images, one backward).

Usage: op_census_report.py NDHTL.json PYTORCH.json --workloads a,b [--json OUT] [--max-ratio R]
"""
import argparse
import json
import sys

# Operators that only make a new view of a tensor (or none at all): no kernel on any device.
VIEWS = {
    "aten::alias", "aten::as_strided", "aten::detach", "aten::expand", "aten::flatten",
    "aten::narrow", "aten::permute", "aten::reshape", "aten::select", "aten::slice",
    "aten::squeeze", "aten::t", "aten::transpose", "aten::unsqueeze", "aten::view",
    "aten::_reshape_alias", "aten::_unsafe_view", "aten::unbind", "aten::split",
}


def per_step(census, workload):
    entry = census["workloads"].get(workload)
    if entry is None or entry["steps"] == 0:
        sys.exit(f"no census of {workload}: did the benchmark mark its steps?")
    steps = entry["steps"]
    return {op: counts["top"] / steps for op, counts in entry["ops"].items() if counts["top"]}


def split(counts):
    views = sum(n for op, n in counts.items() if op in VIEWS)
    return sum(counts.values()) - views, views


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("ndhtl")
    parser.add_argument("pytorch")
    parser.add_argument("--workloads", required=True)
    parser.add_argument("--json")
    parser.add_argument("--max-ratio", type=float)
    args = parser.parse_args()
    ours_census = json.load(open(args.ndhtl))
    theirs_census = json.load(open(args.pytorch))
    summary = {}
    print("| workload | ndhtl: calls (views) per step | PyTorch: calls (views) per step | ratio |")
    print("|---|---|---|---|")
    for workload in args.workloads.split(","):
        ours, theirs = per_step(ours_census, workload), per_step(theirs_census, workload)
        (ours_work, ours_views), (theirs_work, theirs_views) = split(ours), split(theirs)
        ratio = ours_work / theirs_work
        summary[workload] = {"ndhtl": ours, "pytorch": theirs, "ndhtl_calls": ours_work,
                             "ndhtl_views": ours_views, "pytorch_calls": theirs_work,
                             "pytorch_views": theirs_views, "ratio": ratio}
        print(f"| {workload} | {ours_work:.1f} ({ours_views:.1f}) | "
              f"{theirs_work:.1f} ({theirs_views:.1f}) | {ratio:.2f} |")
    for workload, entry in summary.items():
        print(f"\n{workload}: operators whose calls per step differ (views marked *)")
        ours, theirs = entry["ndhtl"], entry["pytorch"]
        for op in sorted(set(ours) | set(theirs)):
            a, b = ours.get(op, 0.0), theirs.get(op, 0.0)
            if abs(a - b) > 0.05:
                mark = "*" if op in VIEWS else " "
                print(f"  {mark} {op:40s} ndhtl {a:7.1f}  PyTorch {b:7.1f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=1)
    if args.max_ratio is not None:
        over = {w: e["ratio"] for w, e in summary.items() if e["ratio"] > args.max_ratio}
        if over:
            sys.exit(f"more operator calls per step than {args.max_ratio}x PyTorch's: {over}")


if __name__ == "__main__":
    main()
