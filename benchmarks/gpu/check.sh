#!/usr/bin/env bash
# On a GPU machine after build_cuda.sh: corral's GPU tests, then corral bench on the GPU and on the
# CPU (CORRAL_CUDA=0) in the same run. Usage: check.sh MODEL_STORE OUTDIR
set -uo pipefail
store=$1 out=$2
export CORRAL_TEST_MODELS=$store CORRAL_TEST_MODEL_NAMES=smollm2:135m OLLAMA_MODELS=$store PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import llama_cpp; print('gpu offload:', llama_cpp.llama_supports_gpu_offload())" | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs 2>&1 | tee "$out/gpu-tests.log"

bench() {  # $1 label, rest: environment for the server
  local label=$1; shift
  env "$@" OLLAMA_HOST=127.0.0.1:11999 OLLAMA_NUM_PARALLEL=8 OLLAMA_CONTEXT_LENGTH=2048 \
    python3 -m corral.cli serve > "$out/serve-$label.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:11999/ > /dev/null && break; sleep 0.2; done
  python3 -m corral.cli bench --base-url http://127.0.0.1:11999 --model smollm2:135m --sweep "${SWEEP:-1,8}" \
    --json "$out/bench-$label.json" --server-stats 2>&1 | tail -25
  curl -s http://127.0.0.1:11999/api/ps >> "$out/serve-$label.log"
  kill $pid; wait $pid || true  # SIGTERM: exit status 143
}
echo "== GPU"; bench gpu
echo "== CPU ($(nproc) cores)"; bench cpu CORRAL_CUDA=0
