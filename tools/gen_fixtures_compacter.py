#!/usr/bin/env python3
"""Compacter and Compacter++ (PHM layers): golden fixtures (AdapterHub `adapters` 1.3.0) on the tiny BERT, Llama
and GPT-2.

    python tools/gen_fixtures_compacter.py [FIXTURES_DIR]   # default tests/fixtures; needs the bases and inputs of
                                                            # gen_fixtures.py and gen_fixtures_decoder.py

Layout (FAMILY: bert, llama, gpt2):

    OUT/compacter/<family>/cases.json     [{"name", "config", "num_params", "tensors": {key: shape}}, ...]
    OUT/compacter/<family>/<case>/        save_adapter(...) (safetensors) + expected.safetensors
    OUT/compacter/presets.json            AdapterHub's JSON of the `compacter` and `compacter++` presets

expected.safetensors holds `last_hidden_state` (bert) or `logits`, and for the decoders `generated`.

The first cases give each layer its own rule (`shared_phm_rule=False`), the later ones share one rule per adapter
(AdapterHub's default, `shared_parameters.<name>.phm_rule`, or `phm_rule_left` / `_right`), two of them the
(factorised) weights too (`shared_W_phm`, `shared_parameters.<name>.W_down_left`, ...; adapters 1.3.0 fails on
whole shared weights). Between them: factorised
and whole weights (`factorized_phm_W`), factorised rules, ranks 1 and 2, phm_dim 2 and 4, normal and uniform rule
starts, a rule that does not learn, no bias, and Compacter (both sites) and Compacter++ (the output site). Cases are
built as gen_fixtures_variants.py builds its own (every adapter parameter, a shared rule included, + 0.3 * N(0, 1)
after add_adapter; each saved adapter reloads with the same output).

Saving from a bare BertModel drops a shared rule (adapters 1.3.0's filter wants `.shared_parameters.<name>.` with a
leading dot): as gen_fixtures_vera.py does for VeRA's matrices, the script adds it under
`shared_parameters.<name>.phm_rule` and copies it in by hand when it reloads.
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch

import fixture_common as C
import gen_fixtures_vera as V
from gen_fixtures_prefix import for_each_family
from gen_fixtures_variants import NOISE, adapter_params, build_case, output

SEED = 8642

OWN_RULE = "shared_phm_rule=False"
CASES = {
    "bert": [
        ("compacter", "compacter[reduction_factor=8,{}]".format(OWN_RULE)),
        ("compacter_pp_full", "compacter++[reduction_factor=4,phm_dim=2,factorized_phm_W=False,"
                              "factorized_phm_rule=True,{}]".format(OWN_RULE)),
    ],
    "llama": [
        ("compacter_pp", "compacter++[reduction_factor=8,phm_rank=2,{}]".format(OWN_RULE)),
    ],
    "gpt2": [
        ("compacter_no_bias", "compacter[reduction_factor=8,phm_bias=False,{}]".format(OWN_RULE)),
    ],
}
SHARED_RULE_CASES = {
    "bert": [
        ("compacter_shared", "compacter[reduction_factor=8]"),
        ("compacter_pp_shared_factorized", "compacter++[reduction_factor=4,phm_dim=2,factorized_phm_rule=True,"
                                           "phm_c_init=\"uniform\"]"),
        ("compacter_shared_weights", "compacter[reduction_factor=8,shared_W_phm=True,phm_rank=2]"),
    ],
    "llama": [
        ("compacter_pp_shared", "compacter++[reduction_factor=8,factorized_phm_W=False]"),
        ("compacter_pp_shared_weights", "compacter++[reduction_factor=8,shared_W_phm=True,factorized_phm_rule=True]"),
    ],
    "gpt2": [
        ("compacter_shared_fixed", "compacter[reduction_factor=8,learn_phm=False,phm_c_init=\"uniform\"]"),
    ],
}


def build_shared_rule_case(family, idx, name, config, out_dir, base_out):
    """A case whose adapter shares PHM parameters: as build_case, with the shared ones perturbed too, recorded by
    V.record_shared_case."""
    torch.manual_seed(SEED + idx)
    model = family.load()
    model.add_adapter(name, config=config)
    C.perturb(adapter_params(model, name) + list(V.shared(model, name).named_parameters()), NOISE)
    model.set_active_adapters(name)
    diff_base, _ = V.record_shared_case(family, model, name, out_dir, base_out)
    num_params = C.summary_params(model, name)
    print("  {:<30} params={:>7}  |out-base|max={:.3f}".format(name, num_params, diff_base))
    manifest = C.manifest(os.path.join(out_dir, name, "adapter.safetensors"))
    return {"name": name, "config": config, "num_params": num_params, "tensors": manifest}


def build_family(family, out_dir):
    base_out = output(family, family.load())
    own = CASES[family.name]
    cases = [build_case(family, i, n, c, out_dir, base_out, seed=SEED, safetensors=True)
             for i, (n, c) in enumerate(own)]
    return cases + [build_shared_rule_case(family, len(own) + i, n, c, out_dir, base_out)
                    for i, (n, c) in enumerate(SHARED_RULE_CASES[family.name])]


def presets():
    from adapters import AdapterConfig

    return {name: AdapterConfig.load(name).to_dict() for name in ["compacter", "compacter++"]}


def main():
    for_each_family("compacter", build_family)
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    C.write_json(os.path.join(out, "compacter", "presets.json"), presets())


if __name__ == "__main__":
    main()
