#!/usr/bin/env bash
# GPU check of the fast path (see bench/gpu_check.py and BENCHMARKS.md, "GPU").
#
# Here, once, in the repository root:   bash bench/gpu_check.sh prepare
#   downloads the wheels the GPU machine lacks (Keras and its two pure-Python or
#   cp312 needs) into .whl/ and copies MNIST into .gpu-data/ (both git-ignored
#   through .git/info/exclude), since only the working tree travels.
# On the GPU machine (device tool):     bash bench/gpu_check.sh
#   with carry [".whl", ".gpu-data"]; writes $OUT/gpu_check.jsonl when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "prepare" ]; then
    for path in /.whl/ /.gpu-data/; do
        grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
    done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
    mkdir -p .gpu-data
    cp -r "${MNISTLAB_DATA:-../shared/data}/mnist" .gpu-data/
    ls -la .whl .gpu-data/mnist
    exit 0
fi

if ! python3 -c "import keras" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 bench/gpu_check.py --data .gpu-data "$@" | tee "${OUT:-/tmp}/gpu_check.jsonl"
