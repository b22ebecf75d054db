#!/usr/bin/env python3
"""VeRA and DVoRA: golden fixtures (AdapterHub `adapters` 1.3.0) on the tiny BERT, Llama and GPT-2.

    python tools/gen_fixtures_vera.py [FIXTURES_DIR]   # default tests/fixtures; needs the bases and inputs of
                                                       # gen_fixtures.py and gen_fixtures_decoder.py

Layout (FAMILY: bert, llama, gpt2):

    OUT/vera/<family>/cases.json     [{"name", "config", "num_params", "adapterhub_num_params",
                                       "tensors": {key: shape}}, ...]
    OUT/vera/<family>/<case>/        save_adapter(...) (safetensors) + expected.safetensors
    OUT/vera/presets.json            AdapterHub's JSON of the `vera` and `dvora` presets

expected.safetensors holds `last_hidden_state` (bert) or `logits`, and for the decoders `generated`.

adapters 1.3.0 draws VeRA's shared matrices for the first layer it wraps and multiplies them whole, so every case
wraps layers of one shape: on Llama the query projection only (the tiny Llama's values are narrower: grouped-query
attention), on GPT-2 the first feed-forward projection (its fused `c_attn` has no VeRA here). DVoRA runs with
reference_fixes.patch_dora (see gen_fixtures_variants.py), and not on GPT-2 (adapters 1.3.0's DoRA misreads
transformers' Conv1D).

Two workarounds, both of adapters 1.3.0 bugs:
- It trains `vera_D` and `vera_B` as whole matrices (r² + d_output² parameters per layer instead of VeRA's
  r + d_output); burn-adapters trains the diagonals. The noise added after add_adapter goes on the diagonals only,
  so the files hold what VeRA can; `num_params` counts VeRA's parameters (the diagonals, a DVoRA magnitude, the
  shared matrices once), `adapterhub_num_params` what adapters 1.3.0's summary says.
- Saving from a bare base model (BertModel) drops the shared matrices: its filter looks for
  `.shared_parameters.<name>.` with a leading dot. The script adds them under `shared_parameters.<name>.lora_A` /
  `lora_B` (the key a head model's file has, without the base model's prefix), and copies them by hand when it
  reloads. Llama and GPT-2 (`model.` / `transformer.` prefixes) save them themselves.
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import load_file, save_file

import fixture_common as C
import gen_fixtures as G
from gen_fixtures_prefix import for_each_family
from gen_fixtures_variants import output
from reference_fixes import patch_dora
import gen_fixtures_decoder as D

SEED = 1357
NOISE = 0.3


def vera(**kw):
    from adapters import VeraConfig

    return VeraConfig(**kw)


def dvora(**kw):
    from adapters import DvoRAConfig

    return DvoRAConfig(**kw)


def cases_for(family):
    if family.name == "bert":
        return [
            ("vera", vera(r=4)),
            ("vera_ffn", vera(r=2, alpha=4, selfattn_lora=False, intermediate_lora=True, dropout=0.1)),
            ("dvora", dvora(r=4)),
        ]
    if family.name == "llama":
        return [
            ("vera", vera(r=4, attn_matrices=["q"])),
            ("dvora", dvora(r=4, attn_matrices=["q"])),
        ]
    return [("vera_ffn", vera(r=2, alpha=4, selfattn_lora=False, intermediate_lora=True))]


def perturb_vera(model, name):
    """Noise on what VeRA trains: the diagonals of vera_D / vera_B, and DVoRA's magnitude."""
    tag = ".loras.{}.".format(name)
    params = [(n, p) for n, p in model.named_parameters() if tag in n]
    assert params, name
    with torch.no_grad():
        for n, p in params:
            if n.endswith(("vera_D", "vera_B")):
                p.diagonal().add_(NOISE * torch.randn(p.shape[0]))
            else:
                p.add_(NOISE * torch.randn_like(p))


def vera_params(model, name):
    """VeRA's parameter count: the diagonals of vera_D / vera_B, DVoRA's magnitude and the shared matrices once
    (adapters 1.3.0's summary counts the whole matrices)."""
    tag = ".loras.{}.".format(name)
    own = sum(p.shape[0] if n.endswith(("vera_D", "vera_B")) else p.numel()
              for n, p in model.named_parameters() if tag in n)
    return own + sum(p.numel() for p in shared(model, name).values())


def shared(model, name):
    return model.base_model.shared_parameters[name]


def save_case(family, model, name, case_dir):
    """save_adapter, with the shared matrices added where adapters 1.3.0 leaves them out."""
    C.fresh_dir(case_dir)
    model.save_adapter(case_dir, name, with_head=False, use_safetensors=True)
    path = os.path.join(case_dir, "adapter.safetensors")
    tensors = load_file(path)
    if not any(".shared_parameters." in k or k.startswith("shared_parameters.") for k in tensors):
        for matrix, value in shared(model, name).items():
            tensors["shared_parameters.{}.{}".format(name, matrix)] = value.detach().contiguous()
        save_file(tensors, path, metadata={"format": "pt"})
    return tensors


def reload(family, case_dir, name, tensors):
    model = family.load()
    assert model.load_adapter(case_dir, set_active=True, use_safetensors=True) == name
    with torch.no_grad():
        for matrix, value in shared(model, name).items():
            key = next(k for k in tensors if k.endswith("shared_parameters.{}.{}".format(name, matrix)))
            value.copy_(tensors[key])
    return model


def record_shared_case(family, model, name, out_dir, base_out):
    """Records the active adapter `name` as gen_fixtures_prefix.record_case does (safetensors), its shared parameters
    added by save_case and copied back by reload; returns |out - base|max and the file's tensors. Shared with
    gen_fixtures_compacter.py."""
    out = output(family, model)
    expected = {"last_hidden_state" if family.name == "bert" else "logits": out}
    if family.name != "bert":
        expected["generated"] = D.greedy(model, family.inputs)
    diff_base = G.max_abs(out, base_out)
    assert diff_base > 1e-2, "{}: the adapter hardly changes the output ({})".format(name, diff_base)
    case_dir = os.path.join(out_dir, name)
    tensors = save_case(family, model, name, case_dir)
    save_file(expected, os.path.join(case_dir, "expected.safetensors"))
    assert G.max_abs(out, output(family, reload(family, case_dir, name, tensors))) == 0.0, name
    return diff_base, tensors


def build_case(family, idx, name, config, out_dir, base_out):
    torch.manual_seed(SEED + idx)
    model = family.load()
    model.add_adapter(name, config=config)
    perturb_vera(model, name)
    model.set_active_adapters(name)
    diff_base, tensors = record_shared_case(family, model, name, out_dir, base_out)
    num_params = vera_params(model, name)
    hub_params = C.summary_params(model, name)
    print("  {:<10} params={:>5} (adapters: {:>6})  |out-base|max={:.3f}".format(name, num_params, hub_params, diff_base))
    manifest = {k: list(v.shape) for k, v in sorted(tensors.items())}
    return {"name": name, "config": config.to_dict(), "num_params": num_params, "adapterhub_num_params": hub_params,
            "tensors": manifest}


def build_family(family, out_dir):
    base_out = output(family, family.load())
    return [build_case(family, i, n, c, out_dir, base_out) for i, (n, c) in enumerate(cases_for(family))]


def presets():
    from adapters import AdapterConfig

    return {name: AdapterConfig.load(name).to_dict() for name in ["vera", "dvora"]}


def main():
    patch_dora()
    for_each_family("vera", build_family)
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    C.write_json(os.path.join(out, "vera", "presets.json"), presets())


if __name__ == "__main__":
    main()
