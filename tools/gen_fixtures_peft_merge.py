#!/usr/bin/env python3
"""PEFT's `add_weighted_adapter` golden fixtures (huggingface `peft`, see tools/requirements.txt) on the tiny BERT.

    python tools/gen_fixtures_peft_merge.py [FIXTURES_DIR]   # default tests/fixtures; needs FIXTURES_DIR/base

Layout:

    OUT/peft_merge/sources/<a|b|c>/      PEFT LoRAs on query and value (save_pretrained): `a` r 4 alpha 8, `b` r 4
                                         alpha 16 with rsLoRA, `c` r 2 alpha 4; every factor + NOISE * N(0, 1)
    OUT/peft_merge/cases.json            [{"name", "adapters", "weights", "combination_type", "svd_rank", "density",
                                           "majority_sign_method", "r", "lora_alpha"}, ...]
    OUT/peft_merge/<case>.safetensors    the merged adapter's tensors: `<module>.lora_A` [r, in] and
                                         `<module>.lora_B` [out, r] (torch layout) for the entrywise combinations,
                                         `<module>.delta` [out, in] = B A · scaling for the SVD ones (an SVD's
                                         factors are unique only up to signs), and `last_hidden_state` of the
                                         model with the merged adapter active

DARE draws its masks from torch's generator, which another implementation cannot reproduce: its cases run at
density 1, where PEFT keeps every entry (and does not rescale); other densities are checked by their
statistics in tests/peft_merge.rs. Self-check: each merged adapter changes the output.
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import save_file

import fixture_common as C
import gen_fixtures as G

SEED = 1357
NOISE = 0.3
TARGETS = ["query", "value"]
SOURCES = [
    ("a", dict(r=4, lora_alpha=8)),
    ("b", dict(r=4, lora_alpha=16, use_rslora=True)),
    ("c", dict(r=2, lora_alpha=4)),
]
W = [0.7, -0.4]
# (name, adapters, weights, combination_type, extra kwargs)
CASES = [
    ("linear", ["a", "b"], W, "linear", {}),
    ("linear_single", ["c"], [1.5], "svd", {}),  # one adapter: PEFT switches to `linear`
    ("cat", ["a", "b", "c"], [0.7, -0.4, 1.2], "cat", {}),
    ("svd", ["a", "c"], W, "svd", {}),
    ("svd_rank2", ["a", "b", "c"], [0.7, -0.4, 1.2], "svd", {"svd_rank": 2}),
    ("ties", ["a", "b"], W, "ties", {"density": 0.5}),
    ("ties_frequency", ["a", "b"], [0.5, 0.5], "ties", {"density": 0.7, "majority_sign_method": "frequency"}),
    ("magnitude_prune", ["a", "b"], W, "magnitude_prune", {"density": 0.3}),
    ("dare_linear", ["a", "b"], W, "dare_linear", {"density": 1.0}),
    ("dare_ties", ["a", "b"], W, "dare_ties", {"density": 1.0}),
    ("ties_svd", ["a", "c"], W, "ties_svd", {"density": 0.5, "svd_rank": 3}),
    ("magnitude_prune_svd", ["a", "b"], W, "magnitude_prune_svd", {"density": 0.6}),
    ("dare_ties_svd", ["a", "b"], W, "dare_ties_svd", {"density": 1.0, "majority_sign_method": "frequency"}),
]


def lora_modules(model):
    from peft.tuners.lora import LoraLayer

    return [(n[len("base_model.model."):], m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def build_sources(base_dir, out):
    from peft import LoraConfig, get_peft_model

    for idx, (name, kwargs) in enumerate(SOURCES):
        torch.manual_seed(SEED + idx)
        base = G.load_base(base_dir)
        base.name_or_path = G.MODEL_NAME
        model = get_peft_model(base, LoraConfig(target_modules=TARGETS, lora_dropout=0.0, **kwargs))
        C.perturb([(n, p) for n, p in model.named_parameters() if ".lora_" in n], NOISE)
        case_dir = os.path.join(out, "sources", name)
        C.fresh_dir(case_dir)
        from gen_fixtures_peft import save_peft

        save_peft(model, case_dir)


def build_case(base_dir, out, inputs, base_out, name, adapters, weights, combination, kwargs):
    from peft import PeftModel

    model = PeftModel.from_pretrained(G.load_base(base_dir), os.path.join(out, "sources", adapters[0]),
                                      adapter_name=adapters[0])
    for other in adapters[1:]:
        model.load_adapter(os.path.join(out, "sources", other), adapter_name=other)
    model.add_weighted_adapter(adapters, weights, name, combination_type=combination, **kwargs)
    model.set_adapter(name)
    model.eval()
    with torch.no_grad():
        out_state = model(**inputs).last_hidden_state.contiguous()
    assert G.max_abs(out_state, base_out) > 1e-2, name
    tensors = {"last_hidden_state": out_state}
    svd = combination.endswith("svd") and len(adapters) > 1
    for module, layer in lora_modules(model):
        if svd:
            tensors[module + ".delta"] = layer.get_delta_weight(name).detach().contiguous()
        else:
            tensors[module + ".lora_A"] = layer.lora_A[name].weight.detach().contiguous()
            tensors[module + ".lora_B"] = layer.lora_B[name].weight.detach().contiguous()
    save_file(tensors, os.path.join(out, name + ".safetensors"))
    config = model.peft_config[name]
    print("  {:<20} r={:<2} |out-base|max={:.3f}".format(name, config.r, G.max_abs(out_state, base_out)))
    return {"name": name, "adapters": adapters, "weights": weights, "combination_type": combination,
            "svd_rank": kwargs.get("svd_rank"), "density": kwargs.get("density"),
            "majority_sign_method": kwargs.get("majority_sign_method", "total"),
            "r": config.r, "lora_alpha": config.lora_alpha}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    fixtures = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures"))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = os.path.join(fixtures, "peft_merge")
    C.fresh_dir(out)
    base_dir = os.path.join(fixtures, "base")
    inputs = G.make_inputs()
    base_out = G.run(G.load_base(base_dir), inputs).last_hidden_state
    build_sources(base_dir, out)
    cases = [build_case(base_dir, out, inputs, base_out, *case) for case in CASES]
    C.write_json(os.path.join(out, "cases.json"), cases)


if __name__ == "__main__":
    main()
