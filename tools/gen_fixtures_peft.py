#!/usr/bin/env python3
"""PEFT-format LoRA golden fixtures (huggingface `peft`, see tools/requirements.txt), called by gen_fixtures.py.

    python tools/gen_fixtures_peft.py [OUT_DIR]     # needs OUT_DIR/base and OUT_DIR/inputs.safetensors

Layout:

    OUT/peft/cases.json                     [{"name", "lora_config": {kwargs of peft.LoraConfig}, "noise",
                                              "wrapped_modules", "tensors": {key: shape}, "files"}, ...]
    OUT/peft/<case>/adapter_config.json     PeftModel.save_pretrained(dir) (safetensors)
    OUT/peft/<case>/adapter_model.safetensors
    OUT/peft/<case>/expected.safetensors    last_hidden_state f32 [2,7,32] and pooler_output f32 [2,32] of the PEFT
                                            model (eval, no_grad)

The base is the plain BertModel of OUT/base (no adapters.init).  lora_A (kaiming init) and lora_B (zero init)
both get + NOISE * N(0,1).  Self-checks: every wrapped Linear against y0 + B(A(x))·scaling, and
PeftModel.from_pretrained on a fresh base reproduces expected (max |d| < 1e-6).  The README.md model card that
save_pretrained writes is removed, and target_modules in adapter_config.json is sorted (PEFT writes the set in
hash order, which changes from run to run).
"""

import json
import os
import sys

# save_pretrained otherwise asks the Hub whether base_model_name_or_path has a config.json (5 retries, no network)
os.environ["HF_HUB_OFFLINE"] = "1"

import torch
import torch.nn.functional as F

import gen_fixtures as G
import fixture_common as C

SEED = 9012
NOISE = 0.3

CASES = [
    ("peft_lora_qv", dict(target_modules=["query", "value"], r=4, lora_alpha=8, lora_dropout=0.0)),
    ("peft_lora_all", dict(target_modules=["query", "key", "value", "dense"], r=4, lora_alpha=16, lora_dropout=0.0)),
    # use_rslora: scaling = lora_alpha / sqrt(r) = 4.0 instead of lora_alpha / r = 2.0
    ("peft_lora_rslora", dict(target_modules=["query", "value"], r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=True)),
    # DoRA: b + m ⊙ (W + s·B A) x / ‖W + s·B A‖ per output, with the magnitude vector perturbed too
    ("peft_dora_qv", dict(target_modules=["query", "value"], r=4, lora_alpha=16, lora_dropout=0.0, use_dora=True)),
]


def peft_modules(model):
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def check_formula(model, inputs, scaling):
    mods = peft_modules(model)
    records = C.capture_forward(model, mods, inputs)
    worst = 0.0
    n = 0
    by_name = dict(mods)
    for name, recs in records.items():
        m = by_name[name]
        base = m.get_base_layer()
        A = m.lora_A["default"].weight  # [r, in]
        B = m.lora_B["default"].weight  # [out, r]
        assert m.scaling["default"] == scaling, (m.scaling, scaling)
        for x, y in recs:
            want = F.linear(x, base.weight, base.bias) + (x @ A.t() @ B.t()) * scaling
            if m.use_dora["default"]:
                magnitude = m.lora_magnitude_vector["default"].weight
                factor = magnitude / torch.linalg.norm(base.weight + scaling * B @ A, dim=1)
                want = base.bias + factor * (x @ base.weight.t() + (x @ A.t() @ B.t()) * scaling)
            worst = max(worst, (want - y).abs().max().item())
            n += 1
    assert n > 0 and worst < C.FORMULA_TOL, worst
    return worst


def stabilize_config(path, *more_sets):
    """PEFT keeps target_modules (and IA3's feedforward_modules: more_sets) as sets and writes them in hash order
    (varies with PYTHONHASHSEED): sort them. The file is otherwise rewritten byte-identically (PEFT uses
    json.dumps(indent=2, sort_keys=True))."""
    with open(path) as f:
        raw = f.read()
    cfg = json.loads(raw)
    assert json.dumps(cfg, indent=2, sort_keys=True) == raw, "unexpected PEFT config formatting"
    for key in ("target_modules",) + more_sets:
        if isinstance(cfg.get(key), list):
            cfg[key] = sorted(cfg[key])
    with open(path, "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True))


def save_peft(model, case_dir, *more_sets, **kwargs):
    """PeftModel.save_pretrained(case_dir) in safetensors, without the README.md model card, with the
    config's module sets sorted (stabilize_config)."""
    model.save_pretrained(case_dir, safe_serialization=True, **kwargs)
    readme = os.path.join(case_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    stabilize_config(os.path.join(case_dir, "adapter_config.json"), *more_sets)


def build_case(idx, name, kwargs, base_dir, out_dir, inputs):
    from peft import LoraConfig, PeftModel, get_peft_model

    case_dir = os.path.join(out_dir, "peft", name)
    C.fresh_dir(case_dir)
    base = G.load_base(base_dir)
    # PEFT records model.name_or_path (set by from_pretrained to the local path) as base_model_name_or_path
    base.name_or_path = G.MODEL_NAME
    torch.manual_seed(SEED + idx)
    model = get_peft_model(base, LoraConfig(**kwargs))
    params = [(n, p) for n, p in model.named_parameters() if ".lora_" in n]
    C.perturb(params, NOISE)
    model.eval()
    with torch.no_grad():
        res = model(**inputs)
    out, pooled = res.last_hidden_state, res.pooler_output
    base_out = G.run(G.load_base(base_dir), inputs).last_hidden_state
    diff_base = G.max_abs(out, base_out)
    assert diff_base > 1e-2, (name, diff_base)
    r, alpha = kwargs["r"], kwargs["lora_alpha"]
    scaling = alpha / (r ** 0.5) if kwargs.get("use_rslora") else alpha / r
    formula_dev = check_formula(model, inputs, scaling)
    wrapped = sorted(n[len("base_model.model."):] for n, _ in peft_modules(model))

    save_peft(model, case_dir)
    C.save_file({"last_hidden_state": out.contiguous(), "pooler_output": pooled.contiguous()},
                os.path.join(case_dir, "expected.safetensors"))
    assert sorted(os.listdir(case_dir)) == ["adapter_config.json", "adapter_model.safetensors", "expected.safetensors"]

    fresh = PeftModel.from_pretrained(G.load_base(base_dir), case_dir)
    fresh.eval()
    with torch.no_grad():
        res2 = fresh(**inputs)
    d = max(G.max_abs(res2.last_hidden_state, out), G.max_abs(res2.pooler_output, pooled))
    assert d < C.RELOAD_TOL, (name, d)
    tensors = C.manifest(os.path.join(case_dir, "adapter_model.safetensors"))
    print("{:<18} wrapped={:>2}  tensors={:>2}  |out-base|={:.4f}  formula={:.1e}  reload|d|={:.1e}".format(
        name, len(wrapped), len(tensors), diff_base, formula_dev, d))
    return {
        "name": name,
        "lora_config": kwargs,
        "noise": NOISE,
        "scaling": scaling,
        "wrapped_modules": wrapped,
        "tensors": tensors,
        "files": sorted(os.listdir(case_dir)),
    }


def build_all(out_dir, base_dir, inputs, base_out=None):
    os.makedirs(os.path.join(out_dir, "peft"), exist_ok=True)
    doc = [build_case(i, n, kw, base_dir, out_dir, inputs) for i, (n, kw) in enumerate(CASES)]
    C.write_json(os.path.join(out_dir, "peft", "cases.json"), doc)
    print("wrote {} peft cases".format(len(doc)))


if __name__ == "__main__":
    from gen_fixtures_lora import standalone

    sys.exit(standalone(__doc__, build_all))
