#!/usr/bin/env python3
"""Print one markdown table per criterion group: Rust medians (from target/criterion), ratios to the
group's baseline, and the Python reference's medians and ratios (from tools/bench_reference.py).

    python3 tools/bench_compare.py [--criterion target/criterion] [--reference target/bench-reference.json]
"""

import argparse
import json
import os

BASELINES = {"forward": "base", "train step": "full fine-tuning"}


def criterion_results(root):
    results = {}
    for dirpath, _, files in os.walk(root):
        if "benchmark.json" in files and os.path.basename(dirpath) == "new":
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                bench = json.load(f)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
            with open(os.path.join(dirpath, "sample.json")) as f:
                sample = json.load(f)
            per_iter = [t / n for t, n in zip(sample["times"], sample["iters"])]
            results["{}/{}".format(bench["group_id"], bench["function_id"])] = {
                "median": est["median"]["point_estimate"] / 1e9,
                "min": min(per_iter) / 1e9,
                "max": max(per_iter) / 1e9,
            }
    return results


def fmt_time(s):
    if s is None:
        return "–"
    if s >= 1:
        return "{:.2f} s".format(s)
    if s >= 1e-3:
        return "{:.1f} ms".format(s * 1e3)
    return "{:.1f} µs".format(s * 1e6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--criterion", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion"))
    ap.add_argument("--reference", default="target/bench-reference.json")
    args = ap.parse_args()
    rust = criterion_results(args.criterion)
    python = {}
    if os.path.isfile(args.reference):
        with open(args.reference) as f:
            python = json.load(f)
    groups = sorted({k.split("/")[0] for k in rust})
    for group in groups:
        kind = "train step" if group.startswith("train step") else group.split(" ")[0]
        baseline = BASELINES.get(kind)
        print("\n### {}\n".format(group))
        header = "| variant | Rust median (min–max) | Rust ratio | Python median | Python ratio | Rust / Python |"
        print(header)
        print("|" + "---|" * 6)
        names = [k.split("/", 1)[1] for k in rust if k.startswith(group + "/")]
        for name in names:
            r = rust["{}/{}".format(group, name)]
            p = python.get("{}/{}".format(group, name))
            rb = rust.get("{}/{}".format(group, baseline)) if baseline else None
            pb = python.get("{}/{}".format(group, baseline)) if baseline else None
            r_ratio = "{:.3f}×".format(r["median"] / rb["median"]) if rb else "–"
            p_ratio = "{:.3f}×".format(p["median"] / pb["median"]) if (p and pb) else "–"
            vs = "{:.2f}×".format(r["median"] / p["median"]) if p else "–"
            print("| {} | {} ({}–{}) | {} | {} | {} | {} |".format(
                name, fmt_time(r["median"]), fmt_time(r["min"]), fmt_time(r["max"]), r_ratio,
                fmt_time(p["median"]) if p else "–", p_ratio, vs))


if __name__ == "__main__":
    main()
