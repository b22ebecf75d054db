#!/usr/bin/env python3
"""Generate golden fixtures for the burn-adapters parity tests.

Reference: AdapterHub `adapters` 1.3.0 on top of transformers' BertModel
(see tools/requirements.txt; venv e.g. /work/.cache/venv).

    python tools/gen_fixtures.py [OUT_DIR]        # OUT_DIR defaults to tests/fixtures

Layout written (the Rust tests depend on exactly this):

    OUT/inputs.safetensors             input_ids, attention_mask, token_type_ids  int64 [2, 7]
    OUT/base/config.json               BertConfig of the tiny random BERT
    OUT/base/model.safetensors         its weights (saved before adapters.init: no adapter keys)
    OUT/base/expected.safetensors      last_hidden_state f32 [2,7,32], pooler_output f32 [2,32]
    OUT/bn/cases.json                  [{"name": case, "config": <config string passed to add_adapter>}, ...]
    OUT/bn/<case>/adapter_config.json  written by model.save_adapter(..., use_safetensors=True)
    OUT/bn/<case>/adapter.safetensors  idem
    OUT/bn/<case>/expected.safetensors last_hidden_state f32 [2,7,32] with the adapter active (eval, no_grad)
    OUT/bn/<case>/params.json          {"num_params": <adapter parameter count>}
    OUT/lora/...                       LoRA / IA3 / union cases      (tools/gen_fixtures_lora.py)
    OUT/peft/...                       PEFT-format LoRA cases        (tools/gen_fixtures_peft.py)
    OUT/composition/...                Stack/Fuse/Split/... cases    (tools/gen_fixtures_composition.py)
    OUT/bin/...                        pytorch_adapter.bin + head     (tools/gen_fixtures_bin.py)

Each adapter is named after its case.  Every adapter parameter is perturbed with
0.05 * N(0, 1) noise after add_adapter so that no case is (near) identity (0.5 for the
activation cases, so that gelu and gelu_new are told apart by > 1e-4).
Adapters with ln_before=True cannot be saved by adapters 1.3.0 with use_safetensors=True (the
LayerNorm is registered twice, as `adapter_norm_before` and `adapter_down.0`); for those the
reference's .bin is converted, keeping both names (see save_adapter_safetensors).
The script re-loads every saved adapter into a fresh copy of the base model with
load_adapter and asserts that the expected output is reproduced (max |d| < 1e-6).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel

import adapters
import logging

logging.getLogger("adapters").setLevel(logging.ERROR)

HIDDEN = 32
SEED = 1234
NOISE = 0.05
# The activation cases get much stronger noise so that the pre-activations reach |x| ~ 1..3 and the
# fixtures tell e.g. gelu (erf) from gelu_new (tanh): with 0.05 noise they differ by only ~1e-5 at the output.
STRONG_NOISE = 0.5
STRONG_CASES = ("seq_bn_relu", "seq_bn_gelu", "seq_bn_gelu_new", "seq_bn_swish")
# the activation used by each of those cases, and the ones it must be distinguishable from
ACT_SWAPS = {
    "seq_bn_gelu": ["gelu_new", "swish", "relu"],
    "seq_bn_gelu_new": ["gelu", "swish", "relu"],
    "seq_bn_swish": ["gelu", "gelu_new", "relu"],
    "seq_bn_relu": ["gelu", "gelu_new", "swish"],
}
MODEL_NAME = "tiny-random-bert"

# (case name, config string passed to model.add_adapter)
CASES = [
    ("seq_bn", "seq_bn[reduction_factor=8]"),
    ("double_seq_bn", "double_seq_bn[reduction_factor=8]"),
    ("par_bn", "par_bn[reduction_factor=8]"),
    ("scaled_par_bn", "scaled_par_bn[reduction_factor=8]"),
    ("seq_bn_relu", 'seq_bn[reduction_factor=8,non_linearity="relu"]'),
    ("seq_bn_gelu", 'seq_bn[reduction_factor=8,non_linearity="gelu"]'),
    ("seq_bn_gelu_new", 'seq_bn[reduction_factor=8,non_linearity="gelu_new"]'),
    ("seq_bn_swish", 'seq_bn[reduction_factor=8,non_linearity="swish"]'),
    ("seq_bn_ln_before", "seq_bn[reduction_factor=8,ln_before=True]"),
    ("seq_bn_ln_after", "seq_bn[reduction_factor=8,ln_after=True]"),
    ("seq_bn_adapter_residual_before_ln", "seq_bn[reduction_factor=8,adapter_residual_before_ln=True]"),
    ("seq_bn_residual_after_ln", "seq_bn[reduction_factor=8,residual_before_ln=False]"),
    ("seq_bn_residual_post_add", 'seq_bn[reduction_factor=8,residual_before_ln="post_add"]'),
    ("double_seq_bn_scaling_0_5", "double_seq_bn[reduction_factor=8,scaling=0.5]"),
    ("seq_bn_scaling_learned", 'seq_bn[reduction_factor=8,scaling="learned"]'),
    ("seq_bn_scaling_channel", 'seq_bn[reduction_factor=8,scaling="channel"]'),
    ("seq_bn_gating", "seq_bn[reduction_factor=8,use_gating=True]"),
    ("double_seq_bn_gating", "double_seq_bn[reduction_factor=8,use_gating=True]"),
    ("seq_bn_leave_out_0", "seq_bn[reduction_factor=8,leave_out=[0]]"),
    ("seq_bn_rf_map", 'seq_bn[reduction_factor={"0": 4, "default": 16}]'),
    ("seq_bn_no_original_ln_after", "seq_bn[reduction_factor=8,original_ln_after=False]"),
    ("double_seq_bn_original_ln_before", "double_seq_bn[reduction_factor=8,original_ln_before=True]"),
    (
        "seq_bn_ln_before_ln_after_adapter_residual",
        "seq_bn[reduction_factor=8,ln_before=True,ln_after=True,adapter_residual_before_ln=True]",
    ),
    ("par_bn_residual_after_ln", "par_bn[reduction_factor=8,residual_before_ln=False]"),
]


def base_config():
    return BertConfig(
        vocab_size=99,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        attn_implementation="eager",
    )


def make_inputs():
    input_ids = torch.tensor(
        [
            [2, 45, 17, 88, 5, 63, 3],
            [2, 71, 9, 30, 3, 0, 0],
        ],
        dtype=torch.int64,
    )
    attention_mask = torch.tensor(
        [
            [1, 1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 0, 0],
        ],
        dtype=torch.int64,
    )
    token_type_ids = torch.zeros(2, 7, dtype=torch.int64)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def load_base(base_dir):
    model = BertModel.from_pretrained(base_dir, attn_implementation="eager")
    # adapter_config.json records config.name_or_path as "model_name"; keep it path-independent
    model.config.name_or_path = MODEL_NAME
    model.eval()
    return model


def run(model, inputs):
    model.eval()
    with torch.no_grad():
        out = model(**inputs)
    return out


def adapter_params(model, name):
    tag = ".adapters.{}.".format(name)
    return [(n, p) for n, p in model.named_parameters() if tag in n]


def max_abs(a, b):
    return (a - b).abs().max().item()


def build_base(out_dir, inputs):
    base_dir = os.path.join(out_dir, "base")
    os.makedirs(base_dir, exist_ok=True)
    torch.manual_seed(SEED)
    model = BertModel(base_config(), add_pooling_layer=True)
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.copy_(1.0 + 0.1 * torch.randn_like(mod.weight))
                mod.bias.copy_(0.1 * torch.randn_like(mod.bias))
    model.eval()
    model.save_pretrained(base_dir, safe_serialization=True)
    keys = list(load_file(os.path.join(base_dir, "model.safetensors")).keys())
    assert not any("adapter" in k for k in keys), keys
    out = run(model, inputs)
    save_file(
        {
            "last_hidden_state": out.last_hidden_state.contiguous(),
            "pooler_output": out.pooler_output.contiguous(),
        },
        os.path.join(base_dir, "expected.safetensors"),
    )
    # reloading must reproduce it, and adapters.init without active adapters must not change it
    reloaded = load_base(base_dir)
    adapters.init(reloaded)
    out2 = run(reloaded, inputs)
    d = max_abs(out.last_hidden_state, out2.last_hidden_state)
    assert d == 0.0, "base reload / adapters.init changed the output: {}".format(d)
    return base_dir, out.last_hidden_state


def save_adapter_safetensors(model, case_dir, name):
    """model.save_adapter(..., use_safetensors=True).

    adapters 1.3.0 cannot do this for ln_before=True: the new LayerNorm is registered twice
    (as `adapter_norm_before` and as `adapter_down.0`), the state dict holds both names for the same
    storage and safetensors refuses shared tensors.  In that case we fall back to the reference's own
    torch format (pytorch_adapter.bin, written by the same save_adapter) and convert it to
    adapter.safetensors, keeping BOTH names (cloned, identical values) exactly as the .bin holds them.
    """
    try:
        model.save_adapter(case_dir, name, with_head=False, use_safetensors=True)
        return "save_adapter(use_safetensors=True)"
    except RuntimeError as e:
        if "share memory" not in str(e):
            raise
    model.save_adapter(case_dir, name, with_head=False, use_safetensors=False)
    bin_path = os.path.join(case_dir, "pytorch_adapter.bin")
    sd = torch.load(bin_path, map_location="cpu", weights_only=True)
    save_file({k: v.detach().clone().contiguous() for k, v in sd.items()}, os.path.join(case_dir, "adapter.safetensors"))
    os.remove(bin_path)
    return "save_adapter(use_safetensors=False) -> pytorch_adapter.bin converted to adapter.safetensors"


def check_dedup_load(case_dir, name, base_dir, inputs, expected):
    """For aliased parameters (ln_before), loading a file with only ONE of the two names must work too."""
    sd = load_file(os.path.join(case_dir, "adapter.safetensors"))
    alias = [k for k in sd if ".adapter_norm_before." in k]
    if not alias:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for drop in (".adapter_norm_before.", ".adapter_down.0."):
            shutil.copy(os.path.join(case_dir, "adapter_config.json"), tmp)
            save_file({k: v for k, v in sd.items() if drop not in k}, os.path.join(tmp, "adapter.safetensors"))
            fresh = load_base(base_dir)
            adapters.init(fresh)
            info = {}
            fresh.load_adapter(tmp, use_safetensors=True, loading_info=info)
            fresh.set_active_adapters(name)
            d = max_abs(run(fresh, inputs).last_hidden_state, expected)
            assert d < 1e-6, (name, drop, d)
            assert info.get("missing_keys"), "expected the dropped alias to be reported missing"


def check_activation_swaps(case_dir, name, base_dir, inputs, expected):
    """The same weights under another non_linearity must give a clearly different output (> 1e-4)."""
    for act in ACT_SWAPS.get(name, []):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(os.path.join(case_dir, "adapter.safetensors"), tmp)
            with open(os.path.join(case_dir, "adapter_config.json")) as f:
                cfg = json.load(f)
            cfg["config"]["non_linearity"] = act
            with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
                json.dump(cfg, f)
            fresh = load_base(base_dir)
            adapters.init(fresh)
            fresh.load_adapter(tmp, use_safetensors=True)
            fresh.set_active_adapters(name)
            d = max_abs(run(fresh, inputs).last_hidden_state, expected)
            assert d > 1e-4, "{}: swapping the activation to {} changes the output by only {}".format(name, act, d)
            print("    {} with {} instead: max|d| = {:.2e}".format(name, act, d))


def build_case(idx, name, config, base_dir, out_dir, inputs, base_out):
    case_dir = os.path.join(out_dir, "bn", name)
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)

    model = load_base(base_dir)
    adapters.init(model)
    torch.manual_seed(SEED + 1 + idx)
    model.add_adapter(name, config=config)
    params = adapter_params(model, name)
    assert params, "no adapter params for {}".format(name)
    with torch.no_grad():
        for _, p in params:
            p.add_((STRONG_NOISE if name in STRONG_CASES else NOISE) * torch.randn_like(p))
    for pn, p in params:
        assert p.abs().max().item() > 1e-3, "parameter still ~zero: {}".format(pn)
    num_params = sum(p.numel() for _, p in params)
    summary = model.adapter_summary(as_dict=True)
    summary_params = [r["#param"] for r in summary if r["name"] == name][0]
    assert summary_params == num_params, (summary_params, num_params)

    model.set_active_adapters(name)
    out = run(model, inputs).last_hidden_state
    diff_base = max_abs(out, base_out)
    assert diff_base > 1e-2, "{} is too close to the base model ({})".format(name, diff_base)

    saved_via = save_adapter_safetensors(model, case_dir, name)
    save_file({"last_hidden_state": out.contiguous()}, os.path.join(case_dir, "expected.safetensors"))
    with open(os.path.join(case_dir, "params.json"), "w") as f:
        json.dump({"num_params": num_params}, f, indent=2)
        f.write("\n")
    assert os.path.isfile(os.path.join(case_dir, "adapter.safetensors"))
    assert os.path.isfile(os.path.join(case_dir, "adapter_config.json"))
    assert not os.path.exists(os.path.join(case_dir, "pytorch_adapter.bin"))

    # round trip: a fresh base model + load_adapter must reproduce the output
    fresh = load_base(base_dir)
    adapters.init(fresh)
    info = {}
    loaded = fresh.load_adapter(case_dir, use_safetensors=True, loading_info=info)
    assert loaded == name, loaded
    assert not info.get("missing_keys") and not info.get("unexpected_keys"), info
    fresh.set_active_adapters(name)
    out2 = run(fresh, inputs).last_hidden_state
    d = max_abs(out, out2)
    assert d < 1e-6, "{}: reload differs by {}".format(name, d)
    check_dedup_load(case_dir, name, base_dir, inputs, out)
    check_activation_swaps(case_dir, name, base_dir, inputs, out)
    print("{:<45} params={:>6}  |out-base|max={:.4f}  reload|d|={:.1e}".format(name, num_params, diff_base, d))
    return saved_via


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("out_dir", nargs="?", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)  # bit-stable CPU results
    torch.use_deterministic_algorithms(True)

    inputs = make_inputs()
    save_file(inputs, os.path.join(out_dir, "inputs.safetensors"))
    base_dir, base_out = build_base(out_dir, inputs)

    os.makedirs(os.path.join(out_dir, "bn"), exist_ok=True)
    names = [n for n, _ in CASES]
    assert len(set(names)) == len(names)
    doc = []
    for idx, (name, config) in enumerate(CASES):
        saved_via = build_case(idx, name, config, base_dir, out_dir, inputs, base_out)
        entry = {"name": name, "config": config, "noise": STRONG_NOISE if name in STRONG_CASES else NOISE}
        if not saved_via.startswith("save_adapter(use_safetensors=True)"):
            entry["note"] = saved_via
        doc.append(entry)
    with open(os.path.join(out_dir, "bn", "cases.json"), "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print("wrote {} cases to {}".format(len(CASES), out_dir))

    # LoRA / IA3 / union, PEFT and composition fixtures (separate modules, same base and inputs)
    import gen_fixtures_composition
    import gen_fixtures_lora
    import gen_fixtures_peft

    gen_fixtures_lora.build_all(out_dir, base_dir, inputs, base_out)
    gen_fixtures_peft.build_all(out_dir, base_dir, inputs, base_out)
    gen_fixtures_composition.build_all(out_dir, base_dir, inputs, base_out)
    import gen_fixtures_bin

    gen_fixtures_bin.build_all(out_dir)


if __name__ == "__main__":
    sys.exit(main())
