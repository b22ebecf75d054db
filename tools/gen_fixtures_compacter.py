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

Every case gives each layer its own rule (`shared_phm_rule=False`), which burn-adapters supports so far, and covers
between them: factorised and whole weights (`factorized_phm_W`), factorised rules, ranks 1 and 2, phm_dim 2 and 4,
no bias, and Compacter (both sites) and Compacter++ (the output site). Cases are built as
gen_fixtures_variants.py builds its own (every adapter parameter + 0.3 * N(0, 1) after add_adapter; each saved
adapter reloads with the same output).
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import fixture_common as C
from gen_fixtures_prefix import for_each_family
from gen_fixtures_variants import build_case, output

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


def build_family(family, out_dir):
    base_out = output(family, family.load())
    return [build_case(family, i, n, c, out_dir, base_out, seed=SEED, safetensors=True)
            for i, (n, c) in enumerate(CASES[family.name])]


def presets():
    from adapters import AdapterConfig

    return {name: AdapterConfig.load(name).to_dict() for name in ["compacter", "compacter++"]}


def main():
    for_each_family("compacter", build_family)
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    C.write_json(os.path.join(out, "compacter", "presets.json"), presets())


if __name__ == "__main__":
    main()
