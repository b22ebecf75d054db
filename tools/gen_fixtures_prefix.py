#!/usr/bin/env python3
"""Prefix-tuning golden fixtures (AdapterHub `adapters` 1.3.0) on the tiny BERT and the tiny Llama and GPT-2.

    python tools/gen_fixtures_prefix.py [FIXTURES_DIR]   # default tests/fixtures; needs FIXTURES_DIR/base,
                                                         # FIXTURES_DIR/inputs.safetensors and FIXTURES_DIR/decoder

Layout (FAMILY: bert, llama, gpt2; the bases and inputs are the existing fixtures'):

    OUT/prefix/<family>/cases.json              [{"name", "config", "num_params", "tensors": {key: shape}}, ...]
    OUT/prefix/<family>/<case>/                 save_adapter(...): adapter_config.json + pytorch_adapter.bin (AdapterHub
                                                cannot write prefix tuning as safetensors: its state dict holds the
                                                pool once per layer, shared storage) + expected.safetensors
    OUT/prefix/<family>/setups.json             [{"name", "setup", "text", "adapters": [case dirs], "rows"}, ...]
                                                (setup: Python, text: burn-adapters' form)
    OUT/prefix/<family>/setup_<name>.safetensors  `output`: the output with the setup active

expected.safetensors holds, for bert, `last_hidden_state` [2, 7, 32]; for the decoders `logits` [2, 7, vocab] and
`generated` int64 [2, 20] (transformers' greedy generate without its KV cache, as the decoder fixtures) on the
left-padded decoder inputs; `ejected` the same output after `eject_prefix_tuning` (MLP-form cases; not on Llama,
whose grouped-query attention AdapterHub's eject cannot handle).

Every adapter parameter gets + NOISE * N(0, 1) after add_adapter. Self-checks: each saved adapter reloads into a
fresh base with the same outputs; the decoders' float32 logits stay within the decoder fixtures' ROUNDING_BUDGET of
a float64 run.
"""

import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import load_file, save_file

import fixture_common as C
import gen_fixtures as G
import gen_fixtures_decoder as D

SEED = 4321
NOISE = 0.2

CASES = [
    ("prefix_mlp", "prefix_tuning[prefix_length=4,bottleneck_size=8]"),
    ("prefix_flat", "prefix_tuning_flat[prefix_length=4]"),
    ("prefix_gated", 'prefix_tuning[prefix_length=2,bottleneck_size=6,non_linearity="gelu",use_gating=True,'
                     "shared_gating=False,leave_out=[0]]"),
    ("prefix_shared_gate", "prefix_tuning_flat[prefix_length=4,use_gating=True]"),
    ("prefix_lora", "prefix_tuning[prefix_length=2,bottleneck_size=8]|lora[r=4,alpha=8]"),
]

# (name, setup in Python, the same in burn-adapters' text form): compositions AdapterHub allows for prefixes
SETUPS = [
    ("stack", 'Stack("prefix_mlp", "prefix_flat")', "Stack[prefix_mlp, prefix_flat]"),
    ("stack_gated", 'Stack("prefix_gated", "prefix_mlp")', "Stack[prefix_gated, prefix_mlp]"),
    # Prefixes of one length: with different lengths adapters 1.3.0 pads the shorter rows' masks with +1 (its
    # `pad_and_concat` pads the additive mask with 1.0 where it means "masked"), so those rows attend to zero
    # keys; burn-adapters masks them (tests/prefix.rs checks each row against its adapter alone instead).
    ("batch_split", 'BatchSplit("prefix_mlp", "prefix_flat", batch_sizes=[1, 1])',
     "BatchSplit[prefix_mlp, prefix_flat](batch_sizes=1,1)"),
    ("parallel", 'Parallel("prefix_flat", "prefix_shared_gate")', "Parallel[prefix_flat, prefix_shared_gate]"),
]


def prefix_params(model, name):
    tags = (".prefix_tunings.{}.".format(name), ".prefix_gates.{}.".format(name), ".loras.{}.".format(name))
    return [(n, p) for n, p in model.named_parameters() if any(t in n for t in tags)]


class Family:
    def __init__(self, name, fixtures):
        self.name = name
        if name == "bert":
            self.base_dir = os.path.join(fixtures, "base")
            self.inputs = dict(load_file(os.path.join(fixtures, "inputs.safetensors")))
        else:
            self.base_dir = os.path.join(fixtures, "decoder", name, "base")
            self.inputs = dict(load_file(os.path.join(fixtures, "decoder", "inputs.safetensors")))

    def load(self):
        import adapters

        model = G.load_base(self.base_dir) if self.name == "bert" else D.load(self.base_dir)
        adapters.init(model)
        return model

    def output(self, model):
        model.eval()
        with torch.no_grad():
            out = model(**self.inputs)
        if self.name == "bert":
            return out.last_hidden_state.detach().contiguous()
        return out.logits.detach().contiguous()

    def expected(self, model, label):
        """The fixture's tensors for `model`; `label` names the case (or setup) for messages."""
        out = self.output(model)
        tensors = {"last_hidden_state" if self.name == "bert" else "logits": out}
        if self.name != "bert":
            # The rounding check runs each row without its padding; a gate averages over the padding too, so
            # gated cases are checked on the unpadded rows only.
            full = self.inputs["attention_mask"].bool().all(dim=1) if "gat" in label else slice(None)
            rows = {k: v[full] for k, v in self.inputs.items()}
            D.check_rounding(label, model, rows, out[full])
            tensors["generated"] = D.greedy(model, self.inputs)
        return out, tensors


def for_each_family(group, build):
    """The fixtures directory from argv (default tests/fixtures), deterministic single-threaded torch, then for each
    family a fresh OUT/<group>/<family> and `build(family, out_dir)`, whose case list becomes its cases.json."""
    here = os.path.dirname(os.path.abspath(__file__))
    fixtures = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures"))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for name in ["bert", "llama", "gpt2"]:
        print(name)
        family = Family(name, fixtures)
        out_dir = os.path.join(fixtures, group, name)
        C.fresh_dir(out_dir)
        C.write_json(os.path.join(out_dir, "cases.json"), build(family, out_dir))


def record_case(family, model, name, out_dir, base_out, output, safetensors):
    """Saves `model`'s active adapter `name` to OUT/<name> with expected.safetensors (`output(model)` under the
    family's key, and for the decoders `generated`), checks that the adapter changes the output and that a fresh base
    reloads it with the same output; returns |out - base|max."""
    out = output(model)
    tensors = {"last_hidden_state" if family.name == "bert" else "logits": out}
    if family.name != "bert":
        tensors["generated"] = D.greedy(model, family.inputs)
    diff_base = G.max_abs(out, base_out)
    assert diff_base > 1e-2, "{}: the adapter hardly changes the output ({})".format(name, diff_base)
    case_dir = os.path.join(out_dir, name)
    C.fresh_dir(case_dir)
    model.save_adapter(case_dir, name, with_head=False, use_safetensors=safetensors)
    save_file(tensors, os.path.join(case_dir, "expected.safetensors"))
    reloaded = family.load()
    assert reloaded.load_adapter(case_dir, set_active=True, use_safetensors=safetensors) == name
    assert G.max_abs(out, output(reloaded)) == 0.0, name
    return diff_base


def build_case(family, idx, name, config, out_dir, base_out):
    torch.manual_seed(SEED + idx)
    model = family.load()
    model.add_adapter(name, config=config)
    C.perturb(prefix_params(model, name), NOISE)
    model.set_active_adapters(name)
    out, tensors = family.expected(model, name)
    diff_base = G.max_abs(out, base_out)
    assert diff_base > 1e-2, "{}: the adapter hardly changes the output ({})".format(name, diff_base)
    case_dir = os.path.join(out_dir, name)
    C.fresh_dir(case_dir)
    model.save_adapter(case_dir, name, with_head=False)
    num_params = C.summary_params(model, name)
    manifest = {k: list(v.shape) for k, v in sorted(torch.load(os.path.join(case_dir, "pytorch_adapter.bin")).items())}
    # adapters 1.3.0's eject fails with grouped-query attention (it views the prefix as hidden_size wide per layer
    # instead of kv_heads * head_dim): the Llama cases have no `ejected`
    if config.startswith("prefix_tuning[") and family.name != "llama":
        model.eject_prefix_tuning(name)
        ejected = family.output(model)
        assert G.max_abs(ejected, out) < 1e-5, "{}: eject changed the output".format(name)
        tensors["ejected"] = ejected
    save_file(tensors, os.path.join(case_dir, "expected.safetensors"))

    reloaded = family.load()
    assert reloaded.load_adapter(case_dir, set_active=True) == name
    d = G.max_abs(out, family.output(reloaded))
    assert d == 0.0, "{}: reload changed the output by {}".format(name, d)
    print("  {:<20} params={:>6}  |out-base|max={:.3f}".format(name, num_params, diff_base))
    return {"name": name, "config": config, "num_params": num_params, "tensors": manifest}


def build_setup(family, name, setup_text, text, out_dir):
    from adapters.composition import BatchSplit, Parallel, Stack  # noqa: F401  (eval'd below)

    setup = eval(setup_text)
    names = sorted(setup.flatten())
    model = family.load()
    for adapter in names:
        model.load_adapter(os.path.join(out_dir, adapter))
    model.set_active_adapters(setup)
    out = family.output(model)
    save_file({"output": out}, os.path.join(out_dir, "setup_" + name + ".safetensors"))
    print("  {:<20} rows={}".format(name, out.shape[0]))
    return {"name": name, "setup": setup_text, "text": text, "adapters": names, "rows": out.shape[0]}


def build_family(family, out_dir):
    base_out = family.output(family.load())
    cases = [build_case(family, i, n, c, out_dir, base_out) for i, (n, c) in enumerate(CASES)]
    setups = [build_setup(family, n, s, a, out_dir) for n, s, a in SETUPS]
    C.write_json(os.path.join(out_dir, "setups.json"), setups)
    return cases


def main():
    for_each_family("prefix", build_family)


if __name__ == "__main__":
    main()
