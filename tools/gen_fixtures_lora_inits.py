#!/usr/bin/env python3
"""PiSSA and OLoRA golden fixtures (huggingface `peft` 0.21.2, `init_lora_weights`) on the tiny BERT and Llama.

    python tools/gen_fixtures_lora_inits.py [FIXTURES_DIR]   # default tests/fixtures; needs the bases and inputs of
                                                             # gen_fixtures.py and gen_fixtures_decoder.py

Layout:

    OUT/lora_inits/cases.json                         [{"name", "family", "peft_config", "config"}, ...]; "config" is
                                                      the same adapter as burn-adapters' config string
    OUT/lora_inits/<family>_<case>/initial.safetensors    <module>.lora_A [r, in] / .lora_B [out, r] as PEFT started
                                                      them (torch layouts, no "base_model.model." prefix)
    OUT/lora_inits/<family>_<case>/start.safetensors      outputs at the start: "adapted" (the adapter on: equal
                                                      to the base's) and "residual" (adapter off: the residual
                                                      weights alone), eval
    OUT/lora_inits/<family>_<case>/converted/         the adapter after "training" (lora_A, lora_B and DoRA's
                                                      magnitude + NOISE * N(0, 1)) saved with
                                                      path_initial_model_for_weight_conversion: a plain LoRA of
                                                      rank 2r for the original base, with expected.safetensors
                                                      (the trained model's output, last_hidden_state or logits);
                                                      DoRA's magnitudes added (see keep_magnitudes)

Self-checks: at the start the adapted output equals the base's (< 1e-5); the converted adapter on a fresh
original base reproduces the trained model's output (< 1e-5).
"""

import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"

from safetensors.torch import save_file

import fixture_common as C
import gen_fixtures as G
from gen_fixtures_peft import save_peft
from gen_fixtures_peft_vera import load, output, run_cases, start_case

SEED = 2468
NOISE = 0.05

CASES = [
    ("bert", "pissa", dict(target_modules=["query", "value", "intermediate.dense"], r=4, lora_alpha=8,
                           init_lora_weights="pissa"),
     "lora[r=4,alpha=8,intermediate_lora=True,init_weights=pissa]"),
    ("bert", "olora", dict(target_modules=["query", "value", "intermediate.dense"], r=4, lora_alpha=16,
                           init_lora_weights="olora"),
     "lora[r=4,alpha=16,intermediate_lora=True,init_weights=olora]"),
    ("bert", "pissa_rslora_dora", dict(target_modules=["key", "intermediate.dense"], r=3, lora_alpha=6,
                                       use_rslora=True, use_dora=True, init_lora_weights="pissa"),
     "lora[r=3,alpha=6,use_rslora=True,use_dora=True,attn_matrices=[k],intermediate_lora=True,init_weights=pissa]"),
    ("llama", "pissa", dict(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8, init_lora_weights="pissa"),
     "lora[r=4,alpha=8,init_weights=pissa]"),
]


def initial_factors(model):
    tensors = {}
    for name, param in model.named_parameters():
        for part in ("lora_A", "lora_B"):
            marker = ".{}.default.weight".format(part)
            if name.endswith(marker):
                module = name[: -len(marker)][len("base_model.model."):]
                tensors["{}.{}".format(module, part)] = param.detach().clone().contiguous()
    return tensors


def keep_magnitudes(model, converted):
    """PEFT 0.21.2's conversion (`subtract_mutated_init`) keeps only lora_A and lora_B, so a DoRA adapter loses
    its trained magnitude and PEFT starts a fresh one at ‖W + ΔW‖ when it loads the file: another model. The
    magnitudes are added here as PEFT's own DoRA files hold them (burn-adapters writes them too)."""
    from safetensors.torch import load_file

    path = os.path.join(converted, "adapter_model.safetensors")
    tensors = load_file(path)
    suffix = ".lora_magnitude_vector.default.weight"
    for name, param in model.named_parameters():
        if name.endswith(suffix):
            key = name[: -len(suffix)] + ".lora_magnitude_vector"
            assert key not in tensors, key
            tensors[key] = param.detach().clone().contiguous()
    save_file(tensors, path, metadata={"format": "pt"})


def build_case(idx, family, case, kwargs, fixtures):
    from peft import LoraConfig, PeftModel

    name, case_dir, inputs, base_out, model = start_case(
        fixtures, "lora_inits", family, case, LoraConfig(**kwargs), SEED + idx)
    adapted = output(family, model, inputs)
    start_dev = G.max_abs(adapted, base_out)
    assert start_dev < 1e-5, (name, start_dev)
    with model.disable_adapter():
        residual = output(family, model, inputs)
    assert G.max_abs(residual, base_out) > 1e-2, name
    save_file(initial_factors(model), os.path.join(case_dir, "initial.safetensors"))
    save_file({"adapted": adapted, "residual": residual}, os.path.join(case_dir, "start.safetensors"))

    scratch = tempfile.mkdtemp()
    try:
        initial_dir = os.path.join(scratch, "initial")
        model.save_pretrained(initial_dir)
        C.perturb([(n, p) for n, p in model.named_parameters() if ".lora_" in n], NOISE)
        trained = output(family, model, inputs)
        converted = os.path.join(case_dir, "converted")
        save_peft(model, converted, path_initial_model_for_weight_conversion=initial_dir)
    finally:
        shutil.rmtree(scratch)
    if kwargs.get("use_dora"):
        keep_magnitudes(model, converted)
    key = "last_hidden_state" if family == "bert" else "logits"
    save_file({key: trained}, os.path.join(converted, "expected.safetensors"))
    fresh = PeftModel.from_pretrained(load(family, fixtures), converted)
    d = G.max_abs(output(family, fresh, inputs), trained)
    assert d < 1e-5, (name, d)
    print("{:<24} start|d|={:.1e}  converted on the original base |d|={:.1e}".format(name, start_dev, d))


if __name__ == "__main__":
    fixtures = run_cases(build_case, [(family, case, kwargs) for family, case, kwargs, _ in CASES])
    C.write_json(os.path.join(fixtures, "lora_inits", "cases.json"), [
        {"name": "{}_{}".format(family, case), "family": family, "peft_config": kwargs, "config": config}
        for family, case, kwargs, config in CASES])
