#!/usr/bin/env bash
# On a GPU machine after build_cuda.sh: corral's GPU tests, then benchmarks/compare.py on the GPU:
# corral (default mode) vs llama-server (default), corral exact vs llama-server --no-repack -fa off.
# Usage: check.sh WORKDIR MODEL_FILE OUTDIR   (wheels for missing packages in .gpu/whl)
set -uo pipefail
work=$1 model=$2 out=$3
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
bin=$work/vendor/llama.cpp/build/bin
export PYTHONPATH=/tmp/site:$work:$PWD/src LLAMA_CPP_LIB_PATH=$bin PYTHONUNBUFFERED=1
store=$work/store
python3 - "$model" "$store" <<'PY'
import sys
from pathlib import Path
from corral.models.store import MEDIA_MODEL, Layer, ModelName, Store
store = Store(Path(sys.argv[2]))
layer = store.add_blob_file(Path(sys.argv[1]))
store.write_manifest(ModelName.parse("smollm2:135m"), [Layer(MEDIA_MODEL, layer.digest, layer.size)])
PY
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import llama_cpp; print('gpu offload:', llama_cpp.llama_supports_gpu_offload())" | tee -a "$out/gpu.txt"
[ -n "${SKIP_TESTS:-}" ] || CORRAL_TEST_MODELS=$store CORRAL_TEST_MODEL_NAMES=smollm2:135m timeout 150 \
  python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs 2>&1 | tail -15 | tee "$out/gpu-tests.log"
# COMPARE_ARGS: what else compare.py runs (default: exact mode; e.g. --variant NAME=VAR=VALUE).
timeout "${BENCH_S:-300}" python3 benchmarks/compare.py --model-file "$model" --llama-server "$bin/llama-server" \
  --gpu ${COMPARE_ARGS:---exact} --sweep "${SWEEP:-1,8}" --rounds "${ROUNDS:-2}" --threads "$(nproc)" --out "$out" 2>&1 \
  | grep -v "^\s*$" | tail -60 | tee "$out/compare.txt"
