#!/usr/bin/env python3
"""LoRA / IA3 / ConfigUnion golden fixtures (AdapterHub `adapters` 1.3.0), called by gen_fixtures.py.

    python tools/gen_fixtures_lora.py [OUT_DIR]     # needs OUT_DIR/base and OUT_DIR/inputs.safetensors

Layout (same contract as OUT/bn):

    OUT/lora/cases.json                  [{"name", "config", "noise", "num_params", "tensors": {key: shape},
                                           "files", optional "merged_max_abs_diff_vs_expected", "notes"}, ...]
    OUT/lora/<case>/adapter_config.json  model.save_adapter(..., use_safetensors=True); adapter name == case name
    OUT/lora/<case>/adapter.safetensors
    OUT/lora/<case>/expected.safetensors last_hidden_state f32 [2,7,32], adapter active, eval, no_grad
    OUT/lora/<case>/params.json          {"num_params": N} (adapter_summary)
    OUT/lora/<case>/expected_merged.safetensors   (MERGE_CASES only) last_hidden_state after
                                         model.merge_adapter(case) (reference merge; IA3 does not scale the bias)

Every adapter parameter gets + NOISE * N(0,1) after add_adapter (LoRA B is zero-initialised, IA3 l ones, so
nothing stays identity).  Self-checks: each LoRA/IA3-wrapped Linear is compared against an independent formula
(fixture_common.lora_delta) via forward hooks; the saved adapter is reloaded into a fresh base and must reproduce
expected (max |d| < 1e-6); merge -> reset must restore the unmerged output.
"""

import argparse
import json
import os
import sys

import torch

import gen_fixtures as G
import fixture_common as C

SEED = 5678
NOISE = 0.3

# (case name, config string passed to add_adapter)
CASES = [
    ("lora_qv", "lora[r=4,alpha=8]"),
    ("lora_qkv_ffn", 'lora[r=4,alpha=16,attn_matrices=["q","k","v"],intermediate_lora=True,output_lora=True]'),
    ("lora_leave_out", "lora[r=4,alpha=8,leave_out=[0]]"),
    ("lora_gating", "lora[r=4,alpha=8,use_gating=True]"),
    ("ia3", "ia3"),
    ("ia3_with_output", "ia3[output_lora=True]"),
    ("ia3_alpha2", "ia3[alpha=2]"),
    ("union_seq_bn_lora", "seq_bn[reduction_factor=8]|lora[r=4,alpha=8]"),
    ("ia3_nonzero_bias", "ia3"),
]
MERGE_CASES = ("lora_qkv_ffn", "ia3", "ia3_with_output", "ia3_nonzero_bias")
# The tiny base model has all Linear biases == 0 (BertModel init), which hides the reference's IA3 merge quirk
# (bias not scaled).  These cases first overwrite every encoder Linear bias with BIAS_NOISE * N(0,1); the new
# values are stored in <case>/base_overrides.safetensors (keys as in base/model.safetensors) and must be applied
# to the base model before the adapter is loaded.
BIASED_BASE_CASES = ("ia3_nonzero_bias",)
BIAS_NOISE = 0.1
BIAS_SITES = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "intermediate.dense", "output.dense")


def lora_part(cfg_json):
    """The LoRA-family part of a saved adapter_config.json "config" (the config itself or the union member)."""
    c = cfg_json["config"]
    if c.get("architecture") == "union":
        parts = [p for p in c["configs"] if p.get("architecture") == "lora"]
        assert len(parts) == 1
        return parts[0]
    return c


def expected_module_fn(name, lc):
    """Expected output of every LoRALinear in the model for adapter `name` with LoRA config dict lc."""
    leave_out = set(lc["leave_out"])
    sites = set()
    if lc["selfattn_lora"]:
        sites |= {{"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value"}[m]
                  for m in lc["attn_matrices"]}
    if lc["intermediate_lora"]:
        sites.add("intermediate.dense")
    if lc["output_lora"]:
        sites.add("output.dense")
    kind = "ia3" if lc["composition_mode"] == "scale" else ("lora_gated" if lc["use_gating"] else "lora")

    def fn(mod_name, mod, x, y0):
        layer = int(mod_name.split(".")[2])  # encoder.layer.<i>.…
        site = mod_name.split(".", 3)[3]
        # `output.dense` must not be confused with `attention.output.dense` (never wrapped)
        active = layer not in leave_out and site in sites
        assert active == (name in mod.loras), (mod_name, active)
        if not active:
            return y0
        delta = C.lora_delta(mod.loras[name], x, kind, r=lc["r"], alpha=lc["alpha"])
        return y0 * delta if kind == "ia3" else y0 + delta

    return fn


def make_bias_overrides(model, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, p in model.named_parameters():
        if n.startswith("encoder.layer.") and n.endswith(".bias") and n.split(".", 3)[3][: -len(".bias")] in BIAS_SITES:
            out[n] = (BIAS_NOISE * torch.randn(p.shape, generator=g)).contiguous()
    assert len(out) == 12, sorted(out)
    return out


def apply_overrides(model, overrides):
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in overrides.items():
            params[k].copy_(v)


def check_ia3_placement(model, name, inputs, out):
    """The same IA3 vector applied AFTER the intermediate activation must give a clearly different output."""
    hooks = []
    for layer in model.encoder.layer:
        lin = layer.intermediate.dense
        if name not in lin.loras:
            continue
        lora = lin.loras[name]
        s = lora.lora_B.view(1, 1, -1) * lora.scaling
        hooks.append(lin.register_forward_hook(lambda mod, a, o, s=s: o / s))
        hooks.append(layer.intermediate.register_forward_hook(lambda mod, a, o, s=s: o * s))
    try:
        alt = G.run(model, inputs).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
    d = G.max_abs(alt, out)
    assert d > 1e-4, "IA3 before/after the FFN activation only differs by {}".format(d)
    return d


def build_case(idx, name, config, base_dir, out_dir, inputs, base_out):
    case_dir = os.path.join(out_dir, "lora", name)
    C.fresh_dir(case_dir)
    model = C.fresh_model(base_dir)
    overrides = None
    if name in BIASED_BASE_CASES:
        overrides = make_bias_overrides(model, SEED + 1000 + idx)
        apply_overrides(model, overrides)
        C.save_file(overrides, os.path.join(case_dir, "base_overrides.safetensors"))
        base_out = G.run(model, inputs).last_hidden_state
    torch.manual_seed(SEED + idx)
    model.add_adapter(name, config=config)
    params = C.method_params(model, name)
    assert params, name
    C.perturb(params, NOISE)
    num_params = sum(p.numel() for _, p in params)
    assert C.summary_params(model, name) == num_params

    model.set_active_adapters(name)
    out = G.run(model, inputs).last_hidden_state
    diff_base = G.max_abs(out, base_out)
    assert diff_base > 1e-2, (name, diff_base)

    model.save_adapter(case_dir, name, with_head=False, use_safetensors=True)
    C.save_expected(os.path.join(case_dir, "expected.safetensors"), out)
    C.write_json(os.path.join(case_dir, "params.json"), {"num_params": num_params})


    with open(os.path.join(case_dir, "adapter_config.json")) as f:
        cfg_json = json.load(f)
    lc = lora_part(cfg_json)
    formula_dev, n_checked = C.check_lora_modules(model, inputs, expected_module_fn(name, lc))

    entry = {"name": name, "config": config, "noise": NOISE, "num_params": num_params}
    notes = []
    if overrides is not None:
        entry["base_overrides"] = "base_overrides.safetensors"
        notes.append("apply base_overrides.safetensors (nonzero encoder Linear biases) to the base model first")
    if lc["composition_mode"] == "scale" and lc["intermediate_lora"]:
        entry["ia3_after_activation_max_abs_diff"] = check_ia3_placement(model, name, inputs, out)
    if name in MERGE_CASES:
        model.merge_adapter(name)
        merged = G.run(model, inputs).last_hidden_state
        C.save_expected(os.path.join(case_dir, "expected_merged.safetensors"), merged)
        entry["merged_max_abs_diff_vs_expected"] = G.max_abs(merged, out)
        model.reset_adapter()
        back = G.run(model, inputs).last_hidden_state
        d_reset = G.max_abs(back, out)
        assert d_reset < 1e-5, (name, d_reset)
        entry["reset_max_abs_diff_vs_expected"] = d_reset
        if lc["composition_mode"] == "scale":
            notes.append("reference merge of IA3 scales W rows by l*alpha but leaves the bias unscaled; "
                         + ("with the nonzero biases expected_merged differs from expected"
                            if overrides is not None else
                            "the base has zero Linear biases, so here expected_merged == expected up to rounding"))
    if lc["use_gating"]:
        try:
            model.merge_adapter(name)
            raise AssertionError("merging a gated LoRA unexpectedly succeeded")
        except ValueError as e:
            notes.append("merge_adapter raises ValueError: {}".format(e))

    # reload into a fresh base model
    fresh = C.fresh_model(base_dir)
    if overrides is not None:
        apply_overrides(fresh, overrides)
    C.load_adapter_checked(fresh, case_dir, name)
    fresh.set_active_adapters(name)
    d = G.max_abs(G.run(fresh, inputs).last_hidden_state, out)
    assert d < C.RELOAD_TOL, (name, d)

    entry["tensors"] = C.manifest(os.path.join(case_dir, "adapter.safetensors"))
    entry["files"] = sorted(os.listdir(case_dir))
    if notes:
        entry["notes"] = notes
    print("{:<22} params={:>5}  |out-base|={:.4f}  formula={:.1e} ({} layers)  reload|d|={:.1e}{}".format(
        name, num_params, diff_base, formula_dev, n_checked, d,
        "  merged|d|={:.2e}".format(entry["merged_max_abs_diff_vs_expected"]) if name in MERGE_CASES else ""))
    return entry


def build_all(out_dir, base_dir, inputs, base_out):
    os.makedirs(os.path.join(out_dir, "lora"), exist_ok=True)
    names = [n for n, _ in CASES]
    assert len(set(names)) == len(names)
    doc = [build_case(i, n, c, base_dir, out_dir, inputs, base_out) for i, (n, c) in enumerate(CASES)]
    C.write_json(os.path.join(out_dir, "lora", "cases.json"), doc)
    print("wrote {} lora cases".format(len(doc)))


def standalone(description, build):
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("out_dir", nargs="?", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out_dir)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    inputs = G.make_inputs()
    base_dir = os.path.join(out_dir, "base")
    from safetensors.torch import load_file

    base_out = load_file(os.path.join(base_dir, "expected.safetensors"))["last_hidden_state"]
    build(out_dir, base_dir, inputs, base_out)


if __name__ == "__main__":
    sys.exit(standalone(__doc__, build_all))
