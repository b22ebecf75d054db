#!/usr/bin/env bash
# Runs the criterion benches, the paired overhead bench and the Python reference back to back on the
# same shapes, then prints the side-by-side tables. Needs the reference venv (tools/requirements.txt);
# VENV overrides its path, FEATURES adds cargo features; the device comes from the environment:
#   [BURN_ADAPTERS_BENCH_DEVICE=tch FEATURES=tch] tools/bench_all.sh [criterion filter]
# Results go to $CARGO_TARGET_DIR (or target/): criterion-<device>/, overhead-<device>.{md,json} and
# bench-reference.json; peak memory is printed. SKIP_REFERENCE=1 reuses the reference's results of an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/var/tmp/burn-adapters-ci/venv}
TARGET=${CARGO_TARGET_DIR:-target}
DEVICE=${BURN_ADAPTERS_BENCH_DEVICE:-flex}
features=(${FEATURES:+--features "$FEATURES"})
export CRITERION_HOME="$TARGET/criterion-$DEVICE"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), device $DEVICE"
cargo bench "${features[@]}" --bench forward -- "$@"
cargo bench "${features[@]}" --bench train -- "$@"
cargo bench "${features[@]}" --bench switch -- "$@"
cargo bench "${features[@]}" --bench kernels -- "$@"
# peak memory of a training step (process peak RSS: model, harness and allocator included)
for variant in "seq_bn" "lora" "full fine-tuning"; do
  /usr/bin/time -f "peak RSS, train step $variant: %M KiB" cargo bench "${features[@]}" --bench train -- \
    --profile-time 5 "train step minilm 8x128/$variant\$" > /dev/null
done
BURN_ADAPTERS_BENCH_OUT="$TARGET/overhead-$DEVICE.json" cargo bench "${features[@]}" --bench overhead \
  | tee "$TARGET/overhead-$DEVICE.md"
if [ -z "${SKIP_REFERENCE:-}" ]; then
  "$VENV/bin/python" tools/bench_reference.py --out "$TARGET/bench-reference.json" --threads "$(nproc)" \
    --paired "${BURN_ADAPTERS_BENCH_ROUNDS:-30}"
fi
python3 tools/bench_compare.py --criterion "$CRITERION_HOME" --reference "$TARGET/bench-reference.json" \
  --paired "$TARGET/overhead-$DEVICE.json"
