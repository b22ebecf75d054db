#!/usr/bin/env python3
"""Check decoder adapters saved by burn-adapters (Rust) against AdapterHub `adapters` 1.3.0 on transformers' causal LMs.

    python tools/check_rust_decoder_adapters.py --fixtures tests/fixtures/decoder --dir <root>

<root>/<family>/<case>/ holds what Rust saved and `expected.safetensors` (`logits` computed by Rust on the fixture
inputs): AdapterHub files (`adapter_config.json`, `adapter.safetensors`) or a PEFT LoRA (`adapter_model.safetensors`).
For each case: load <fixtures>/<family>/base as a causal LM (eager attention); for AdapterHub files adapters.init,
load_adapter(case) and make it active, for PEFT PeftModel.from_pretrained(base, case); run the fixture inputs in eval
mode under no_grad and compare the logits. Loading must use every tensor of the file and leave no adapter parameter
missing. Invertible adapters are inverted before `lm_head`, as in gen_fixtures_invertible.py (adapters 1.3.0's static-head
decoders skip the inverse), and tools/reference_fixes.py is applied.

Prints one line per case and `N passed, M failed`; exits non-zero on any failure or when no case was found.
"""

import argparse
import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import sys
import traceback

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import adapters
from check_rust_adapters import real_missing_keys
from reference_fixes import apply_all as apply_reference_fixes

logging.getLogger("adapters").setLevel(logging.ERROR)


def compare(out, expected, tol, problems):
    if tuple(out.shape) != tuple(expected.shape):
        return float("inf"), problems + ["shape {} != {}".format(tuple(out.shape), tuple(expected.shape))]
    diff = (out - expected).abs().max().item()
    if not diff <= tol:  # also catches NaN
        problems.append("max |d| {:.3e} > tol {:.0e}".format(diff, tol))
    return diff, problems


def check_peft(case_dir, base_dir, inputs, tol):
    from peft import PeftModel
    from peft.utils import load_peft_weights

    expected = load_file(os.path.join(case_dir, "expected.safetensors"))["logits"]
    base = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager").eval()
    model = PeftModel.from_pretrained(base, case_dir).eval()
    problems = []
    loaded = set(load_peft_weights(case_dir).keys())
    created = {n for n, _ in model.named_parameters() if ".lora_" in n or ".vera_lambda" in n or ".ia3_l" in n}
    # VeRA's shared matrices are buffers of the PEFT model (`base_model.vera_A.default`)
    created |= {n for n, _ in model.named_buffers(remove_duplicate=False) if n.startswith("base_model.vera_")}
    created = {n.replace(".default", "") for n in created}
    # DoRA's magnitude is saved without the ".weight" of its module (PEFT's file format predates the module)
    created = {n[: -len(".weight")] if n.endswith("lora_magnitude_vector.weight") else n for n in created}
    if loaded != created:
        problems.append("file keys {} vs model's LoRA parameters {}".format(sorted(loaded - created), sorted(created - loaded)))
    with torch.no_grad():
        out = model(**inputs).logits
    diff, problems = compare(out, expected, tol, problems)
    return "peft", diff, problems


def check_case(case_dir, base_dir, inputs, tol):
    if os.path.isfile(os.path.join(case_dir, "adapter_model.safetensors")):
        return check_peft(case_dir, base_dir, inputs, tol)
    expected = load_file(os.path.join(case_dir, "expected.safetensors"))["logits"]
    model = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager").eval()
    adapters.init(model)
    base = model.base_model
    model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: (base.invertible_adapters_forward(args[0], rev=True),) + args[1:]
    )
    info = {}
    name = model.load_adapter(case_dir, use_safetensors=True, loading_info=info)
    file_keys = list(load_file(os.path.join(case_dir, "adapter.safetensors")).keys())
    problems = []
    if info.get("unexpected_keys"):
        problems.append("unexpected keys: {}".format(", ".join(sorted(info["unexpected_keys"]))))
    missing = real_missing_keys(model, info.get("missing_keys") or [], file_keys, model.base_model_prefix + ".")
    tags = (".adapters.", ".loras.", ".prefix_tunings.", ".prefix_gates.", ".refts.", ".invertible_adapters.")
    missing = [k for k in missing if any(t in k for t in tags)]
    if missing:
        problems.append("missing keys: {}".format(", ".join(sorted(missing))))
    model.set_active_adapters(name)
    model.eval()
    with torch.no_grad():
        out = model(**inputs).logits
    diff, problems = compare(out, expected, tol, problems)
    return name, diff, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", required=True, help="tests/fixtures/decoder (bases and inputs)")
    ap.add_argument("--dir", required=True, help="root of <family>/<case> directories written by Rust")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    apply_reference_fixes()
    inputs = load_file(os.path.join(args.fixtures, "inputs.safetensors"))
    passed = failed = 0
    for family in sorted(os.listdir(args.dir)):
        for case in sorted(os.listdir(os.path.join(args.dir, family))):
            label = "{}/{}".format(family, case)
            base_dir = os.path.join(args.fixtures, family, "base")
            try:
                name, diff, problems = check_case(os.path.join(args.dir, family, case), base_dir, inputs, args.tol)
            except Exception as e:  # noqa: BLE001 -- report and continue
                if args.verbose:
                    traceback.print_exc()
                print("FAIL {:<32} error: {}: {}".format(label, type(e).__name__, e))
                failed += 1
                continue
            status = "ok  " if not problems else "FAIL"
            print("{} {:<32} max|d|={:.3e}  {}".format(status, label, diff, "; ".join(problems)))
            passed += not problems
            failed += bool(problems)
    print("{} passed, {} failed".format(passed, failed))
    return 0 if passed and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
