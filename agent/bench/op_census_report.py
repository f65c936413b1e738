#!/usr/bin/env python3
"""Compares two op censuses (agent/bench/op_census/op_census.cpp output): ndhtl's and PyTorch's.

For each workload: the operator calls per step that each framework made itself ("top": the
model code, Burn or torch.nn, and the autograd engine; not the calls an operator makes inside
its own implementation), split into those that can launch work and views (reshape, transpose,
expand, detach, ...: metadata only, no kernel on any device); then the operators whose counts
differ. A step is one batch, or for NDHTL one K = 10 window (10 images, one backward).

--loops LOOP=STEP,... compares ndhtl's real training loop (pipeline, metrics, windows) with its
bare step, both from ndhtl's census: the calls the loop adds per step are ndhtl's own overhead,
which PyTorch's bare step does not pay either. --max-loop-overhead F fails when a loop makes
more than (1 + F) times its bare step's calls.

Usage: op_census_report.py NDHTL.json PYTORCH.json --workloads a,b [--loops l=a,...]
       [--json OUT] [--max-ratio R] [--max-loop-overhead F]
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


def print_differences(title, first, first_name, second, second_name):
    print(f"\n{title}")
    for op in sorted(set(first) | set(second)):
        a, b = first.get(op, 0.0), second.get(op, 0.0)
        if abs(a - b) > 0.05:
            mark = "*" if op in VIEWS else " "
            print(f"  {mark} {op:40s} {first_name} {a:7.1f}  {second_name} {b:7.1f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("ndhtl")
    parser.add_argument("pytorch")
    parser.add_argument("--workloads", required=True)
    parser.add_argument("--json")
    parser.add_argument("--max-ratio", type=float)
    parser.add_argument("--loops", default="")
    parser.add_argument("--max-loop-overhead", type=float)
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
    loops = {}
    if args.loops:
        print("\n| ndhtl's loop | calls (views) per step | its bare step | calls the loop adds per step |")
        print("|---|---|---|---|")
    for pair in filter(None, args.loops.split(",")):
        loop, step = pair.split("=")
        in_loop, bare = per_step(ours_census, loop), per_step(ours_census, step)
        (loop_work, loop_views), (step_work, _) = split(in_loop), split(bare)
        overhead = loop_work / step_work - 1.0
        loops[loop] = {"step": step, "loop": in_loop, "bare": bare, "loop_calls": loop_work,
                       "loop_views": loop_views, "step_calls": step_work, "overhead": overhead}
        print(f"| {loop} | {loop_work:.1f} ({loop_views:.1f}) | {step} {step_work:.1f} | "
              f"{loop_work - step_work:+.1f} ({100 * overhead:+.1f} %) |")
    for workload, entry in summary.items():
        print_differences(f"{workload}: operators whose calls per step differ (views marked *)",
                          entry["ndhtl"], "ndhtl", entry["pytorch"], "PyTorch")
    for loop, entry in loops.items():
        print_differences(f"{loop}: operators whose calls per step differ from {entry['step']}'s",
                          entry["loop"], "loop", entry["bare"], "step")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"workloads": summary, "loops": loops}, out, indent=1)
    if args.max_ratio is not None:
        over = {w: e["ratio"] for w, e in summary.items() if e["ratio"] > args.max_ratio}
        if over:
            sys.exit(f"more operator calls per step than {args.max_ratio}x PyTorch's: {over}")
    if args.max_loop_overhead is not None:
        over = {w: e["overhead"] for w, e in loops.items() if e["overhead"] > args.max_loop_overhead}
        if over:
            sys.exit(f"the training loop adds more than {args.max_loop_overhead:.0%} to its step's "
                     f"operator calls: {over}")


if __name__ == "__main__":
    main()
