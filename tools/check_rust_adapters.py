#!/usr/bin/env python3
"""Check adapters saved by burn-adapters (Rust) against the AdapterHub `adapters` 1.3.0 reference.

    python tools/check_rust_adapters.py --base tests/fixtures/base \\
        --inputs tests/fixtures/inputs.safetensors --dir <root>

Every subdirectory of <root> holding an `adapter_config.json` is a case; it must also hold
`adapter.safetensors` (AdapterHub schema) and `expected.safetensors` (`last_hidden_state` computed by
Rust).  For each case: load the base BertModel from --base, adapters.init, load_adapter(subdir), make it
active, run in eval mode under no_grad on the inputs and compare with the expected output.

Prints one line per case with max |d| and a final `N passed, M failed` line.  Exits non-zero if any case
fails (max |d| > --tol, load error, unexpected/missing weights) or if no case was found. VeRA's shared matrices are
copied in by hand (load_shared_parameters: adapters 1.3.0's loader drops them on a bare BertModel). GLOW invertible adapters
and MTL-LoRA's linear task matrix run with tools/reference_fixes.py (adapters 1.3.0 fails on both).
"""

import argparse
import json
import logging
import os
import sys
import traceback
import zlib

import torch
from safetensors.torch import load_file
from transformers import BertModel

import adapters

logging.getLogger("adapters").setLevel(logging.ERROR)

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def strip_prefix(k, prefix):
    return k[len(prefix) :] if k.startswith(prefix) else k


def real_missing_keys(model, missing, file_keys, prefix):
    """Missing keys whose parameter was not loaded under another (aliased) name.

    The reference registers ln_before's LayerNorm twice (`adapter_norm_before` and `adapter_down.0`),
    so a file holding only one of the two names loads completely; don't flag the other one. Likewise the prefix-tuning
    pool, which every attention layer holds again (`...prefix_tuning.pool.prefix_tunings...`).
    """
    by_id = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), set()).add(strip_prefix(n, prefix))
    name_to_aliases = {n: names for names in by_id.values() for n in names}
    file_keys = {strip_prefix(k, prefix) for k in file_keys}
    out = []
    for k in missing:
        k = strip_prefix(k, prefix)
        if not (name_to_aliases.get(k, {k}) & file_keys):
            out.append(k)
    return out


def input_positions(model, name, out):
    """The input's positions of `out`: AdapterHub returns a prompt's positions too, burn-adapters does not."""
    prompt = model.adapters_config.match(name, config_type=adapters.PromptTuningConfig)
    if prompt is None:
        return out
    length = prompt.prompt_length
    if prompt.combine == "prefix_after_bos":
        return torch.cat([out[:, :1], out[:, 1 + length:]], dim=1)
    return out[:, length:]


def load_shared_parameters(model, name, tensors):
    """Copies the file's `shared_parameters.<name>.*` (VeRA's matrices) into the model: adapters 1.3.0's loader
    drops them on a bare base model (its filter wants `.shared_parameters.` with a leading dot). Returns the keys."""
    tag = "shared_parameters.{}.".format(name)
    keys = [k for k in tensors if k.startswith(tag)]
    with torch.no_grad():
        for k in keys:
            model.base_model.shared_parameters[name][k[len(tag):]].copy_(tensors[k])
    return keys


def check_case(case_dir, base_dir, inputs, tol):
    for f in ("adapter_config.json", "adapter.safetensors", "expected.safetensors"):
        if not os.path.isfile(os.path.join(case_dir, f)):
            raise FileNotFoundError("missing {}".format(f))
    # the weights checksum burn-adapters records is zlib's CRC-32 of the file
    with open(os.path.join(case_dir, "adapter_config.json")) as f:
        recorded = json.load(f).get("weights_crc32", {}).get("adapter.safetensors")
    with open(os.path.join(case_dir, "adapter.safetensors"), "rb") as f:
        actual = zlib.crc32(f.read())
    if recorded != actual:
        raise ValueError("weights_crc32 {} in adapter_config.json, CRC-32 of the file {}".format(recorded, actual))
    expected = load_file(os.path.join(case_dir, "expected.safetensors"))
    if "last_hidden_state" not in expected:
        raise KeyError("expected.safetensors has no 'last_hidden_state' (keys: {})".format(sorted(expected)))
    expected = expected["last_hidden_state"]

    model = BertModel.from_pretrained(base_dir, attn_implementation="eager")
    model.eval()
    adapters.init(model)
    info = {}
    name = model.load_adapter(case_dir, use_safetensors=True, loading_info=info)
    tensors = load_file(os.path.join(case_dir, "adapter.safetensors"))
    shared = load_shared_parameters(model, name, tensors)
    file_keys = [k for k in tensors if k not in shared]
    prefix = model.base_model_prefix + "."
    unexpected = info.get("unexpected_keys") or []
    missing = real_missing_keys(model, info.get("missing_keys") or [], file_keys, prefix)
    problems = []
    if unexpected:
        problems.append("unexpected keys: {}".format(", ".join(sorted(unexpected))))
    if missing:
        problems.append("missing keys: {}".format(", ".join(sorted(missing))))
    model.set_active_adapters(name)
    # again: modules created while loading (adapters' ReFT layers) start in training mode, with dropout
    model.eval()
    with torch.no_grad():
        out = input_positions(model, name, model(**inputs).last_hidden_state)
    if tuple(out.shape) != tuple(expected.shape):
        problems.append("shape {} != expected {}".format(tuple(out.shape), tuple(expected.shape)))
        return name, float("inf"), problems
    if expected.dtype != torch.float32:
        problems.append("expected dtype {} (want float32)".format(expected.dtype))
    diff = (out - expected.to(out.dtype)).abs().max().item()
    if not diff <= tol:  # also catches NaN
        problems.append("max |d| {:.3e} > tol {:.0e}".format(diff, tol))
    return name, diff, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="directory with config.json + model.safetensors")
    ap.add_argument("--inputs", required=True, help="inputs.safetensors (input_ids, attention_mask[, token_type_ids])")
    ap.add_argument("--dir", required=True, help="root directory whose subdirectories are the cases")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of load errors")
    args = ap.parse_args()
    from reference_fixes import apply_all as apply_reference_fixes

    apply_reference_fixes()
    torch.manual_seed(0)
    raw = load_file(args.inputs)
    inputs = {k: raw[k].to(torch.int64) for k in INPUT_KEYS if k in raw}

    if not os.path.isdir(args.dir):
        print("error: {} is not a directory".format(args.dir))
        return 2
    cases = sorted(
        d for d in os.listdir(args.dir) if os.path.isfile(os.path.join(args.dir, d, "adapter_config.json"))
    )
    passed = failed = 0
    for case in cases:
        case_dir = os.path.join(args.dir, case)
        try:
            name, diff, problems = check_case(case_dir, args.base, inputs, args.tol)
        except Exception as e:  # noqa: BLE001 -- report and continue
            if args.verbose:
                traceback.print_exc()
            print("FAIL {:<45} error: {}: {}".format(case, type(e).__name__, e))
            failed += 1
            continue
        status = "ok  " if not problems else "FAIL"
        line = "{} {:<45} max|d|={:.3e}".format(status, case, diff)
        if name != case:
            line += "  (adapter name {!r})".format(name)
        if problems:
            line += "  " + "; ".join(problems)
        print(line)
        if problems:
            failed += 1
        else:
            passed += 1
    if not cases:
        print("no cases (subdirectories with adapter_config.json) found under {}".format(args.dir))
    print("{} passed, {} failed".format(passed, failed))
    return 0 if cases and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
