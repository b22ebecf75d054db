#!/usr/bin/env python3
"""Check Hugging Face model directories exported by burn-adapters (`save_pretrained`, e.g. with a LoRA merged) in
transformers, with no adapter library.

    python tools/check_hf_export.py --fixtures tests/fixtures --dir <root> [--tol 1e-5]

Every sub-directory of <root> is one case: config.json + model.safetensors as written, and expected.safetensors with
`output`, the exporting model's output on the fixture inputs (BERT: `last_hidden_state` on inputs.safetensors;
decoders: `logits` on decoder/inputs.safetensors, compared at the real tokens only). The directory is loaded with
transformers' class for its `model_type` (eager attention) and run in eval mode; a case passes when every tensor of
model.safetensors was used and max |transformers - expected| <= tol. Prints one line per case and `N passed, M
failed` last; exits 1 on any failure or when no case is found.
"""

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def check_case(case_dir, fixtures, tol):
    import json

    from transformers import AutoModelForCausalLM, BertModel

    model_type = json.load(open(os.path.join(case_dir, "config.json")))["model_type"]
    expected = load_file(os.path.join(case_dir, "expected.safetensors"))["output"]
    if model_type == "bert":
        model, info = BertModel.from_pretrained(case_dir, attn_implementation="eager", output_loading_info=True)
        inputs = load_file(os.path.join(fixtures, "inputs.safetensors"))
        mask = torch.ones(expected.shape[:2], dtype=torch.bool)
    else:
        model, info = AutoModelForCausalLM.from_pretrained(case_dir, attn_implementation="eager",
                                                           output_loading_info=True)
        inputs = load_file(os.path.join(fixtures, "decoder", "inputs.safetensors"))
        mask = inputs["attention_mask"].bool()
    unused = info.get("unexpected_keys") or []
    missing = [k for k in info.get("missing_keys") or [] if "position_ids" not in k]
    if unused or missing:
        return False, "unused tensors {} / missing {}".format(unused[:4], missing[:4])
    model.eval()
    with torch.no_grad():
        out = model(**inputs)
    got = out.last_hidden_state if model_type == "bert" else out.logits
    d = (got[mask] - expected[mask]).abs().max().item()
    return d <= tol, "{} max|d| = {:.3e}".format(model_type, d)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", required=True, help="tests/fixtures (inputs.safetensors, decoder/inputs.safetensors)")
    ap.add_argument("--dir", required=True, help="root whose sub-directories are the exported models")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = sorted(d for d in os.listdir(args.dir) if os.path.isdir(os.path.join(args.dir, d))) \
        if os.path.isdir(args.dir) else []
    passed = failed = 0
    for name in cases:
        try:
            ok, msg = check_case(os.path.join(args.dir, name), args.fixtures, args.tol)
        except Exception as e:  # a case that cannot even be loaded is a failure, not a crash of the checker
            ok, msg = False, "{}: {}".format(type(e).__name__, e)
        print("{:<6} {:<24} {}".format("ok" if ok else "FAIL", name, msg))
        passed += ok
        failed += not ok
    print("{} passed, {} failed".format(passed, failed))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
