#!/usr/bin/env python3
"""PEFT-format IA3 golden fixtures (huggingface `peft` 0.21.2, `IA3Config`) on the tiny BERT, Llama and GPT-2.

    python tools/gen_fixtures_peft_ia3.py [FIXTURES_DIR]   # default tests/fixtures; needs the bases and inputs of
                                                           # gen_fixtures.py and gen_fixtures_decoder.py

Layout:

    OUT/peft_ia3/<family>_<case>/adapter_config.json       PeftModel.save_pretrained (safetensors), README removed
    OUT/peft_ia3/<family>_<case>/adapter_model.safetensors
    OUT/peft_ia3/<family>_<case>/expected.safetensors      last_hidden_state (bert) or logits (decoders), eval

The "default" cases take PEFT's target and feed-forward modules for the model type (BERT: key, value and
"output.dense", which is both attention.output.dense and the second FFN projection, both scaling their input;
Llama: k_proj, v_proj, down_proj with down_proj's input scaled; GPT-2: the fused c_attn, a Conv1D, and mlp.c_proj
with its input scaled). "outputs" scales the outputs of query, value and the first FFN projection, as AdapterHub's
IA3 does. ia3_l (ones at the start) gets + NOISE * N(0, 1). Self-checks: every wrapped layer against
W (x * l) + b or (W x + b) * l, and a fresh base reloads the same outputs.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import save_file

import fixture_common as C
import gen_fixtures as G
from gen_fixtures_peft import save_peft
from gen_fixtures_peft_vera import load, output, run_cases, start_case

SEED = 1357
NOISE = 0.3

CASES = [
    ("bert", "default", dict()),
    ("bert", "outputs", dict(target_modules=["query", "value", "intermediate.dense"], feedforward_modules=[])),
    ("llama", "default", dict()),
    ("gpt2", "default", dict()),
]


def check_formula(model, inputs):
    from peft.tuners.ia3 import IA3Layer

    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, IA3Layer)]
    records = C.capture_forward(model, mods, inputs)
    by_name, worst, n, scaled_inputs = dict(mods), 0.0, 0, 0
    for name, recs in records.items():
        m = by_name[name]
        base = m.get_base_layer()
        weight = base.weight.t() if m.fan_in_fan_out else base.weight
        l = m.ia3_l["default"].flatten()
        scaled_inputs += int(m.is_feedforward)
        for x, y in recs:
            if m.is_feedforward:
                want = torch.nn.functional.linear(x * l, weight, base.bias)
            else:
                want = torch.nn.functional.linear(x, weight, base.bias) * l
            worst = max(worst, (want - y).abs().max().item())
            n += 1
    assert n > 0 and worst < C.FORMULA_TOL, worst
    return worst, scaled_inputs


def build_case(idx, family, case, kwargs, fixtures):
    from peft import IA3Config, PeftModel

    name, case_dir, inputs, base_out, model = start_case(
        fixtures, "peft_ia3", family, case, IA3Config(**kwargs), SEED + idx)
    C.perturb([(n, p) for n, p in model.named_parameters() if "ia3_l" in n], NOISE)
    out = output(family, model, inputs)
    assert G.max_abs(out, base_out) > 1e-2, name
    formula, scaled_inputs = check_formula(model, inputs)
    save_peft(model, case_dir, "feedforward_modules")
    key = "last_hidden_state" if family == "bert" else "logits"
    save_file({key: out}, os.path.join(case_dir, "expected.safetensors"))
    fresh = PeftModel.from_pretrained(load(family, fixtures), case_dir)
    d = G.max_abs(output(family, fresh, inputs), out)
    assert d < C.RELOAD_TOL, (name, d)
    print("{:<14} input-scaled layers={:>2}  formula={:.1e}  reload|d|={:.1e}".format(name, scaled_inputs, formula, d))


if __name__ == "__main__":
    run_cases(build_case, CASES)
