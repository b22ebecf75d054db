#!/usr/bin/env python3
"""Decoder golden fixtures: tiny random Llama, Mistral, Qwen2 and GPT-2 causal LMs (transformers 4.57.6) with
AdapterHub `adapters` 1.3.0 methods on them.

    python tools/gen_fixtures_decoder.py [OUT_DIR] [--families gpt2 ...]   # default tests/fixtures/decoder, all

Layout:

    OUT/inputs.safetensors              input_ids, attention_mask  int64 [2, 7]; row 1 is left-padded by 2
    OUT/<family>/base/                  config.json + model.safetensors (save_pretrained, eager attention)
    OUT/<family>/expected.safetensors   logits f32 [2, 7, vocab] of the base model
    OUT/<family>/cases/cases.json       [{"name", "config", "noise", "num_params", "tensors": {key: shape}}, ...]
    OUT/<family>/cases/<case>/          save_adapter(..., with_head=False, use_safetensors=True) + expected.safetensors
                                        (logits with the adapter active, eval, no_grad)

    OUT/<family>/peft/<case>/           a PEFT 0.21.2 LoRA (PeftModel.save_pretrained, task CAUSAL_LM) + expected.safetensors
    OUT/<family>/peft/cases.json        [{"name", "lora_config", "noise", "tensors"}, ...]

    OUT/inputs_right.safetensors        the same tokens with row 1 padded on the right (AdapterHub's decoder heads
                                        read the token at "count of non-pad ids - 1", right only for right padding)
    OUT/<family>/heads/<case>/          llama and gpt2: an adapter with a prediction head from AutoAdapterModel,
                                        save_adapter(with_head=True) + expected.safetensors (`logits` of the head on
                                        inputs_right: [2, 3] classification, [2, 7, vocab] causal_lm)

    OUT/<family>/fusion/                llama and gpt2: adapters fa and fb (seq_bn) and their dynamic AdapterFusion
                                        (save_adapter / save_adapter_fusion) + expected.safetensors (`logits` with
                                        Fuse("fa", "fb") active, on inputs.safetensors)

Each expected.safetensors of the base and the AdapterHub cases also holds `generated` int64 [2, 20]: transformers' greedy `generate` (max_new_tokens 20,
eos 2, pad 0) after the left-padded prompts, without the prompt; a row is 0 after its eos; and `loss` f32 [1],
transformers' causal-LM loss with the input ids as labels (-100 at padding).

The families cover what a host has to get right: Llama with "llama3" rope scaling and untied embeddings, Llama
with "linear" rope scaling, attention and MLP biases and tied embeddings, Mistral with a sliding window (4) shorter
than the input and a head_dim that is not hidden_size / num_attention_heads, Qwen2 with q/k/v biases and tied
embeddings. All have grouped-query attention (4 query heads, 2 key/value heads). GPT-2 (learned positions, the fused
`c_attn` Conv1D, tied embeddings, scores scaled by the inverse layer index) runs its own cases: LoRA on some and on
all of the fused query/key/value blocks (AdapterHub's LoRAMergedLinear), IA3 there, and PEFT LoRAs on `c_attn`
(fan_in_fan_out).

Every weight is drawn with a larger spread than transformers' init (std 0.12; norms 1 + 0.1 N(0,1)) so that
differences show in the logits, and every adapter parameter gets + NOISE * N(0, 1) after add_adapter. The float32
logits of every fixture are checked against a float64 run of the same model (ROUNDING_BUDGET). Self-check:
each saved adapter is reloaded into a fresh base and must reproduce its logits exactly.
"""

import argparse
import copy
import os
import shutil

# save_pretrained otherwise asks the Hub whether base_model_name_or_path has a config.json (no network)
os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

import fixture_common as C
from gen_fixtures_peft import save_peft

SEED = 2468
NOISE = 0.2
BASE_STD = 0.12
VOCAB = 61
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    initializer_range=0.2,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

FAMILIES = {
    "llama": lambda: LlamaConfig(
        **COMMON,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    "llama_linear_tied": lambda: LlamaConfig(
        **COMMON,
        tie_word_embeddings=True,
        attention_bias=True,
        mlp_bias=True,
        rope_theta=500.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
    ),
    "mistral": lambda: MistralConfig(**COMMON, tie_word_embeddings=False, sliding_window=4, head_dim=16),
    "qwen2": lambda: Qwen2Config(**COMMON, tie_word_embeddings=True, use_sliding_window=False),
    "gpt2": lambda: GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=48,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, scale_attn_by_inverse_layer_idx=True,
        initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    ),
}

# (case name, config string); every family runs every case
CASES = [
    ("seq_bn", "seq_bn[reduction_factor=4]"),
    ("double_seq_bn", "double_seq_bn[reduction_factor=4]"),
    ("par_bn", "par_bn[reduction_factor=4]"),
    ("lora_all", 'lora[r=4,alpha=8,attn_matrices=["q","k","v"],intermediate_lora=True,output_lora=True]'),
    ("ia3", "ia3[output_lora=True]"),
]

GPT2_CASES = [
    ("seq_bn", "seq_bn[reduction_factor=4]"),
    ("par_bn", "par_bn[reduction_factor=4]"),
    ("lora_qv", "lora[r=4,alpha=8]"),
    ("lora_all", 'lora[r=4,alpha=8,attn_matrices=["q","k","v"],intermediate_lora=True,output_lora=True]'),
    ("lora_k_mlp", 'lora[r=2,alpha=4,attn_matrices=["k"],output_lora=True]'),
    ("ia3", "ia3[output_lora=True]"),
]

# PEFT LoRAs on the projections this crate's decoder sites wrap (names as PEFT's target_modules)
PEFT_CASES = [
    ("peft_qv", dict(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8, lora_dropout=0.0)),
    ("peft_qkv_mlp", dict(target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"], r=4,
                          lora_alpha=8, lora_dropout=0.0, use_rslora=True)),
    # the projections AdapterHub 1.3.0 does not wrap (this crate's `attn_matrices` "o" and `gate_lora`)
    ("peft_o_gate", dict(target_modules=["q_proj", "o_proj", "gate_proj"], r=4, lora_alpha=8, lora_dropout=0.0)),
]
GPT2_PEFT_CASES = [
    ("peft_c_attn", dict(target_modules=["c_attn"], r=4, lora_alpha=8, lora_dropout=0.0, fan_in_fan_out=True)),
    ("peft_all", dict(target_modules=["c_attn", "c_fc", "mlp.c_proj"], r=4, lora_alpha=8, lora_dropout=0.0,
                      fan_in_fan_out=True, use_rslora=True)),
    # "c_proj" matches both attn.c_proj (attention output) and mlp.c_proj
    ("peft_c_proj", dict(target_modules=["c_proj"], r=4, lora_alpha=8, lora_dropout=0.0, fan_in_fan_out=True)),
]


# prediction heads on AutoAdapterModel (LlamaAdapterModel, GPT2AdapterModel), for these families
HEAD_FAMILIES = ["llama", "gpt2"]
HEAD_CASES = [
    ("cls_seq_bn", "seq_bn[reduction_factor=4]", "classification"),
    ("lm_lora", "lora[r=4,alpha=8]", "causal_lm"),
]


def right_padded(inputs):
    ids, mask = inputs["input_ids"].clone(), inputs["attention_mask"].clone()
    for b in range(ids.shape[0]):
        real = mask[b].bool()
        n = int(real.sum())
        ids[b] = torch.cat([ids[b][real], torch.full((ids.shape[1] - n,), COMMON["pad_token_id"])])
        mask[b] = torch.cat([torch.ones(n, dtype=mask.dtype), torch.zeros(ids.shape[1] - n, dtype=mask.dtype)])
    return {"input_ids": ids.contiguous(), "attention_mask": mask.contiguous()}


def build_head_case(idx, name, config, kind, base_dir, out_dir, inputs):
    from adapters import AutoAdapterModel

    torch.manual_seed(SEED + 300 + idx)
    model = AutoAdapterModel.from_pretrained(base_dir, attn_implementation="eager")
    model.add_adapter(name, config=config)
    if kind == "classification":
        model.add_classification_head(name, num_labels=3)
    else:
        model.add_causal_lm_head(name)
    tied = model.get_input_embeddings().weight
    C.perturb([(n, p) for n, p in model.named_parameters() if ".{}.".format(name) in n], NOISE)
    with torch.no_grad():  # the base's spread (see spread_weights), not transformers' wider init
        for n, p in model.named_parameters():
            if n.startswith("heads.") and p is not tied:
                p.copy_((1.0 if p.dim() == 1 and n.endswith("weight") else 0.0) + BASE_STD * torch.randn_like(p))
    model.set_active_adapters(name)
    model.active_head = name
    model.eval()
    with torch.no_grad():
        out = model(**inputs).logits.detach().contiguous()
        # right padding leaves no row without a key, so the float64 run needs no unpadding
        err = (copy.deepcopy(model).double()(**inputs).logits - out.double()).abs().max().item()
    assert err <= ROUNDING_BUDGET, "{}: float32 strays {:.2e} from float64".format(name, err)
    case_dir = os.path.join(out_dir, "heads", name)
    C.fresh_dir(case_dir)
    model.save_adapter(case_dir, name, with_head=True, use_safetensors=True)
    save_file({"logits": out}, os.path.join(case_dir, "expected.safetensors"))
    fresh = AutoAdapterModel.from_pretrained(base_dir, attn_implementation="eager")
    loaded = fresh.load_adapter(case_dir, set_active=True, use_safetensors=True)
    fresh.active_head = loaded
    with torch.no_grad():
        again = fresh.eval()(**inputs).logits
    assert C.G.max_abs(out, again) == 0.0, "{}: the reloaded head differs".format(name)
    print("  {:<16} head {:<14} logits {}  f32-f64={:.1e}".format(name, kind, tuple(out.shape), err))


def build_fusion_case(base_dir, out_dir, inputs, base_out):
    import adapters
    from adapters.composition import Fuse

    fusion_dir = os.path.join(out_dir, "fusion")
    C.fresh_dir(fusion_dir)
    model = load(base_dir)
    adapters.init(model)
    for i, name in enumerate(["fa", "fb"]):
        torch.manual_seed(SEED + 400 + i)
        model.add_adapter(name, config="seq_bn[reduction_factor=4]")
        C.perturb(C.method_params(model, name), NOISE)
    model.add_adapter_fusion(Fuse("fa", "fb"), "dynamic")
    torch.manual_seed(SEED + 402)
    C.perturb(C.fusion_params(model, "fa,fb"), NOISE)
    model.set_active_adapters(Fuse("fa", "fb"))
    model.eval()
    out = logits(model, inputs)
    err = check_rounding("fusion", model, inputs, out)
    assert C.G.max_abs(out, base_out) > 1e-2
    for name in ["fa", "fb"]:
        model.save_adapter(os.path.join(fusion_dir, name), name, with_head=False, use_safetensors=True)
    model.save_adapter_fusion(os.path.join(fusion_dir, "fusion"), "fa,fb", use_safetensors=True)
    save_file({"logits": out}, os.path.join(fusion_dir, "expected.safetensors"))
    print("  {:<16} Fuse(fa, fb) dynamic  f32-f64={:.1e}".format("fusion", err))


def cases_of(family):
    return (GPT2_CASES, GPT2_PEFT_CASES) if family == "gpt2" else (CASES, PEFT_CASES)


def make_inputs():
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(3, VOCAB, (2, 7), generator=g, dtype=torch.int64)
    mask = torch.ones(2, 7, dtype=torch.int64)
    mask[1, :2] = 0
    ids[1, :2] = COMMON["pad_token_id"]
    return {"input_ids": ids, "attention_mask": mask}


# The float32 references must sit this close to a float64 run of the same model (at real tokens), so that float32
# rounding -- ours or the reference's -- stays well below the 1e-5 tolerance of the parity tests.
ROUNDING_BUDGET = 2.5e-6


def rounding_error(model, inputs, out):
    """max |out - float64 run| over the real tokens; rows run without their left padding (and with their
    positions), since padded rows turn the float64 mask into NaN."""
    m64 = copy.deepcopy(model).double().eval()
    worst = 0.0
    for b in range(inputs["input_ids"].shape[0]):
        real = inputs["attention_mask"][b].bool()
        ids = inputs["input_ids"][b][real][None]
        positions = torch.nonzero(real).flatten()[None]
        with torch.no_grad():
            ref = m64(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions).logits[0]
        worst = max(worst, (ref - out[b][real].double()).abs().max().item())
    return worst


def check_rounding(label, model, inputs, out):
    err = rounding_error(model, inputs, out)
    assert err <= ROUNDING_BUDGET, "{}: float32 strays {:.2e} from float64: make the fixture tamer".format(label, err)
    return err


def spread_weights(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or (".ln_" in name or name.startswith("ln_")) and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(BASE_STD * torch.randn_like(p))


def load(base_dir):
    return AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager").eval()


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits.detach().contiguous()


def lm_loss(model, inputs):
    """transformers' causal-LM loss with labels = input_ids, -100 at padding (shifted inside the model)."""
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        return model(**inputs, labels=labels).loss.detach().reshape(1).contiguous()


GENERATED = 20


def greedy(model, inputs):
    """GENERATED greedy tokens per row after the prompt (a row that emits eos 2 is padded with 0 after it).

    Without transformers' KV cache: with it, adapters 1.3.0 applies the active adapters to the prompt only (it
    warns "There are adapters available but none are activated for the forward pass" and the later tokens
    differ from its own uncached generation, for bottlenecks and LoRA alike). Without adapters both agree.
    """
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=GENERATED, do_sample=False, pad_token_id=0, eos_token_id=2,
            min_new_tokens=0, use_cache=False,
        )
    new = out[:, inputs["input_ids"].shape[1]:]
    pad = torch.zeros(new.shape[0], GENERATED - new.shape[1], dtype=new.dtype)
    return torch.cat([new, pad], dim=1).contiguous()


def build_base(family, out_dir, inputs):
    torch.manual_seed(SEED)
    config = FAMILIES[family]()
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    spread_weights(model)
    base_dir = os.path.join(out_dir, "base")
    model.save_pretrained(base_dir, safe_serialization=True)
    for extra in ("generation_config.json",):
        path = os.path.join(base_dir, extra)
        if os.path.exists(path):
            os.remove(path)
    out = logits(load(base_dir), inputs)
    assert C.G.max_abs(out, logits(model, inputs)) == 0.0
    check_rounding(family, model, inputs, out)
    tokens = greedy(model, inputs)
    with torch.no_grad():
        cached = model.generate(**inputs, max_new_tokens=GENERATED, do_sample=False, pad_token_id=0, eos_token_id=2)
    assert torch.equal(cached[:, inputs["input_ids"].shape[1]:], tokens[:, : cached.shape[1] - 7]), "cache changes the base"
    save_file({"logits": out, "generated": tokens, "loss": lm_loss(model, inputs)},
              os.path.join(out_dir, "expected.safetensors"))
    return base_dir, out


def build_case(idx, name, config, base_dir, out_dir, inputs, base_out):
    import adapters

    torch.manual_seed(SEED + 100 + idx)
    model = load(base_dir)
    adapters.init(model)
    model.add_adapter(name, config=config)
    C.perturb(C.method_params(model, name), NOISE)
    model.set_active_adapters(name)
    model.eval()
    out = logits(model, inputs)
    err = check_rounding(name, model, inputs, out)
    case_dir = os.path.join(out_dir, "cases", name)
    C.fresh_dir(case_dir)
    model.save_adapter(case_dir, name, with_head=False, use_safetensors=True)
    save_file({"logits": out, "generated": greedy(model, inputs), "loss": lm_loss(model, inputs)},
              os.path.join(case_dir, "expected.safetensors"))

    reloaded = load(base_dir)
    adapters.init(reloaded)
    loaded = reloaded.load_adapter(case_dir, set_active=True, use_safetensors=True)
    assert loaded == name, loaded
    d = C.G.max_abs(out, logits(reloaded.eval(), inputs))
    assert d == 0.0, "{}: reload changed the logits by {}".format(name, d)
    diff_base = C.G.max_abs(out, base_out)
    assert diff_base > 1e-2, "{}: the adapter hardly changes the logits ({})".format(name, diff_base)
    print("  {:<16} params={:>6}  |out-base|max={:.3f}  f32-f64={:.1e}".format(
        name, C.summary_params(model, name), diff_base, err))
    return {
        "name": name,
        "config": config,
        "noise": NOISE,
        "num_params": C.summary_params(model, name),
        "tensors": C.manifest(os.path.join(case_dir, "adapter.safetensors")),
    }


def build_peft_case(idx, name, kwargs, base_dir, out_dir, inputs, base_out):
    from peft import LoraConfig, PeftModel, get_peft_model

    case_dir = os.path.join(out_dir, "peft", name)
    C.fresh_dir(case_dir)
    base = load(base_dir)
    base.name_or_path = "tiny-random-decoder"
    torch.manual_seed(SEED + 200 + idx)
    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", **kwargs))
    C.perturb([(n, p) for n, p in model.named_parameters() if ".lora_" in n], NOISE)
    model.eval()
    out = logits(model, inputs)
    assert C.G.max_abs(out, base_out) > 1e-2, name
    err = check_rounding(name, model, inputs, out)
    save_peft(model, case_dir)
    save_file({"logits": out}, os.path.join(case_dir, "expected.safetensors"))
    fresh = PeftModel.from_pretrained(load(base_dir), case_dir).eval()
    assert C.G.max_abs(logits(fresh, inputs), out) < C.RELOAD_TOL, name
    print("  {:<16} PEFT  |out-base|max={:.3f}  f32-f64={:.1e}".format(name, C.G.max_abs(out, base_out), err))
    return {"name": name, "lora_config": kwargs, "noise": NOISE,
            "tensors": C.manifest(os.path.join(case_dir, "adapter_model.safetensors"))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("out_dir", nargs="?", default=os.path.join(here, "..", "tests", "fixtures", "decoder"))
    ap.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                    help="regenerate only these families (the others' directories are kept)")
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out_dir)
    if set(args.families) == set(FAMILIES) and os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    inputs = make_inputs()
    save_file(inputs, os.path.join(out_dir, "inputs.safetensors"))
    inputs_right = right_padded(inputs)
    save_file(inputs_right, os.path.join(out_dir, "inputs_right.safetensors"))
    for family in args.families:
        print(family)
        family_dir = os.path.join(out_dir, family)
        if os.path.isdir(family_dir):
            shutil.rmtree(family_dir)
        os.makedirs(family_dir)
        family_cases, family_peft = cases_of(family)
        base_dir, base_out = build_base(family, family_dir, inputs)
        cases = [
            build_case(idx, name, config, base_dir, family_dir, inputs, base_out)
            for idx, (name, config) in enumerate(family_cases)
        ]
        C.write_json(os.path.join(family_dir, "cases", "cases.json"), cases)
        peft = [
            build_peft_case(idx, name, kwargs, base_dir, family_dir, inputs, base_out)
            for idx, (name, kwargs) in enumerate(family_peft)
        ]
        C.write_json(os.path.join(family_dir, "peft", "cases.json"), peft)
        if family in HEAD_FAMILIES:
            for idx, (name, config, kind) in enumerate(HEAD_CASES):
                build_head_case(idx, name, config, kind, base_dir, family_dir, inputs_right)
            build_fusion_case(base_dir, family_dir, inputs, base_out)


if __name__ == "__main__":
    main()
