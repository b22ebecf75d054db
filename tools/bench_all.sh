#!/usr/bin/env bash
# Runs the criterion benches, the paired overhead bench and the Python reference back to back on the
# same shapes, then prints the side-by-side tables. Needs the reference venv (tools/requirements.txt);
# VENV overrides its path, FEATURES adds cargo features; the device comes from the environment:
#   [BURN_ADAPTERS_BENCH_DEVICE=tch FEATURES=tch] tools/bench_all.sh [criterion filter]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/var/tmp/burn-adapters-ci/venv}
TARGET=${CARGO_TARGET_DIR:-target}
features=(${FEATURES:+--features "$FEATURES"})
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)"
cargo bench "${features[@]}" --bench forward -- "$@"
cargo bench "${features[@]}" --bench train -- "$@"
cargo bench "${features[@]}" --bench switch -- "$@"
BURN_ADAPTERS_BENCH_OUT="$TARGET/overhead.json" cargo bench "${features[@]}" --bench overhead | tee "$TARGET/overhead.md"
"$VENV/bin/python" tools/bench_reference.py --out "$TARGET/bench-reference.json" --threads "$(nproc)" \
  --paired "${BURN_ADAPTERS_BENCH_ROUNDS:-30}"
python3 tools/bench_compare.py --criterion "$TARGET/criterion" --reference "$TARGET/bench-reference.json" \
  --paired "$TARGET/overhead.json"
