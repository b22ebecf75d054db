#!/usr/bin/env python3
"""DoRA, AdapterPlus and the `mam` / `unipelt` union presets: golden fixtures (AdapterHub `adapters` 1.3.0) on the tiny BERT,
Llama and GPT-2.

    python tools/gen_fixtures_variants.py [FIXTURES_DIR]   # default tests/fixtures; needs the bases and inputs of
                                                           # gen_fixtures.py and gen_fixtures_decoder.py

Layout (FAMILY: bert, llama, gpt2):

    OUT/variants/<family>/cases.json     [{"name", "config", "num_params", "tensors": {key: shape}}, ...]
    OUT/variants/<family>/<case>/        save_adapter(...) (pytorch_adapter.bin: AdapterHub cannot write prefix
                                         tuning as safetensors) + expected.safetensors
    OUT/variants/presets.json            AdapterHub's JSON of the `dora`, `mam` and `unipelt` presets and of
                                         AdapterPlusConfig()

expected.safetensors holds `last_hidden_state` (bert) or `logits`, and for the decoders `generated` (transformers'
greedy generate without its cache, as gen_fixtures_decoder.py).

The union cases are built from AdapterHub's MAMConfig and UniPELTConfig on smaller parts than the presets' (a
prefix MLP of width 800 would make the fixture large); presets.json pins the presets themselves. DoRA runs with
reference_fixes.patch_dora (adapters 1.3.0 scales the bias and leaves LoRA's scaling out of the
norm). Not on GPT-2: adapters 1.3.0's DoRA fails on transformers' Conv1D (it takes the `[in, out]` weight for
`[out, in]`), and on the fused `c_attn` it has no DoRA at all. `unipelt` is not on GPT-2 either: its gated LoRA
on `c_attn` gates each query/key/value block, which burn-adapters refuses. Every adapter parameter gets
+ NOISE * N(0, 1) after add_adapter. Self-check: each saved adapter reloads with the same output.
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch

import fixture_common as C
from gen_fixtures_prefix import for_each_family, record_case
from reference_fixes import patch_dora

SEED = 2468
NOISE = 0.3

DORA = [
    ("dora", "dora[r=4]"),
    ("dora_ffn", "dora[r=2,alpha=2,selfattn_lora=False,intermediate_lora=True,output_lora=True]"),
    ("dora_seq_bn", "dora[r=4,alpha=16]|seq_bn[reduction_factor=4]"),
]


def mam():
    """AdapterHub's MAMConfig with a smaller prefix MLP than the preset's 800 (the fixture stays small)."""
    from adapters import MAMConfig, PrefixTuningConfig

    return MAMConfig(prefix_tuning=PrefixTuningConfig(prefix_length=4, bottleneck_size=16))


def unipelt():
    """AdapterHub's UniPELTConfig (which gates every part) on smaller parts than the preset's."""
    from adapters import LoRAConfig, PrefixTuningConfig, SeqBnConfig, UniPELTConfig

    return UniPELTConfig(PrefixTuningConfig(prefix_length=4, bottleneck_size=16), SeqBnConfig(reduction_factor=4),
                         LoRAConfig(r=4, alpha=2))


def adapter_plus():
    """AdapterHub's AdapterPlusConfig (it has no preset name) with a reduction factor the tiny models' width allows,
    and without stochastic depth: adapters 1.3.0 builds it from torchvision, which the reference venv lacks (in
    evaluation it is the identity anyway)."""
    from adapters import AdapterPlusConfig

    return AdapterPlusConfig(reduction_factor=4, stochastic_depth=0.0)


def cases_for(family):
    unions = [("mam", mam())] + ([("unipelt", unipelt())] if family.name != "gpt2" else [])
    return (DORA if family.name != "gpt2" else []) + unions + [("adapter_plus", adapter_plus())]


def presets():
    """AdapterHub's JSON of the presets this group covers, to compare with burn-adapters' presets."""
    from adapters import AdapterConfig, AdapterPlusConfig

    presets = {name: AdapterConfig.load(name).to_dict() for name in ["dora", "mam", "unipelt"]}
    presets["adapter_plus"] = AdapterPlusConfig().to_dict()
    return presets


def adapter_params(model, name):
    tags = [".{}.{}.".format(kind, name) for kind in ("loras", "adapters", "prefix_tunings", "prefix_gates")]
    return [(n, p) for n, p in model.named_parameters() if any(t in n for t in tags)]


def output(family, model):
    model.eval()
    with torch.no_grad():
        out = model(**family.inputs)
    return (out.last_hidden_state if family.name == "bert" else out.logits).detach().contiguous()


def build_case(family, idx, name, config, out_dir, base_out, seed=SEED, safetensors=False):
    """One case: the adapter added with torch seeded at seed + idx, its parameters perturbed, recorded (and reloaded)
    by record_case in AdapterHub's .bin or safetensors file; returns its cases.json entry. Shared with
    gen_fixtures_compacter.py."""
    torch.manual_seed(seed + idx)
    model = family.load()
    model.add_adapter(name, config=config)
    C.perturb(adapter_params(model, name), NOISE)
    model.set_active_adapters(name)
    diff_base = record_case(family, model, name, out_dir, base_out, lambda m: output(family, m), safetensors)
    case_dir = os.path.join(out_dir, name)
    num_params = C.summary_params(model, name)
    if safetensors:
        manifest = C.manifest(os.path.join(case_dir, "adapter.safetensors"))
    else:
        weights = torch.load(os.path.join(case_dir, "pytorch_adapter.bin"))
        manifest = {k: list(v.shape) for k, v in sorted(weights.items())}
    print("  {:<18} params={:>7}  |out-base|max={:.3f}".format(name, num_params, diff_base))
    config = config if isinstance(config, str) else config.to_dict()
    return {"name": name, "config": config, "num_params": num_params, "tensors": manifest}


def build_family(family, out_dir):
    base_out = output(family, family.load())
    return [build_case(family, i, n, c, out_dir, base_out) for i, (n, c) in enumerate(cases_for(family))]


def main():
    patch_dora()
    for_each_family("variants", build_family)
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    C.write_json(os.path.join(out, "variants", "presets.json"), presets())


if __name__ == "__main__":
    main()
