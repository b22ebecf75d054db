#!/usr/bin/env python3
"""Reference output of all-MiniLM-L6-v2 + a perturbed Pfeiffer (seq_bn) adapter, AdapterHub `adapters` 1.3.0.

    python tools/minilm_pfeiffer.py [OUT]      # OUT defaults to CACHE_DIR/minilm_pfeiffer

CACHE_DIR is ${BURN_ADAPTERS_CACHE:-$HOME/.cache/burn-adapters}; run tools/fetch_assets.sh first so that
CACHE_DIR/all-MiniLM-L6-v2/{config.json,model.safetensors,tokenizer.json} exist.  Nothing is downloaded.

Writes:
    OUT/adapter/adapter_config.json, OUT/adapter/adapter.safetensors   (save_adapter, safetensors)
    OUT/inputs.safetensors     input_ids, attention_mask   int64 [3, L] (padding to longest, max_length 32)
    OUT/expected.safetensors   last_hidden_state f32 [3, L, 384] with the adapter active (eval, no_grad)
"""

import argparse
import logging
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import BertModel, BertTokenizerFast  # noqa: E402

import adapters  # noqa: E402

logging.getLogger("adapters").setLevel(logging.ERROR)

SEED = 4321
NOISE = 0.05
ADAPTER_NAME = "pfeiffer"
ADAPTER_CONFIG = "seq_bn[reduction_factor=16]"
MAX_LENGTH = 32
SENTENCES = [
    "The movie was a delightful surprise from start to finish.",
    "Dull, predictable and far too long.",
    "A senior at an elite college must confront the sudden reappearance of her old boyfriend.",
]


def default_cache():
    return os.environ.get("BURN_ADAPTERS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "burn-adapters")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=None)
    ap.add_argument("--model-dir", default=None, help="default CACHE_DIR/all-MiniLM-L6-v2")
    args = ap.parse_args()
    cache = default_cache()
    model_dir = args.model_dir or os.path.join(cache, "all-MiniLM-L6-v2")
    out = os.path.abspath(args.out or os.path.join(cache, "minilm_pfeiffer"))
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        if not os.path.isfile(os.path.join(model_dir, f)):
            print("error: {} missing; run tools/fetch_assets.sh first".format(os.path.join(model_dir, f)))
            return 1
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)

    tok = BertTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    enc = tok(SENTENCES, padding="longest", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    inputs = {
        "input_ids": enc["input_ids"].to(torch.int64).contiguous(),
        "attention_mask": enc["attention_mask"].to(torch.int64).contiguous(),
    }

    model = BertModel.from_pretrained(model_dir, attn_implementation="eager")
    model.config.name_or_path = "all-MiniLM-L6-v2"  # recorded as model_name in adapter_config.json
    model.eval()
    adapters.init(model)
    torch.manual_seed(SEED)
    model.add_adapter(ADAPTER_NAME, config=ADAPTER_CONFIG)
    tag = ".adapters.{}.".format(ADAPTER_NAME)
    params = [p for n, p in model.named_parameters() if tag in n]
    with torch.no_grad():
        for p in params:
            p.add_(NOISE * torch.randn_like(p))
    model.set_active_adapters(ADAPTER_NAME)
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state.contiguous()
        model.set_active_adapters(None)
        base_hidden = model(**inputs).last_hidden_state
        model.set_active_adapters(ADAPTER_NAME)

    adapter_dir = os.path.join(out, "adapter")
    model.save_adapter(adapter_dir, ADAPTER_NAME, use_safetensors=True)
    save_file(inputs, os.path.join(out, "inputs.safetensors"))
    save_file({"last_hidden_state": hidden}, os.path.join(out, "expected.safetensors"))

    # round trip through the saved files
    fresh = BertModel.from_pretrained(model_dir, attn_implementation="eager")
    fresh.eval()
    adapters.init(fresh)
    info = {}
    name = fresh.load_adapter(adapter_dir, use_safetensors=True, loading_info=info)
    assert not info.get("missing_keys") and not info.get("unexpected_keys"), info
    fresh.set_active_adapters(name)
    with torch.no_grad():
        again = fresh(**load_file(os.path.join(out, "inputs.safetensors"))).last_hidden_state
    d = (again - hidden).abs().max().item()
    assert d < 1e-6, d

    print("out:", out)
    print("adapter params:", sum(p.numel() for p in params))
    print("input_ids shape:", tuple(inputs["input_ids"].shape))
    for i, s in enumerate(SENTENCES):
        print("  [{}] {!r}: {} tokens".format(i, s, int(inputs["attention_mask"][i].sum())))
        print("      ids:", inputs["input_ids"][i].tolist())
    m = inputs["attention_mask"].bool()
    print("last_hidden_state:", tuple(hidden.shape), "mean|x| (unpadded) {:.4f}".format(hidden[m].abs().mean().item()))
    print("max|adapter - no adapter| (unpadded): {:.4f}".format((hidden - base_hidden)[m].abs().max().item()))
    print("reload max|d|: {:.1e}".format(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
