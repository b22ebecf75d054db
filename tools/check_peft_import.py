#!/usr/bin/env python3
"""Check PEFT-format LoRA adapters (e.g. exported by burn-adapters) against huggingface `peft`.

    python tools/check_peft_import.py --base tests/fixtures/base --inputs tests/fixtures/inputs.safetensors \\
        --dir <root> [--tol 1e-5]

Every sub-directory of <root> is one case and must hold
    adapter_config.json          PEFT LoraConfig, VeraConfig or IA3Config
    adapter_model.safetensors    keys like base_model.model.encoder.layer.0.attention.self.query.lora_A.weight
    expected.safetensors         last_hidden_state [B,S,H] (optional pooler_output [B,H]) computed by the exporter

For each case the plain BertModel of --base is loaded, PeftModel.from_pretrained(base, case) applied, and the
model run in eval mode on --inputs (input_ids, attention_mask, token_type_ids).  Every tensor of
adapter_model.safetensors must land in the model (no unexpected keys) and every LoRA parameter PEFT created
must come from the file (no missing keys).  A case passes when max |peft - expected| <= tol for every tensor in
expected.safetensors.  Prints one line per case and `N passed, M failed` last; exits 1 on any failure or when
no case is found.
"""

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

REQUIRED = ("adapter_config.json", "adapter_model.safetensors", "expected.safetensors")


def load_base(base_dir):
    from transformers import BertModel

    model = BertModel.from_pretrained(base_dir, attn_implementation="eager")
    model.eval()
    return model


def check_case(case_dir, base_dir, inputs, tol):
    from peft import PeftModel

    missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(case_dir, f))]
    if missing:
        return False, "missing files: {}".format(", ".join(missing))
    saved = load_file(os.path.join(case_dir, "adapter_model.safetensors"))
    expected = load_file(os.path.join(case_dir, "expected.safetensors"))
    if "last_hidden_state" not in expected:
        return False, "expected.safetensors has no last_hidden_state (keys: {})".format(sorted(expected))

    model = PeftModel.from_pretrained(load_base(base_dir), case_dir, is_trainable=False)
    model.eval()

    # key bookkeeping: PEFT stores "<module>.lora_A.weight", the live parameter is "<module>.lora_A.<adapter>.weight"
    adapter = model.active_adapter
    live = {}
    for n, p in model.named_parameters():
        if ".{}.".format(adapter) in n and ("lora_" in n):
            key = n.replace(".{}.".format(adapter), ".", 1)
            # DoRA's magnitude is saved without the ".weight" of its module (PEFT's file format predates the module)
            live[key[: -len(".weight")] if key.endswith("lora_magnitude_vector.weight") else key] = p
    # VeRA: per-layer vectors `<module>.vera_lambda_d.<adapter>`, the shared buffers `base_model.vera_A.<adapter>`;
    # IA3: `<module>.ia3_l.<adapter>`
    for n, p in list(model.named_parameters()) + list(model.named_buffers(remove_duplicate=False)):
        if n.endswith("." + adapter) and ("vera_lambda" in n or "ia3_l" in n or n.startswith("base_model.vera_")):
            live[n[: -len(adapter) - 1]] = p
    unexpected = sorted(set(saved) - set(live))
    not_loaded = sorted(set(live) - set(saved))
    if unexpected or not_loaded:
        return False, "unexpected keys {} / LoRA params not in the file {}".format(unexpected[:4], not_loaded[:4])
    for k, v in saved.items():
        if tuple(v.shape) != tuple(live[k].shape) or not torch.equal(v.to(live[k].dtype), live[k].detach()):
            return False, "tensor {} was not loaded as saved (shape {} vs {})".format(
                k, tuple(v.shape), tuple(live[k].shape))

    with torch.no_grad():
        out = model(**inputs)
    worst = 0.0
    parts = []
    for key, want in expected.items():
        got = getattr(out, key, None)
        if got is None:
            return False, "model output has no {}".format(key)
        if tuple(got.shape) != tuple(want.shape):
            return False, "{}: shape {} vs expected {}".format(key, tuple(got.shape), tuple(want.shape))
        d = (got - want).abs().max().item()
        parts.append("{} {:.2e}".format(key, d))
        worst = max(worst, d)
    ok = worst <= tol
    return ok, "max|d| = {:.3e} ({}; {} lora tensors)".format(worst, ", ".join(parts), len(saved))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="dir with config.json + model.safetensors of the BertModel")
    ap.add_argument("--inputs", required=True, help="safetensors with input_ids, attention_mask, token_type_ids")
    ap.add_argument("--dir", required=True, help="root whose sub-directories are the cases")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(1)

    inputs = {k: v for k, v in load_file(args.inputs).items()
              if k in ("input_ids", "attention_mask", "token_type_ids")}
    if not os.path.isdir(args.dir):
        print("no such directory: {}".format(args.dir))
        print("0 passed, 0 failed")
        return 1
    cases = sorted(d for d in os.listdir(args.dir) if os.path.isdir(os.path.join(args.dir, d)))
    passed = failed = 0
    for name in cases:
        try:
            ok, msg = check_case(os.path.join(args.dir, name), args.base, inputs, args.tol)
        except Exception as e:  # a case that cannot even be loaded is a failure, not a crash of the checker
            ok, msg = False, "{}: {}".format(type(e).__name__, e)
        print("{:<6} {:<30} {}".format("ok" if ok else "FAIL", name, msg))
        passed += ok
        failed += not ok
    if not cases:
        print("no case directories under {}".format(args.dir))
    print("{} passed, {} failed".format(passed, failed))
    return 0 if cases and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
