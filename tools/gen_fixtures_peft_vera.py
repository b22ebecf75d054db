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


def fixtures_from_argv():
    """The fixtures directory: the first argument, or tests/fixtures beside tools/."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures"))


def start_case(fixtures, group, family, case, peft_config, seed):
    """A fresh OUT/<group>/<family>_<case>, the family's inputs and base output, and get_peft_model(peft_config)
    on a fresh base (torch seeded with seed first): (name, case_dir, inputs, base_out, model)."""
    from peft import get_peft_model

    name = "{}_{}".format(family, case)
    case_dir = os.path.join(fixtures, group, name)
    C.fresh_dir(case_dir)
    inputs = inputs_of(family, fixtures)
    base_out = output(family, load(family, fixtures), inputs)
    base = load(family, fixtures)
    base.name_or_path = "tiny-random-" + family  # PEFT writes it as base_model_name_or_path
    torch.manual_seed(seed)
    return name, case_dir, inputs, base_out, get_peft_model(base, peft_config)


def run_cases(build_case, cases):
    """build_case(idx, family, case, kwargs, fixtures) for every case, deterministically, single-threaded."""
    fixtures = fixtures_from_argv()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for idx, (family, case, kwargs) in enumerate(cases):
        build_case(idx, family, case, kwargs, fixtures)
    return fixtures


def check_formula(model, inputs):
    from peft.tuners.vera import VeraLayer

    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, VeraLayer)]
    records = C.capture_forward(model, mods, inputs)
    by_name, worst, n = dict(mods), 0.0, 0
    for name, recs in records.items():
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
    from peft import PeftModel, VeraConfig

    name, case_dir, inputs, base_out, model = start_case(
        fixtures, "peft_vera", family, case, VeraConfig(**kwargs), SEED + idx)
    C.perturb([(n, p) for n, p in model.named_parameters() if "vera_lambda" in n], NOISE)
    out = output(family, model, inputs)
    assert G.max_abs(out, base_out) > 1e-2, name
    formula = check_formula(model, inputs)
    from gen_fixtures_peft import save_peft

    save_peft(model, case_dir)
    key = "last_hidden_state" if family == "bert" else "logits"
    save_file({key: out}, os.path.join(case_dir, "expected.safetensors"))
    fresh = PeftModel.from_pretrained(load(family, fixtures), case_dir)
    d = G.max_abs(output(family, fresh, inputs), out)
    assert d < C.RELOAD_TOL, (name, d)
    print("{:<12} formula={:.1e}  reload|d|={:.1e}".format(name, formula, d))


if __name__ == "__main__":
    run_cases(build_case, CASES)
