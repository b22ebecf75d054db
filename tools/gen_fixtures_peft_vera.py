#!/usr/bin/env python3
"""PEFT-format VeRA golden fixtures (huggingface `peft` 0.21.2) on the tiny BERT and Llama.

    python tools/gen_fixtures_peft_vera.py [FIXTURES_DIR]   # default tests/fixtures; needs the bases and inputs of
                                                            # gen_fixtures.py and gen_fixtures_decoder.py

Layout:

    OUT/peft_vera/<family>_<case>/adapter_config.json       PeftModel.save_pretrained (safetensors), README removed
    OUT/peft_vera/<family>_<case>/adapter_model.safetensors
    OUT/peft_vera/<family>_<case>/expected.safetensors      last_hidden_state (bert) or logits (llama), eval

Each case wraps layers of different shapes, so PEFT slices its shared vera_A [r, max_in] / vera_B [max_out, r]
per layer: BERT's query, value and first feed-forward projection (32 → 32, 32 → 37), Llama's query and
value projections (32 → 32, 32 → 16: grouped-query attention). vera_lambda_d and vera_lambda_b get + NOISE * N(0, 1)
(lambda_b starts at zeros). Self-checks: every wrapped layer against
y0 + lambda_b ⊙ (B_sliced (lambda_d ⊙ (A_sliced x))), and a fresh base reloads the same outputs.
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import fixture_common as C
import gen_fixtures as G
import gen_fixtures_decoder as D

SEED = 4321
NOISE = 0.3

CASES = [
    ("bert", "vera", dict(target_modules=["query", "value", "intermediate.dense"], r=4)),
    ("llama", "vera", dict(target_modules=["q_proj", "v_proj"], r=4, d_initial=0.5)),
]


def load(family, fixtures):
    if family == "bert":
        return G.load_base(os.path.join(fixtures, "base"))
    return D.load(os.path.join(fixtures, "decoder", family, "base"))


def inputs_of(family, fixtures):
    from safetensors.torch import load_file

    if family == "bert":
        return dict(load_file(os.path.join(fixtures, "inputs.safetensors")))
    return dict(load_file(os.path.join(fixtures, "decoder", "inputs.safetensors")))


def output(family, model, inputs):
    model.eval()
    with torch.no_grad():
        out = model(**inputs)
    return (out.last_hidden_state if family == "bert" else out.logits).detach().contiguous()


def check_formula(model, inputs):
    from peft.tuners.vera import VeraLayer

    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, VeraLayer)]
    cap = C.Capture(mods)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        cap.close()
    by_name, worst, n = dict(mods), 0.0, 0
    for name, recs in cap.records.items():
        m = by_name[name]
        base = m.get_base_layer()
        a = m.vera_A["default"][:, : base.in_features]
        b = m.vera_B["default"][: base.out_features, :]
        d, lb = m.vera_lambda_d["default"], m.vera_lambda_b["default"]
        for x, y in recs:
            want = F.linear(x, base.weight, base.bias) + lb * ((d * (x @ a.t())) @ b.t())
            worst = max(worst, (want - y).abs().max().item())
            n += 1
    assert n > 0 and worst < C.FORMULA_TOL, worst
    return worst


def build_case(idx, family, case, kwargs, fixtures):
    from peft import PeftModel, VeraConfig, get_peft_model

    name = "{}_{}".format(family, case)
    case_dir = os.path.join(fixtures, "peft_vera", name)
    C.fresh_dir(case_dir)
    inputs = inputs_of(family, fixtures)
    base = load(family, fixtures)
    base.name_or_path = "tiny-random-" + family  # PEFT writes it as base_model_name_or_path
    base_out = output(family, load(family, fixtures), inputs)
    torch.manual_seed(SEED + idx)
    model = get_peft_model(base, VeraConfig(**kwargs))
    C.perturb([(n, p) for n, p in model.named_parameters() if "vera_lambda" in n], NOISE)
    out = output(family, model, inputs)
    assert G.max_abs(out, base_out) > 1e-2, name
    formula = check_formula(model, inputs)
    model.save_pretrained(case_dir, safe_serialization=True)
    readme = os.path.join(case_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    from gen_fixtures_peft import stabilize_config

    stabilize_config(os.path.join(case_dir, "adapter_config.json"))
    key = "last_hidden_state" if family == "bert" else "logits"
    save_file({key: out}, os.path.join(case_dir, "expected.safetensors"))
    fresh = PeftModel.from_pretrained(load(family, fixtures), case_dir)
    d = G.max_abs(output(family, fresh, inputs), out)
    assert d < C.RELOAD_TOL, (name, d)
    print("{:<12} formula={:.1e}  reload|d|={:.1e}".format(name, formula, d))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    fixtures = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures"))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for idx, (family, case, kwargs) in enumerate(CASES):
        build_case(idx, family, case, kwargs, fixtures)


if __name__ == "__main__":
    main()
