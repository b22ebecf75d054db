#!/usr/bin/env bash
# Seed corpus for a fuzz target: fuzz/seeds.sh TARGET DIR (run from the repository root).
set -euo pipefail
target=$1 dir=$2
mkdir -p "$dir"
fx=tests/fixtures
case "$target" in
  adapter_file)
    # a config selector byte, then a real adapter file
    { printf '\000'; cat $fx/bn/seq_bn/adapter.safetensors; } > "$dir/seq_bn"
    { printf '\001'; cat $fx/lora/union_seq_bn_lora/adapter.safetensors; } > "$dir/union"
    { printf '\004'; cat $fx/invertible/bert/glow/adapter.safetensors; } > "$dir/glow"
    { printf '\005'; cat $fx/vera/bert/dvora/adapter.safetensors; } > "$dir/dvora"
    { printf '\006'; cat $fx/compacter/bert/compacter_pp_full/adapter.safetensors; } > "$dir/compacter"
    { printf '\007'; cat $fx/compacter/bert/compacter_shared_weights/adapter.safetensors; } > "$dir/compacter_shared"
    # a prefix tuning's tensors (the fixture holds AdapterHub's .bin): zeros of the names and shapes
    # its cases.json lists, without the per-layer copies of the pool
    python3 - "$dir/prefix" <<'PY'
import json, struct, sys
case = next(c for c in json.load(open("tests/fixtures/prefix/bert/cases.json")) if c["name"] == "prefix_gated")
header, offset = {}, 0
for key, shape in case["tensors"].items():
    if ".pool." in key:
        continue
    size = 4
    for d in shape:
        size *= d
    header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
    offset += size
text = json.dumps(header).encode()
with open(sys.argv[1], "wb") as f:
    f.write(b"\003" + struct.pack("<Q", len(text)) + text + bytes(offset))
PY
    ;;
  config_files)
    # a file selector byte (0 adapter, 1 head, 2 fusion config), then a real file
    { printf '\000'; cat $fx/bin/seq_bn_head/adapter_config.json; } > "$dir/adapter"
    { printf '\001'; cat $fx/bin/seq_bn_head/head_config.json; } > "$dir/head"
    { printf '\002'; cat $fx/composition/fuse_dynamic/fusion/adapter_fusion_config.json; } > "$dir/fusion" ;;
  pytorch_file)
    # real archives, hostile ones, and their bare pickles
    cp $fx/bin/ln_before/pytorch_adapter.bin "$dir/ln_before"
    # prefix tuning: the pool's storages shared by several keys
    cp $fx/prefix/bert/prefix_gated/pytorch_adapter.bin "$dir/prefix_gated"
    for case in system_call int_entry nested_dict; do
      cp $fx/hostile/$case/pytorch_adapter.bin "$dir/$case"
    done
    python3 - "$dir" <<'PY'
import sys, zipfile
z = zipfile.ZipFile("tests/fixtures/bin/ln_before/pytorch_adapter.bin")
name = next(n for n in z.namelist() if n.endswith("data.pkl"))
open(sys.argv[1] + "/data.pkl", "wb").write(z.read(name))
PY
    ;;
  config_string)
    printf 'seq_bn[reduction_factor=8,leave_out=[0]]|lora[r=4]' > "$dir/union"
    printf 'seq_bn_inv[inv_adapter=glow,inv_adapter_reduction_factor=4]' > "$dir/invertible"
    printf 'mtl_lora[n_up_projection=3,task_specific_matrix_type=linear]|seq_bn' > "$dir/mtl_lora"
    printf 'dora[r=4,use_rslora=true]|seq_bn' > "$dir/dora"
    printf 'unipelt' > "$dir/unipelt" ;;
  setup_text)
    printf 'Stack[a, Average[b, c](weights=0.3,0.7)]' > "$dir/stack"
    printf 'Stack[MultiTask[a, Stack[b, c]](task_ids=1,0,1)]' > "$dir/multi_task" ;;
  model_config)
    # a selector byte (0 BERT config, 1 decoder config, 2 shard index, 3 GPT-2 config), then a real file
    { printf '\000'; cat $fx/base/config.json; } > "$dir/bert"
    { printf '\001'; cat $fx/decoder/llama/base/config.json; } > "$dir/llama"
    { printf '\001'; cat $fx/decoder/mistral/base/config.json; } > "$dir/mistral"
    { printf '\003'; cat $fx/decoder/gpt2/base/config.json; } > "$dir/gpt2"
    { printf '\002'; printf '{"metadata": {}, "weight_map": {"lm_head.weight": "model.safetensors", "model.norm.weight": "config.json"}}'; } > "$dir/index" ;;
  peft_file)
    # a selector byte (bit 0: the config is fuzzed or the weights; (byte / 2) % 3: beside PEFT's DoRA,
    # VeRA or IA3 fixture), then that file of a real PEFT adapter
    { printf '\000'; cat $fx/peft/peft_dora_qv/adapter_config.json; } > "$dir/config"
    { printf '\000'; cat $fx/peft/peft_lora_rslora/adapter_config.json; } > "$dir/rslora"
    { printf '\001'; cat $fx/peft/peft_dora_qv/adapter_model.safetensors; } > "$dir/weights"
    { printf '\002'; cat $fx/peft_vera/bert_vera/adapter_config.json; } > "$dir/vera_config"
    { printf '\003'; cat $fx/peft_vera/bert_vera/adapter_model.safetensors; } > "$dir/vera_weights"
    { printf '\004'; cat $fx/peft_ia3/bert_default/adapter_config.json; } > "$dir/ia3_config"
    { printf '\005'; cat $fx/peft_ia3/bert_default/adapter_model.safetensors; } > "$dir/ia3_weights" ;;
  config_json)
    cp $fx/bn/seq_bn/adapter_config.json "$dir/seq_bn"
    cp $fx/compacter/bert/compacter/adapter_config.json "$dir/compacter"
    cp $fx/invertible/bert/inv_lora/adapter_config.json "$dir/inv_lora"
    cp $fx/mtl_lora/bert/mtl_seq_bn/adapter_config.json "$dir/mtl_seq_bn"
    cp $fx/variants/bert/unipelt/adapter_config.json "$dir/unipelt"
    printf '{"architecture": "lora", "r": 4, "alpha": 8, "init_weights": "pissa_niter_4"}' > "$dir/pissa" ;;
esac
