#!/usr/bin/env python3
"""Print one markdown table per criterion group: Rust medians (from target/criterion), ratios to the
group's baseline, and the Python reference's medians and ratios (from tools/bench_reference.py).
With --paired (the JSON of benches/overhead.rs), also one table per group of paired ratios, Rust's
beside the reference's (bench_reference.py --paired).

    python3 tools/bench_compare.py [--criterion target/criterion] [--reference target/bench-reference.json]
                                   [--paired target/overhead.json]
"""

import argparse
import json
import os

BASELINES = {"forward": "base", "train step": "full fine-tuning"}
# the order of the benches' variant lists
ORDER = ["base", "seq_bn", "double_seq_bn", "par_bn", "lora", "lora merged", "ia3", "full fine-tuning"]


def ordered(names):
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


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


def fmt_ratio(entry):
    if not entry or "ratio" not in entry:
        return "–"
    return "{:.3f}× ({:.3f}–{:.3f})".format(entry["ratio"], entry["lo"], entry["hi"])


def print_paired(rust, python):
    groups = sorted({k.split("/")[0] for k in rust})
    for group in groups:
        print("\n### paired: {}\n".format(group))
        print("| variant | Rust median | Rust ratio (95 % CI) | Python median | Python ratio (95 % CI) | Rust / Python |")
        print("|" + "---|" * 6)
        for name in ordered(k.split("/", 1)[1] for k in rust if k.startswith(group + "/")):
            key = "{}/{}".format(group, name)
            r, p = rust[key], python.get(key)
            vs = "{:.2f}×".format(r["median"] / p["median"]) if p else "–"
            print("| {} | {} | {} | {} | {} | {} |".format(
                name, fmt_time(r["median"]), fmt_ratio(r), fmt_time(p["median"]) if p else "–", fmt_ratio(p), vs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--criterion", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion"))
    ap.add_argument("--reference", default="target/bench-reference.json")
    ap.add_argument("--paired", help="JSON written by benches/overhead.rs (BURN_ADAPTERS_BENCH_OUT)")
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
        names = ordered(k.split("/", 1)[1] for k in rust if k.startswith(group + "/"))
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
    if args.paired:
        with open(args.paired) as f:
            print_paired(json.load(f), python.get("paired", {}))


if __name__ == "__main__":
    main()
