#!/usr/bin/env python3
"""ReFT golden fixtures (AdapterHub `adapters` 1.3.0: LoReFT, NoReFT, DiReFT) on the tiny BERT, Llama and GPT-2.

    python tools/gen_fixtures_reft.py [FIXTURES_DIR]   # default tests/fixtures; needs the bases and inputs of
                                                       # gen_fixtures.py and gen_fixtures_decoder.py

Layout (FAMILY: bert, llama, gpt2):

    OUT/reft/<family>/cases.json      [{"name", "config", "num_params", "tensors": {key: shape}}, ...]
    OUT/reft/<family>/<case>/         save_adapter(..., use_safetensors=True) + expected.safetensors

expected.safetensors holds `last_hidden_state` (bert) or `logits` and, for the cases without suffix positions,
`generated` (the decoders: transformers' greedy generate without its cache, as gen_fixtures_decoder.py).
DiReFT configs get `"subtract_projection": false` added to adapter_config.json (see record_subtract_projection).
Every adapter parameter gets + NOISE * N(0, 1) after add_adapter (an orthogonal projection's `original`; its
`base` is a buffer; its diagonal is kept in (-1.3, -1], see keep_orthogonal_columns). Self-checks: reload reproduces the output (not for DiReFT, see record_subtract_projection).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import save_file

import fixture_common as C
import gen_fixtures as G
from gen_fixtures_prefix import for_each_family

SEED = 1357
NOISE = 0.3

CASES = [
    ("loreft", "loreft"),
    ("noreft_suffix", "noreft[prefix_positions=2,suffix_positions=2,r=2]"),
    ("direft_tied", 'direft[prefix_positions=2,suffix_positions=1,tied_weights=True,non_linearity="gelu"]'),
    ("loreft_r2_layer1", "loreft[r=2,layers=[1],suffix_positions=1]"),
    ("loreft_lora", "loreft[prefix_positions=2]|lora[r=4,alpha=8]"),
]


def reft_params(model, name):
    tags = (".refts.{}.".format(name), ".loras.{}.".format(name))
    return [(n, p) for n, p in model.named_parameters() if any(t in n for t in tags)]


def record_subtract_projection(model, name, case_dir):
    """adapters 1.3.0 does not write `subtract_projection` (a class attribute): its DiReFT files are NoReFT files, and
    even with the key its load_adapter rebuilds the config without it. Add it where it is False, as burn-adapters
    writes it, so that the file says what was saved."""
    import json

    from adapters import ReftConfig

    config = model.adapters_config.match(name, config_type=ReftConfig)
    if config is None or config.subtract_projection:
        return
    path = os.path.join(case_dir, "adapter_config.json")
    with open(path) as f:
        saved = json.load(f)
    parts = saved["config"]["configs"] if saved["config"].get("architecture") == "union" else [saved["config"]]
    for part in parts:
        if part.get("architecture") == "reft":
            part["subtract_projection"] = False
    with open(path, "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)
        f.write("\n")


def keep_orthogonal_columns(model, name):
    """torch's orthogonal map multiplies column i by `int(original[i, i])`: a diagonal entry perturbed into (-1, 1)
    truncates to 0 and silences the projection (burn-adapters takes the sign instead). Keep the diagonal in
    (-1.3, -1], where both agree."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".refts.{}.".format(name) in n and n.endswith("parametrizations.weight.original"):
                diagonal = p.diagonal()
                diagonal.copy_(-1.0 - 0.3 * torch.rand_like(diagonal))


def build_case(family, idx, name, config, out_dir, base_out):
    torch.manual_seed(SEED + idx)
    model = family.load()
    model.add_adapter(name, config=config)
    C.perturb(reft_params(model, name), NOISE)
    keep_orthogonal_columns(model, name)
    model.set_active_adapters(name)
    out = family.output(model)
    tensors = {"last_hidden_state" if family.name == "bert" else "logits": out}
    if family.name != "bert":
        import gen_fixtures_decoder as D

        # (no float64 rounding check: adapters 1.3.0's ReFT units fail in a float64 copy of the model, a float32
        # input meeting float64 weights; the parity tests' margin shows the rounding instead)
        if "suffix_positions" not in config:
            tensors["generated"] = D.greedy(model, family.inputs)
    diff_base = G.max_abs(out, base_out)
    assert diff_base > 1e-2, "{}: the intervention hardly changes the output ({})".format(name, diff_base)
    case_dir = os.path.join(out_dir, name)
    C.fresh_dir(case_dir)
    model.save_adapter(case_dir, name, with_head=False, use_safetensors=True)
    record_subtract_projection(model, name, case_dir)
    save_file(tensors, os.path.join(case_dir, "expected.safetensors"))
    reloaded = family.load()
    assert reloaded.load_adapter(case_dir, set_active=True, use_safetensors=True) == name
    # adapters 1.3.0 reloads any DiReFT as NoReFT, the key notwithstanding (its config round trip drops it)
    if "direft" not in config:
        assert G.max_abs(out, family.output(reloaded)) == 0.0, name
    num_params = C.summary_params(model, name)
    print("  {:<18} params={:>6}  |out-base|max={:.3f}".format(name, num_params, diff_base))
    return {"name": name, "config": config, "num_params": num_params,
            "tensors": C.manifest(os.path.join(case_dir, "adapter.safetensors"))}


def build_family(family, out_dir):
    base_out = family.output(family.load())
    return [build_case(family, i, n, c, out_dir, base_out) for i, (n, c) in enumerate(CASES)]


def main():
    for_each_family("reft", build_family)


if __name__ == "__main__":
    main()
