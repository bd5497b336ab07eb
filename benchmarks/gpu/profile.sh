#!/usr/bin/env bash
# On a GPU machine after build_cuda.sh and check.sh (which installs the wheels and makes the store):
# where the runner's host time per step goes. corral serves smollm2:135m wholly on the GPU; under a
# closed-loop load at each concurrency, py-spy samples the runner process (its Python frames)
# and writes collapsed stacks (one line a stack, its sample count last), read with benchmarks/gpu/hot.py.
# Usage: profile.sh WORKDIR OUTDIR [CONCURRENCIES]   (py-spy's wheel in .gpu/whl, installed by check.sh)
set -uo pipefail
work=$1 out=$2 sweep=${3:-1 8}
bin=$work/vendor/llama.cpp/build/bin
export PYTHONPATH=/tmp/site:$work:$PWD/src LLAMA_CPP_LIB_PATH=$bin PYTHONUNBUFFERED=1
spy=${SPY:-/tmp/site/bin/py-spy}
port=11531 url=http://127.0.0.1:11531
OLLAMA_HOST=127.0.0.1:$port OLLAMA_MODELS=$work/store OLLAMA_NUM_PARALLEL=8 OLLAMA_CONTEXT_LENGTH=2048 \
  OLLAMA_KEEP_ALIVE=-1 ${PROFILE_ENV:-} python3 -m corral.cli serve > "$out/profile-serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
python3 - "$url" <<'PY'
import sys, time, httpx
for _ in range(240):
    try:
        httpx.get(sys.argv[1], timeout=1).raise_for_status(); break
    except Exception:
        time.sleep(0.25)
PY
bench() { python3 -m corral.cli bench --base-url "$url" --model smollm2:135m --max-tokens 128 --server-stats "$@"; }
bench --concurrency 1 --num-prompts 2 > /dev/null 2>&1  # loads the model and warms it
runner=$(pgrep -f corral.runner.main | head -1)
echo "runner pid $runner" | tee "$out/profile.txt"
for c in $sweep; do
  bench --concurrency "$c" --num-prompts "${PROFILE_N:-64}" --no-warmup > "$out/profile-bench-c$c.txt" 2>&1 &
  load=$!
  sleep 2
  timeout 30 "$spy" record -p "$runner" -d "${PROFILE_S:-6}" -r 500 --nonblocking -f raw \
    -o "$out/runner-c$c.txt" >> "$out/profile.txt" 2>&1
  wait $load
  grep -E "^\s*│\s+$c |outside" "$out/profile-bench-c$c.txt" | tee -a "$out/profile.txt"
done
