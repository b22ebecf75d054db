#!/usr/bin/env python3
"""The Python side of benches/generate.rs: transformers' greedy `generate` (eager attention, KV cache) of 64 new
tokens after a 32-token prompt, batch 1 and 8, on a random Llama of SmolLM-135M's shape, paired like the Rust bench.

    python tools/bench_generate.py [--rounds 10] [--threads 2]

Variants: the base model; AdapterHub 1.3.0's seq_bn, LoRA (r 8 on q and v, B not zero) and that LoRA merged; PEFT
0.21.2's LoRA of the same shape. AdapterHub's cached `generate` applies its adapters to the prompt only (see
docs/guide.md, "Where we differ"), so its per-token overheads measure a model that skips the adapters after the
first step; PEFT's LoRA applies at every step and is the like-for-like LoRA reference.
"""

import argparse
import copy
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from bench_reference import median_with_interval  # noqa: E402

PROMPT, NEW_TOKENS = 32, 64


def base_model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def adapterhub(base, config, merged=False):
    import adapters

    model = copy.deepcopy(base)
    adapters.init(model)
    model.add_adapter("a", config=config)
    model.set_active_adapters("a")
    if merged:
        model.merge_adapter("a")
    return model.eval()


def peft_lora(base):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False))
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = base_model()
    variants = [
        ("base", base),
        ("seq_bn (AdapterHub)", adapterhub(base, "seq_bn")),
        ("lora (AdapterHub)", adapterhub(base, "lora[init_weights=\"bert\"]")),
        ("lora merged (AdapterHub)", adapterhub(base, "lora[init_weights=\"bert\"]", merged=True)),
        ("lora (PEFT)", peft_lora(base)),
    ]
    for batch in (1, 8):
        torch.manual_seed(1)
        ids = torch.randint(3, 49000, (batch, PROMPT))
        mask = torch.ones_like(ids)

        def run(model):
            start = time.perf_counter()
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                                     min_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True, pad_token_id=0)
            assert out.shape[1] == PROMPT + NEW_TOKENS
            return time.perf_counter() - start

        for _, model in variants:
            run(model)  # warm-up
        times = [[] for _ in variants]
        for r in range(args.rounds):
            for k in range(len(variants)):
                v = (r + k) % len(variants)
                times[v].append(run(variants[v][1]))
        print("\ngenerate batch {} ({} threads, {} rounds)".format(batch, args.threads, args.rounds))
        print("| variant | median time | ratio to base (95 % CI) |")
        print("|---|---|---|")
        for v, (label, _) in enumerate(variants):
            t = median_with_interval(times[v])[0]
            if v == 0:
                print("| {} | {:.1f} ms | – |".format(label, t * 1e3))
                print("base: {:.1f} tokens/s ({:.1f} ms per step)".format(batch * NEW_TOKENS / t, t * 1e3 / NEW_TOKENS))
                continue
            ratio, lo, hi = median_with_interval([a / b for a, b in zip(times[v], times[0])])
            print("| {} | {:.1f} ms | {:.3f}× ({:.3f}–{:.3f}) |".format(label, t * 1e3, ratio, lo, hi))


if __name__ == "__main__":
    main()
