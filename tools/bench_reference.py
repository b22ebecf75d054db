#!/usr/bin/env python3
"""Time the Python reference (AdapterHub `adapters` 1.3.0 on torch) on the shapes of our criterion
benches and write the medians as JSON, keyed like criterion's `<group>/<bench>`.

    python tools/bench_reference.py --out target/bench-reference.json [--threads 2] [--shapes minilm,bert-base]

Forward: BertModel in eval mode under no_grad, random weights, batch 8x128 and 1x128, variants base, seq_bn,
double_seq_bn, par_bn, lora (init bert), lora merged, ia3. Train step (minilm 8x128): mean-pooled 2-class
linear head, cross-entropy, backward, AdamW step, for train_adapter(seq_bn), train_adapter(lora) and full
fine-tuning. Kernels: the single operations of benches/kernels.rs. Each measurement: warm-up, then
`--samples` timed runs; the median and the min/max are stored (seconds). `--parts` picks some of the three.

With `--paired ROUNDS` it also measures the overheads as paired ratios, as benches/overhead.rs does: every
round times the reference (the base model, or full fine-tuning) and each variant back to back in a rotating
order; the ratio is the median over rounds of variant / reference within a round, with a distribution-free
95 % interval. These are stored under "paired", keyed like the Rust bench's JSON.
"""

import argparse
import json
import math
import statistics
import time

import torch
from transformers import BertConfig, BertModel

import adapters
from adapters import LoRAConfig

SHAPES = {
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
VARIANTS = [
    ("base", None, False),
    ("seq_bn", "seq_bn", False),
    ("double_seq_bn", "double_seq_bn", False),
    ("par_bn", "par_bn", False),
    ("lora", LoRAConfig(init_weights="bert"), False),
    ("lora merged", LoRAConfig(init_weights="bert"), True),
    ("ia3", "ia3", False),
]


def timed(fn, samples, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "samples": samples}


def median_with_interval(values):
    """The median and the order statistics at ranks n/2 -+ 0.98 sqrt(n) (as benches/overhead.rs)."""
    values = sorted(values)
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    half = math.ceil(0.98 * math.sqrt(n))
    return median, values[max(n // 2 - half, 0)], values[min(n // 2 + half, n - 1)]


def paired(title, rounds, reference, runs, out):
    """Times runs [(label, fn)] in rotating rounds; stores medians and ratios to runs[reference]."""
    for _, fn in runs:
        fn()
    times = [[] for _ in runs]
    for r in range(rounds):
        for k in range(len(runs)):
            v = (r + k) % len(runs)
            start = time.perf_counter()
            runs[v][1]()
            times[v].append(time.perf_counter() - start)
    for v, (label, _) in enumerate(runs):
        entry = {"median": median_with_interval(times[v])[0]}
        if v != reference:
            ratio, lo, hi = median_with_interval([t / b for t, b in zip(times[v], times[reference])])
            entry.update(ratio=ratio, lo=lo, hi=hi)
            print("paired", title, label, "{:.3f} ({:.3f}-{:.3f})".format(ratio, lo, hi))
        out["{}/{}".format(title, label)] = entry


def model_for(shape):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, **SHAPES[shape])
    model = BertModel(config)
    adapters.init(model)
    return model


def variant_model(shape, config, merged):
    model = model_for(shape)
    if config is not None:
        model.add_adapter("a", config=config)
        model.set_active_adapters("a")
        if merged:
            model.merge_adapter("a")
    model.eval()
    return model


def forward_run(model, ids, mask):
    def run():
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask).last_hidden_state.sum().item()

    return run


def forward_benches(shape, samples, out):
    for batch in (8, 1):
        ids = torch.randint(1, 30000, (batch, 128))
        mask = torch.ones_like(ids)
        for label, config, merged in VARIANTS:
            run = forward_run(variant_model(shape, config, merged), ids, mask)
            out["forward {} {}x128/{}".format(shape, batch, label)] = timed(run, samples)
            print("forward", shape, batch, label, out["forward {} {}x128/{}".format(shape, batch, label)]["median"])


def forward_paired(shape, rounds, out):
    models = [(label, variant_model(shape, config, merged)) for label, config, merged in VARIANTS]
    for batch in (8, 1):
        ids = torch.randint(1, 30000, (batch, 128))
        mask = torch.ones_like(ids)
        runs = [(label, forward_run(model, ids, mask)) for label, model in models]
        paired("forward {} {}x128".format(shape, batch), rounds, 0, runs, out)


TRAIN_VARIANTS = ("seq_bn", "lora", "full fine-tuning")


def train_step_for(variant):
    ids = torch.randint(1, 30000, (8, 128))
    mask = torch.ones_like(ids)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    model = model_for("minilm")
    head = torch.nn.Linear(384, 2)
    if variant == "full fine-tuning":
        model.train()
    else:
        model.add_adapter("task", config=variant)
        model.train_adapter("task")
    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4)

    def step():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        loss = torch.nn.functional.cross_entropy(head(pooled), labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
        return loss.item()

    return step


def train_benches(samples, out):
    for variant in TRAIN_VARIANTS:
        out["train step minilm 8x128/{}".format(variant)] = timed(train_step_for(variant), samples)
        print("train", variant, out["train step minilm 8x128/{}".format(variant)]["median"])


def train_paired(rounds, out):
    runs = [(variant, train_step_for(variant)) for variant in TRAIN_VARIANTS]
    paired("train step minilm 8x128", rounds, len(runs) - 1, runs, out)


def kernel_benches(samples, out):
    """The operations of benches/kernels.rs, on the same shapes."""
    torch.manual_seed(0)
    rows, hidden, ffn, bottleneck = 8 * 128, 384, 1536, 24
    x, y = torch.randn(rows, hidden), torch.randn(rows, hidden)
    inner, z = torch.randn(rows, ffn), torch.randn(rows, bottleneck)
    scores = torch.randn(8, 12, 128, 128)
    # torch.nn.Linear stores [out, in]; F.linear is what its forward calls
    w_square, w_up, w_down = torch.randn(hidden, hidden), torch.randn(ffn, hidden), torch.randn(hidden, ffn)
    w_bn_down, w_bn_up = torch.randn(bottleneck, hidden), torch.randn(hidden, bottleneck)
    norm = torch.nn.LayerNorm(hidden)
    F = torch.nn.functional
    ops = {
        "gemm 1024x384x384": lambda: F.linear(x, w_square),
        "gemm 1024x384x1536": lambda: F.linear(x, w_up),
        "gemm 1024x1536x384": lambda: F.linear(inner, w_down),
        "gemm 1024x384x24 (bottleneck down)": lambda: F.linear(x, w_bn_down),
        "gemm 1024x24x384 (bottleneck up)": lambda: F.linear(z, w_bn_up),
        "gelu 1024x1536": lambda: F.gelu(inner),
        "softmax 8x12x128x128": lambda: torch.softmax(scores, dim=-1),
        "layer_norm 1024x384": lambda: norm(x),
        "add 1024x384": lambda: x + y,
    }
    with torch.no_grad():
        for label, op in ops.items():
            out["kernels minilm 8x128/" + label] = timed(op, samples * 5, warmup=5)
            print("kernel", label, out["kernels minilm 8x128/" + label]["median"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--shapes", default="minilm,bert-base")
    ap.add_argument("--paired", type=int, default=0, metavar="ROUNDS", help="also measure paired ratios")
    ap.add_argument("--parts", default="forward,train,kernels",
                    help="which benches to run, comma-separated (like BURN_ADAPTERS_BENCH_PARTS)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",")}
    unknown = parts - {"forward", "train", "kernels"}
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}: use forward, train, kernels")
    shapes = [s.strip() for s in args.shapes.split(",")]
    torch.set_num_threads(args.threads)
    out = {"_meta": {"torch": torch.__version__, "adapters": adapters.__version__, "threads": args.threads}}
    if "forward" in parts:
        for shape in shapes:
            forward_benches(shape, args.samples, out)
    if "train" in parts:
        train_benches(args.samples, out)
    if "kernels" in parts:
        kernel_benches(args.samples, out)
    if args.paired:
        out["paired"] = {}
        if "forward" in parts:
            for shape in shapes:
                forward_paired(shape, args.paired, out["paired"])
        if "train" in parts:
            train_paired(args.paired, out["paired"])
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
