#!/usr/bin/env bash
# Pfeiffer against LoRA on the main job (docs/adapter-or-lora.md, "Putting the advice to the test"):
# every (method, learning rate, seed) of the grid, then batch sizes 16 and 64 at each method's best rate.
#
#   tools/claims_study.sh OUT_DIR [lr|batch BEST_PFEIFFER_LR BEST_LORA_LR]
#
# Runs the release sentiment example with --task-only; one summary JSON per run in OUT_DIR
# (<method>_lr<lr>_bs<batch>_seed<seed>.json). Runs already present are skipped, so the script resumes.
# Needs the assets of tools/fetch_assets.sh under BURN_ADAPTERS_CACHE (default: the example's cache).
set -euo pipefail
out=$1 stage=${2:-lr}
mkdir -p "$out"
cargo build --release --example sentiment --quiet
declare -A config=([pfeiffer]='pfeiffer[reduction_factor=16]' [lora]='lora')
run() { # method lr batch seed
  local file="$out/$1_lr$2_bs$3_seed$4.json"
  [ -f "$file" ] && return
  ./target/release/examples/sentiment --task-only --adapter "${config[$1]}" --lr "$2" --batch-size "$3" \
    --seed "$4" --out "$out/run" --summary-json "$file.tmp" > "$out/$1_lr$2_bs$3_seed$4.log" 2>&1
  mv "$file.tmp" "$file"
}
if [ "$stage" = lr ]; then
  for seed in 42 43 44; do
    for lr in 1e-4 3e-4 1e-3 3e-3; do
      for method in pfeiffer lora; do run $method $lr 32 $seed; done
    done
  done
else
  declare -A best=([pfeiffer]=$3 [lora]=$4)
  for seed in 42 43 44; do
    for batch in 16 64; do
      for method in pfeiffer lora; do run $method "${best[$method]}" $batch $seed; done
    done
  done
fi
