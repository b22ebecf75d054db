#!/usr/bin/env python3
"""Prompt-tuning golden fixtures (AdapterHub `adapters` 1.3.0) on the tiny BERT.

    python tools/gen_fixtures_prompt.py [FIXTURES_DIR]   # default tests/fixtures; needs FIXTURES_DIR/base,
                                                         # FIXTURES_DIR/inputs.safetensors and FIXTURES_DIR/prefix/bert

adapters 1.3.0 has prompt tuning for encoders only (its Llama, Mistral and GPT-2 set `support_prompt_tuning = False`);
burn-adapters' decoders are checked against the model itself (a prompt of token embeddings is those tokens).

Layout:

    OUT/prompt/bert/cases.json          [{"name", "config", "num_params", "tensors": {key: shape}}, ...]
    OUT/prompt/bert/<case>/             save_adapter(..., use_safetensors=True; .bin for the union with prefix
                                        tuning) + expected.safetensors
    OUT/prompt/bert/setups.json         [{"name", "setup", "text", "adapters": [dirs below FIXTURES_DIR]}, ...]
    OUT/prompt/bert/setup_<name>.safetensors

AdapterHub returns the prompt's positions too ([batch, prompt + seq, hidden]); every `last_hidden_state` here is
the input's positions of that output ([2, 7, 32]: after the prompt, or the first token and those after the prompt
for `prefix_after_bos`), which is what burn-adapters returns. `full` holds the whole output.

Every prompt embedding gets + NOISE * N(0, 1) after add_adapter (LoRA and prefix parameters of unions too).
Self-check: each saved adapter reloads into a fresh base with the same output.
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import load_file, save_file

import fixture_common as C
import gen_fixtures as G

SEED = 8642
NOISE = 1.0

CASES = [
    ("prompt", "prompt_tuning[prompt_length=3]"),
    ("prompt_after_bos", 'prompt_tuning[prompt_length=2,combine="prefix_after_bos"]'),
    ("prompt_lora", "prompt_tuning[prompt_length=2]|lora[r=4,alpha=8]"),
    ("prompt_prefix", "prompt_tuning[prompt_length=4]|prefix_tuning_flat[prefix_length=2]"),
]

# (name, setup in Python, the same in burn-adapters' text form, adapter directories below FIXTURES_DIR)
SETUPS = [
    ("stack_prefix", 'Stack("prompt", "prefix_mlp")', "Stack[prompt, prefix_mlp]",
     ["prompt/bert/prompt", "prefix/bert/prefix_mlp"]),
    ("stack_after_bos_gated", 'Stack("prompt_after_bos", "prefix_gated")', "Stack[prompt_after_bos, prefix_gated]",
     ["prompt/bert/prompt_after_bos", "prefix/bert/prefix_gated"]),
]


def prompt_params(model, name):
    tags = (".prompt_tunings.{}.".format(name), ".prefix_tunings.{}.".format(name), ".loras.{}.".format(name))
    return [(n, p) for n, p in model.named_parameters() if any(t in n for t in tags)]


def input_positions(full, length, after_bos):
    """The input's positions of an output with a prompt of `length`."""
    if after_bos:
        return torch.cat([full[:, :1], full[:, 1 + length:]], dim=1).contiguous()
    return full[:, length:].contiguous()


class Bert:
    def __init__(self, fixtures):
        self.base_dir = os.path.join(fixtures, "base")
        self.inputs = dict(load_file(os.path.join(fixtures, "inputs.safetensors")))

    def load(self):
        import adapters

        model = G.load_base(self.base_dir)
        adapters.init(model)
        return model

    def full(self, model):
        model.eval()
        with torch.no_grad():
            return model(**self.inputs).last_hidden_state.detach().contiguous()


def prompt_of(model, name):
    config = model.adapters_config.match(name, config_type=__import__("adapters").PromptTuningConfig)
    return config.prompt_length, config.combine == "prefix_after_bos"


def build_case(bert, idx, name, config, out_dir, base_out):
    torch.manual_seed(SEED + idx)
    model = bert.load()
    model.add_adapter(name, config=config)
    C.perturb(prompt_params(model, name), NOISE)
    model.set_active_adapters(name)
    full = bert.full(model)
    length, after_bos = prompt_of(model, name)
    assert full.shape[1] == base_out.shape[1] + length
    out = input_positions(full, length, after_bos)
    diff_base = G.max_abs(out, base_out)
    assert diff_base > 1e-2, "{}: the prompt hardly changes the output ({})".format(name, diff_base)
    case_dir = os.path.join(out_dir, name)
    C.fresh_dir(case_dir)
    # adapters 1.3.0 writes prefix tuning only as pytorch_adapter.bin (see gen_fixtures_prefix.py)
    safetensors = "prefix_tuning" not in config
    model.save_adapter(case_dir, name, with_head=False, use_safetensors=safetensors)
    save_file({"last_hidden_state": out, "full": full}, os.path.join(case_dir, "expected.safetensors"))
    reloaded = bert.load()
    assert reloaded.load_adapter(case_dir, set_active=True, use_safetensors=safetensors) == name
    assert G.max_abs(full, bert.full(reloaded)) == 0.0, name
    num_params = C.summary_params(model, name)
    print("  {:<20} params={:>6}  |out-base|max={:.3f}".format(name, num_params, diff_base))
    if safetensors:
        tensors = C.manifest(os.path.join(case_dir, "adapter.safetensors"))
    else:
        saved = torch.load(os.path.join(case_dir, "pytorch_adapter.bin"))
        tensors = {k: list(v.shape) for k, v in sorted(saved.items())}
    return {"name": name, "config": config, "num_params": num_params, "tensors": tensors}


def build_setup(bert, fixtures, name, setup_text, text, dirs, out_dir):
    from adapters.composition import Stack  # noqa: F401  (eval'd below)

    model = bert.load()
    for d in dirs:
        path = os.path.join(fixtures, d)
        model.load_adapter(path, use_safetensors=os.path.exists(os.path.join(path, "adapter.safetensors")))
    setup = eval(setup_text)
    model.set_active_adapters(setup)
    length, after_bos = prompt_of(model, setup.first())
    out = input_positions(bert.full(model), length, after_bos)
    save_file({"output": out}, os.path.join(out_dir, "setup_" + name + ".safetensors"))
    print("  {:<20} {}".format(name, text))
    return {"name": name, "setup": setup_text, "text": text, "adapters": dirs}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    fixtures = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures"))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    bert = Bert(fixtures)
    out_dir = os.path.join(fixtures, "prompt", "bert")
    C.fresh_dir(out_dir)
    base_out = bert.full(bert.load())
    print("bert")
    cases = [build_case(bert, i, n, c, out_dir, base_out) for i, (n, c) in enumerate(CASES)]
    C.write_json(os.path.join(out_dir, "cases.json"), cases)
    setups = [build_setup(bert, fixtures, n, s, t, d, out_dir) for n, s, t, d in SETUPS]
    C.write_json(os.path.join(out_dir, "setups.json"), setups)


if __name__ == "__main__":
    main()
