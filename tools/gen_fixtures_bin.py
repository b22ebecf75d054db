#!/usr/bin/env python3
"""Fixtures in AdapterHub's default PyTorch format (`pytorch_adapter.bin`), saved from a model with
a classification head, so keys carry the `bert.` prefix and the head is saved beside the adapter.

    python tools/gen_fixtures_bin.py [OUT_DIR]     # OUT_DIR defaults to tests/fixtures

Writes OUT/bin/<case>/{adapter_config.json, pytorch_adapter.bin, head_config.json,
pytorch_model_head.bin, expected.safetensors (last_hidden_state, logits)} for:
  seq_bn_head   seq_bn[reduction_factor=8] + classification head (2 layers, tanh, 3 labels)
  ln_before     seq_bn[reduction_factor=8,ln_before=True] (the LayerNorm appears under two names)
"""

import os
import sys

import torch
from safetensors.torch import save_file

import adapters
from adapters import BertAdapterModel
import logging

logging.getLogger("adapters").setLevel(logging.ERROR)

CASES = [
    ("seq_bn_head", "seq_bn[reduction_factor=8]", True),
    ("ln_before", "seq_bn[reduction_factor=8,ln_before=True]", False),
]


def main():
    build_all(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))


def build_all(out):
    base_dir = os.path.join(out, "base")
    from safetensors.torch import load_file

    inputs = load_file(os.path.join(out, "inputs.safetensors"))
    for i, (name, config, with_head) in enumerate(CASES):
        torch.manual_seed(4321 + i)
        model = BertAdapterModel.from_pretrained(base_dir)
        model.config.name_or_path = "tiny-random-bert"  # keep the files independent of the output path
        model.add_adapter(name, config=config)
        if with_head:
            model.add_classification_head(name, num_labels=3, layers=2, activation_function="tanh")
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if f".adapters.{name}." in pname or pname.startswith(f"heads.{name}."):
                    p.add_(0.1 * torch.randn_like(p))
        model.set_active_adapters(name)
        model.eval()
        with torch.no_grad():
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            output_hidden_states=True, head=name if with_head else None)
        case_dir = os.path.join(out, "bin", name)
        os.makedirs(case_dir, exist_ok=True)
        for f in os.listdir(case_dir):
            os.remove(os.path.join(case_dir, f))
        model.save_adapter(case_dir, name, with_head=with_head)  # default: pytorch_adapter.bin
        expected = {"last_hidden_state": outputs.hidden_states[-1].contiguous()}
        if with_head:
            expected["logits"] = outputs.logits.contiguous()
        save_file(expected, os.path.join(case_dir, "expected.safetensors"))

        # self-check: a fresh model loads the files and reproduces the outputs
        fresh = BertAdapterModel.from_pretrained(base_dir)
        loaded = fresh.load_adapter(case_dir)
        fresh.set_active_adapters(loaded)
        fresh.eval()
        with torch.no_grad():
            again = fresh(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                          output_hidden_states=True, head=loaded if with_head else None)
        delta = (again.hidden_states[-1] - expected["last_hidden_state"]).abs().max().item()
        assert delta < 1e-6, (name, delta)
        print(f"{name}: {sorted(os.listdir(case_dir))} reload max|d|={delta:.1e}")


if __name__ == "__main__":
    main()
