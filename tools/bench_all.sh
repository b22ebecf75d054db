#!/usr/bin/env bash
# Runs the criterion benches and the Python reference back to back on the same shapes, then prints
# the side-by-side tables. Needs the reference venv (tools/requirements.txt); VENV overrides its path.
#   tools/bench_all.sh [--device flex]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/var/tmp/burn-adapters-ci/venv}
TARGET=${CARGO_TARGET_DIR:-target}
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)"
cargo bench --bench forward -- "$@"
cargo bench --bench train -- "$@"
cargo bench --bench switch -- "$@"
"$VENV/bin/python" tools/bench_reference.py --out "$TARGET/bench-reference.json" --threads "$(nproc)"
python3 tools/bench_compare.py --criterion "$TARGET/criterion" --reference "$TARGET/bench-reference.json"
