#!/usr/bin/env python3
"""MTL-LoRA golden fixtures (AdapterHub `adapters` 1.3.0: `mtl_lora`, the `MultiTask` block, `share_parameters`) on
the tiny BERT, Llama and GPT-2.

    python tools/gen_fixtures_mtl_lora.py [FIXTURES_DIR]   # default tests/fixtures; needs the bases and inputs of
                                                           # gen_fixtures.py and gen_fixtures_decoder.py

Layout (FAMILY: bert, llama, gpt2):

    OUT/mtl_lora/<family>/cases.json     [{"name", "config", "num_params", "tensors": {key: shape}}, ...]
    OUT/mtl_lora/<family>/<case>/        save_adapter(..., use_safetensors=True) + expected.safetensors
    OUT/mtl_lora/<family>/multi_task/    adapters `a` and `b` in <name>/ (their A and B shared by
                                         share_parameters(MultiTask(a, b))), and expected.safetensors with the
                                         output of MultiTask(a, b) under TASK_IDS (`task_ids`, one per row)

expected.safetensors holds `last_hidden_state` (bert) or `logits`, and for the decoders' single-adapter cases
`generated` (transformers' greedy generate without its cache, as gen_fixtures_decoder.py).

adapters 1.3.0 fails on two things this script avoids: MTL-LoRA on GPT-2's fused `c_attn` (its merged linear
feeds a 4-D up projection to conv1d), so the GPT-2 cases wrap the feed-forward projections; and
`task_specific_matrix_type="linear"` (`TaskSpecificLinear` assigns a parameter before `Module.__init__`), which
the `linear` case runs with that one call added (patch_task_specific_linear). Every adapter parameter gets
+ NOISE * N(0, 1) after add_adapter. Self-check: each saved adapter reloads with the same output.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import save_file

import fixture_common as C
import gen_fixtures as G
from gen_fixtures_prefix import for_each_family, record_case
from reference_fixes import patch_task_specific_linear

SEED = 8642
NOISE = 0.3
TASK_IDS = [1, 0, 1, 0]

ATTENTION = "selfattn_lora=True"
FFN = "selfattn_lora=False,intermediate_lora=True,output_lora=True"

CASES = [
    ("mtl_lora", "mtl_lora[n_up_projection=3,r=4,{where}]"),
    ("mtl_ffn_sharp", "mtl_lora[n_up_projection=2,r=2,alpha=4,weights_sharpness=0.5,{ffn}]"),
    ("mtl_gated", "mtl_lora[n_up_projection=2,r=4,use_gating=True,{where}]"),
    ("mtl_linear", 'mtl_lora[r=2,task_specific_matrix_type="linear",{where}]'),
    ("mtl_seq_bn", "mtl_lora[n_up_projection=2,r=4,{where}]|seq_bn[reduction_factor=4]"),
]


def config_for(family, template):
    where = FFN if family.name == "gpt2" else ATTENTION
    return template.format(where=where, ffn=FFN)


def adapter_params(model, name):
    """Adapter `name`'s parameters, shared ones included (named_parameters lists a shared tensor once, under
    `shared_parameters`)."""
    tags = (".loras.{}.".format(name), ".adapters.{}.".format(name))
    return [(n, p) for n, p in model.named_parameters(remove_duplicate=False) if any(t in n for t in tags)]


def expected(family, model, **kwargs):
    model.eval()
    with torch.no_grad():
        out = model(**family.inputs, **kwargs)
    out = (out.last_hidden_state if family.name == "bert" else out.logits).detach().contiguous()
    return out, {"last_hidden_state" if family.name == "bert" else "logits": out}


def build_case(family, idx, name, template, out_dir, base_out):
    torch.manual_seed(SEED + idx)
    config = config_for(family, template)
    model = family.load()
    model.add_adapter(name, config=config)
    C.perturb(adapter_params(model, name), NOISE)
    model.set_active_adapters(name)
    diff_base = record_case(family, model, name, out_dir, base_out, lambda m: expected(family, m)[0], True)
    case_dir = os.path.join(out_dir, name)
    num_params = C.summary_params(model, name)
    print("  {:<14} params={:>6}  |out-base|max={:.3f}".format(name, num_params, diff_base))
    return {"name": name, "config": config, "num_params": num_params,
            "tensors": C.manifest(os.path.join(case_dir, "adapter.safetensors"))}


def build_multi_task(family, out_dir, base_out):
    """Rows routed by task id to `a` and `b`, whose A and B are shared."""
    import adapters.composition as ac

    torch.manual_seed(SEED + 100)
    config = config_for(family, "mtl_lora[n_up_projection=2,r=4,{where}]")
    model = family.load()
    for name in ["a", "b"]:
        model.add_adapter(name, config=config)
    model.share_parameters(ac.MultiTask("a", "b"))
    # A and B once (they are one tensor now), then each task's matrix and weights
    shared = {id(p): (n, p) for n, p in adapter_params(model, "a") + adapter_params(model, "b")}
    C.perturb(list(shared.values()), NOISE)
    model.set_active_adapters(ac.MultiTask("a", "b"))
    rows = family.inputs["input_ids"].shape[0]
    task_ids = torch.tensor(TASK_IDS[:rows])
    out, tensors = expected(family, model, task_ids=task_ids)
    alone = []
    for name in ["a", "b"]:
        model.set_active_adapters(name)
        alone.append(expected(family, model)[0])
    for row, task in enumerate(task_ids.tolist()):
        assert G.max_abs(out[row], alone[task][row]) < 1e-5, "row {} is not task {}'s".format(row, task)
    assert G.max_abs(alone[0], alone[1]) > 1e-2, "the tasks hardly differ"
    dir_ = os.path.join(out_dir, "multi_task")
    C.fresh_dir(dir_)
    for name in ["a", "b"]:
        model.save_adapter(os.path.join(dir_, name), name, with_head=False, use_safetensors=True)
    tensors["task_ids"] = task_ids.to(torch.int64)
    save_file(tensors, os.path.join(dir_, "expected.safetensors"))
    print("  multi_task     task_ids={}  |out-base|max={:.3f}".format(task_ids.tolist(), G.max_abs(out, base_out)))


def build_family(family, out_dir):
    base_out = expected(family, family.load())[0]
    cases = [build_case(family, i, n, c, out_dir, base_out) for i, (n, c) in enumerate(CASES)]
    build_multi_task(family, out_dir, base_out)
    return cases


def main():
    patch_task_specific_linear()
    for_each_family("mtl_lora", build_family)


if __name__ == "__main__":
    main()
