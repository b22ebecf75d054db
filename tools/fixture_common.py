"""Helpers shared by the LoRA / PEFT / composition fixture generators (see gen_fixtures.py).

Everything here builds on the helpers of gen_fixtures.py (tiny random BERT, inputs, load_base, run).
"""

import json
import os
import shutil

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file  # noqa: F401

import gen_fixtures as G  # noqa: F401  (re-exported for the generators)

# relative tolerance of the layer-level formula checks (float32, tiny dims)
FORMULA_TOL = 1e-5
RELOAD_TOL = 1e-6


def method_params(model, name):
    """All parameters of adapter `name`: bottleneck modules (`.adapters.<name>.`) and LoRA/IA3 modules
    (`.loras.<name>.`), in named_parameters order."""
    tags = (".adapters.{}.".format(name), ".loras.{}.".format(name))
    return [(n, p) for n, p in model.named_parameters() if any(t in n for t in tags)]


def fusion_params(model, fusion_name):
    tag = ".adapter_fusion_layer.{}.".format(fusion_name)
    return [(n, p) for n, p in model.named_parameters() if tag in n]


def perturb(params, noise):
    """p += noise * N(0, 1) for every parameter (uses the global torch RNG: seed before calling)."""
    with torch.no_grad():
        for _, p in params:
            p.add_(noise * torch.randn_like(p))
    for pn, p in params:
        assert p.abs().max().item() > 1e-3, "parameter still ~zero: {}".format(pn)


def summary_params(model, name):
    rows = [r["#param"] for r in model.adapter_summary(as_dict=True) if r["name"] == name]
    assert len(rows) == 1, rows
    return rows[0]


def manifest(path):
    """{tensor key: [shape...]} of a safetensors file, sorted by key."""
    with safe_open(path, framework="pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}


def save_expected(path, tensor, key="last_hidden_state"):
    save_file({key: tensor.detach().contiguous()}, path)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def fresh_dir(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


def fresh_model(base_dir):
    import adapters

    m = G.load_base(base_dir)
    adapters.init(m)
    return m


def load_adapter_checked(model, adapter_dir, expect_name):
    info = {}
    loaded = model.load_adapter(adapter_dir, use_safetensors=True, loading_info=info)
    assert loaded == expect_name, (loaded, expect_name)
    assert not info.get("missing_keys") and not info.get("unexpected_keys"), info
    return loaded


# ---------------------------------------------------------------------------------------------
# layer-level formula checks for LoRA / IA3 (independent re-implementation of the wrapped Linear)
# ---------------------------------------------------------------------------------------------


def lora_linear_modules(model):
    from adapters.methods.lora import LoRALinear

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


class Capture:
    """Forward hooks recording (input, output) of the given modules during one model forward."""

    def __init__(self, modules):
        self.records = {}
        self.handles = []
        for name, mod in modules:
            self.handles.append(mod.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def fn(module, args, output):
            self.records.setdefault(name, []).append((args[0].detach().clone(), output.detach().clone()))

        return fn

    def close(self):
        for h in self.handles:
            h.remove()


def capture_forward(model, modules, inputs):
    """The (input, output) pairs of each of `modules` (name, module) during one `model(**inputs)`."""
    cap = Capture(modules)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        cap.close()
    return cap.records


def lora_delta(lora_mod, x, kind, r=None, alpha=None):
    """The additive / multiplicative term of one LoRA-family module at input x [B,S,in], from its tensors.

    kind "lora":        x Aᵀ Bᵀ · alpha/r                         (added)
    kind "lora_gated":  x Aᵀ Bᵀ · mean_seq(sigmoid(x Gᵀ + g))    (added, NO alpha/r)
    kind "ia3":         l · alpha   broadcast over [B,S,out]      (multiplied)
    """
    if kind == "ia3":
        return lora_mod.lora_B.view(1, 1, -1) * alpha
    h = x @ lora_mod.lora_A.t() @ lora_mod.lora_B.t()
    if kind == "lora_gated":
        g = torch.sigmoid(F.linear(x, lora_mod.gate.weight, lora_mod.gate.bias)).mean(dim=1, keepdim=True)
        return h * g
    return h * (alpha / r)


def check_lora_modules(model, inputs, expected_fn):
    """Runs the model once with hooks on all LoRALinear modules.  expected_fn(module_name, module, x, y0) returns
    the expected output of that module (or y0 when it should be untouched).  Returns the max abs deviation."""
    mods = lora_linear_modules(model)
    cap = Capture(mods)
    try:
        G.run(model, inputs)
    finally:
        cap.close()
    worst = 0.0
    n_adapted = 0
    mod_by_name = dict(mods)
    for name, recs in cap.records.items():
        m = mod_by_name[name]
        for x, y in recs:
            y0 = F.linear(x, m.weight, m.bias)
            want = expected_fn(name, m, x, y0)
            n_adapted += int(not torch.equal(want, y0))
            d = (want - y).abs().max().item()
            scale = max(1.0, want.abs().max().item())
            worst = max(worst, d / scale)
    assert worst < FORMULA_TOL, "LoRA layer formula mismatch: {}".format(worst)
    assert n_adapted > 0, "no adapted LoRA layer seen"
    return worst, n_adapted
