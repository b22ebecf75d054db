#!/usr/bin/env python3
"""AdapterDrop golden fixtures: AdapterHub 1.3.0's `set_active_adapters(setup, skip_layers=...)` on the tiny BERT.

    python tools/gen_fixtures_adapter_drop.py [FIXTURES_DIR]   # default tests/fixtures

Uses the adapters other generators saved (bottleneck, LoRA, union, prefix tuning); writes

    OUT/adapter_drop/cases.json                [{"name", "adapters": [dirs below FIXTURES_DIR], "setup": Python,
                                                 "text": burn-adapters' form, "skip_layers": [...]}, ...]
    OUT/adapter_drop/<name>.safetensors        `last_hidden_state` with the setup active and those layers skipped

Self-check: skipping no layer gives the setup's output, skipping every layer the base model's.
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import load_file, save_file

import fixture_common as C
import gen_fixtures as G

CASES = [
    ("seq_bn_skip_0", ["bn/seq_bn"], '"seq_bn"', "seq_bn", [0]),
    ("lora_skip_1", ["lora/lora_qkv_ffn"], '"lora_qkv_ffn"', "lora_qkv_ffn", [1]),
    ("union_skip_0", ["lora/union_seq_bn_lora"], '"union_seq_bn_lora"', "union_seq_bn_lora", [0]),
    ("prefix_skip_1", ["prefix/bert/prefix_mlp"], '"prefix_mlp"', "prefix_mlp", [1]),
    ("stack_skip_0", ["bn/seq_bn", "prefix/bert/prefix_flat"], 'Stack("seq_bn", "prefix_flat")',
     "Stack[seq_bn, prefix_flat]", [0]),
]


def load(model, path):
    safetensors = os.path.exists(os.path.join(path, "adapter.safetensors"))
    return model.load_adapter(path, use_safetensors=safetensors)


def output(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(**inputs).last_hidden_state.detach().contiguous()


def main():
    import adapters
    from adapters.composition import Stack  # noqa: F401  (eval'd below)

    here = os.path.dirname(os.path.abspath(__file__))
    fixtures = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures"))
    torch.set_num_threads(1)
    inputs = dict(load_file(os.path.join(fixtures, "inputs.safetensors")))
    out_dir = os.path.join(fixtures, "adapter_drop")
    C.fresh_dir(out_dir)
    base = output(G.load_base(os.path.join(fixtures, "base")), inputs)
    cases = []
    for name, dirs, setup_text, text, skip in CASES:
        model = G.load_base(os.path.join(fixtures, "base"))
        adapters.init(model)
        for d in dirs:
            load(model, os.path.join(fixtures, d))
        setup = eval(setup_text)
        model.set_active_adapters(setup)
        full = output(model, inputs)
        model.set_active_adapters(setup, skip_layers=skip)
        dropped = output(model, inputs)
        model.set_active_adapters(setup, skip_layers=[0, 1])
        assert G.max_abs(output(model, inputs), base) == 0.0, name
        assert G.max_abs(dropped, full) > 1e-3 and G.max_abs(dropped, base) > 1e-3, name
        save_file({"last_hidden_state": dropped}, os.path.join(out_dir, name + ".safetensors"))
        cases.append({"name": name, "adapters": dirs, "setup": setup_text, "text": text, "skip_layers": skip})
        print("  {:<16} skip {}".format(name, skip))
    C.write_json(os.path.join(out_dir, "cases.json"), cases)


if __name__ == "__main__":
    main()
