#!/usr/bin/env python3
"""Invertible-adapter golden fixtures (AdapterHub `adapters` 1.3.0: seq_bn_inv, double_seq_bn_inv, NICE and GLOW
blocks) on the tiny BERT, Llama and GPT-2.

    python tools/gen_fixtures_invertible.py [FIXTURES_DIR]   # default tests/fixtures; needs the bases and inputs of
                                                             # gen_fixtures.py and gen_fixtures_decoder.py

Layout (FAMILY: bert, llama, gpt2):

    OUT/invertible/<family>/cases.json   [{"name", "config", "num_params", "tensors": {key: shape}}, ...]
    OUT/invertible/<family>/<case>/      save_adapter(..., use_safetensors=True) + expected.safetensors
    OUT/invertible/<family>/stack/       adapters `inv` (seq_bn_inv) and `plain` (seq_bn) in <name>/, and
                                         expected.safetensors with one output per setup of STACKS
    OUT/invertible/<family>/lm_head/     `inv_lm` (seq_bn_inv) with AdapterHub's masked-LM (bert) or causal-LM
                                         head on AutoAdapterModel, whose head inverts the adapter: its `logits`

expected.safetensors holds `last_hidden_state` (bert) or `logits` and `generated` (the decoders: transformers'
greedy generate without its cache, as gen_fixtures_decoder.py).

Two departures from adapters 1.3.0, both where it has a defect (docs/guide.md, "Differences"):
- its static-head decoders (`LlamaForCausalLM` after `adapters.init`) never invert the adapter before `lm_head`; its
  flex LM heads and its plugin interface (`init_invertible_adapters`) do. The decoder cases register the plugin
  interface's hook (`rev=True` before the output embeddings), as burn-adapters inverts there.
- its `GLOWCouplingBlock.forward` fails (it replaces the `s2` subnetwork by the inputs and slices along the
  sequence). The GLOW case runs FrEIA's coupling, the block AdapterHub's is taken from, on AdapterHub's modules.

Every adapter parameter gets + NOISE * N(0, 1) after add_adapter. Self-check: each saved adapter reloads into a
fresh model with the same output.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import save_file

import fixture_common as C
import gen_fixtures as G
import gen_fixtures_decoder as D
from gen_fixtures_prefix import for_each_family
from reference_fixes import patch_glow

SEED = 2468
NOISE = 0.3

CASES = [
    ("seq_bn_inv", "seq_bn_inv"),
    ("double_seq_bn_inv", "double_seq_bn_inv[reduction_factor=4]"),
    ("nice_gelu_rf4", 'seq_bn_inv[inv_adapter_reduction_factor=4,non_linearity="gelu"]'),
    ("glow", 'seq_bn_inv[inv_adapter="glow",inv_adapter_reduction_factor=4]'),
    ("inv_lora", "seq_bn_inv|lora[r=4,alpha=8]"),
]

STACKS = ["Stack(inv, plain)", "Stack(plain, inv)"]


def invert_before_lm_head(family, model):
    """The plugin interface's `inv_hook_fn` on the output embeddings of a static-head decoder."""
    if family.name == "bert":
        return
    base = model.base_model
    model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: (base.invertible_adapters_forward(args[0], rev=True),) + args[1:]
    )


def load(family):
    model = family.load()
    invert_before_lm_head(family, model)
    return model


def adapter_params(model, name):
    tags = (".invertible_adapters.{}.".format(name), "invertible_adapters.{}.".format(name),
            ".adapters.{}.".format(name), ".loras.{}.".format(name))
    return [(n, p) for n, p in model.named_parameters() if any(n.startswith(t) or t in n for t in tags)]


def expected(family, model):
    out = family.output(model)
    tensors = {"last_hidden_state" if family.name == "bert" else "logits": out}
    if family.name != "bert":
        tensors["generated"] = D.greedy(model, family.inputs)
    return out, tensors


def build_case(family, idx, name, config, out_dir, base_out):
    torch.manual_seed(SEED + idx)
    model = load(family)
    model.add_adapter(name, config=config)
    params = adapter_params(model, name)
    assert any("invertible_adapters" in n for n, _ in params), name
    C.perturb(params, NOISE)
    model.set_active_adapters(name)
    out, tensors = expected(family, model)
    diff_base = G.max_abs(out, base_out)
    assert diff_base > 1e-2, "{}: the adapter hardly changes the output ({})".format(name, diff_base)
    case_dir = os.path.join(out_dir, name)
    C.fresh_dir(case_dir)
    model.save_adapter(case_dir, name, with_head=False, use_safetensors=True)
    save_file(tensors, os.path.join(case_dir, "expected.safetensors"))
    reloaded = load(family)
    assert reloaded.load_adapter(case_dir, set_active=True, use_safetensors=True) == name
    assert G.max_abs(out, family.output(reloaded)) == 0.0, name
    num_params = C.summary_params(model, name)
    print("  {:<18} params={:>6}  |out-base|max={:.3f}".format(name, num_params, diff_base))
    return {"name": name, "config": config, "num_params": num_params,
            "tensors": C.manifest(os.path.join(case_dir, "adapter.safetensors"))}


def build_stack(family, out_dir):
    """Only the setup's first adapter's invertible adapter runs (AdapterHub's `active_setup.first()`)."""
    import adapters.composition as ac

    torch.manual_seed(SEED + 100)
    model = load(family)
    model.add_adapter("inv", config="seq_bn_inv")
    model.add_adapter("plain", config="seq_bn")
    C.perturb(adapter_params(model, "inv") + adapter_params(model, "plain"), NOISE)
    stack_dir = os.path.join(out_dir, "stack")
    C.fresh_dir(stack_dir)
    tensors = {}
    for setup in STACKS:
        first, second = setup[len("Stack("):-1].split(", ")
        model.set_active_adapters(ac.Stack(first, second))
        out, found = expected(family, model)
        tensors.update({"{}/{}".format(setup, k): v for k, v in found.items()})
    for name in ["inv", "plain"]:
        model.save_adapter(os.path.join(stack_dir, name), name, with_head=False, use_safetensors=True)
    save_file(tensors, os.path.join(stack_dir, "expected.safetensors"))
    key = "last_hidden_state" if family.name == "bert" else "logits"
    gap = G.max_abs(tensors["{}/{}".format(STACKS[0], key)], tensors["{}/{}".format(STACKS[1], key)])
    print("  stack: |inv first - plain first|max={:.3f}".format(gap))


def build_lm_head(family, out_dir):
    """A flex language-model head inverts the adapter before its output layer (AdapterHub's own inverse)."""
    from adapters import AutoAdapterModel

    torch.manual_seed(SEED + 200)
    model = AutoAdapterModel.from_pretrained(family.base_dir, attn_implementation="eager")
    model.add_adapter("inv_lm", config="seq_bn_inv")
    if family.name == "bert":
        model.add_masked_lm_head("inv_lm")
    else:
        model.add_causal_lm_head("inv_lm")
    C.perturb(adapter_params(model, "inv_lm"), NOISE)
    tied = model.get_input_embeddings().weight
    with torch.no_grad():  # the base's spread (gen_fixtures_decoder.build_head_case)
        for n, p in model.named_parameters():
            if n.startswith("heads.") and p is not tied:
                p.copy_((1.0 if p.dim() == 1 and n.endswith("weight") else 0.0) + D.BASE_STD * torch.randn_like(p))
    model.set_active_adapters("inv_lm")
    model.active_head = "inv_lm"
    model.eval()
    with torch.no_grad():
        out = model(**family.inputs).logits.detach().contiguous()
        # the same model without the inverse before the head's output layer differs
        base = model.base_model
        plain = model.heads["inv_lm"]
        hidden = base(**family.inputs).last_hidden_state
        for layer in list(plain)[:-1]:
            hidden = layer(hidden)
        uninverted = list(plain)[-1](hidden)
    assert G.max_abs(out, uninverted) > 1e-2, "the head's inverse hardly matters"
    case_dir = os.path.join(out_dir, "lm_head")
    C.fresh_dir(case_dir)
    model.save_adapter(case_dir, "inv_lm", with_head=True, use_safetensors=True)
    save_file({"logits": out}, os.path.join(case_dir, "expected.safetensors"))
    print("  lm_head: |inverted - not|max={:.3f}".format(G.max_abs(out, uninverted)))


def build_family(family, out_dir):
    base_out = family.output(load(family))
    cases = [build_case(family, i, n, c, out_dir, base_out) for i, (n, c) in enumerate(CASES)]
    build_stack(family, out_dir)
    build_lm_head(family, out_dir)
    return cases


def main():
    patch_glow()
    for_each_family("invertible", build_family)


if __name__ == "__main__":
    main()
