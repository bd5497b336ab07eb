#!/bin/sh
# What exactness costs, in-process (benchmarks/exactness.py speed), variants alternating:
#   stock     : the default llama-cpp-python build, tiled K-quant matmul off (exact mode today)
#   tiled     : the same build with the tiled K-quant matmul on (what exact mode gives up)
#   nollamafile: a build with CMAKE_ARGS=-DGGML_LLAMAFILE=OFF installed with
#                pip install --no-deps --target $NOLLAMAFILE <wheel> (exact mode in full)
# Usage: NOLLAMAFILE=/tmp/gx-target sh benchmarks/exactness_cost.sh [model ...]
set -e
PY=${PY:-python}
SRC=$(dirname "$0")/../src
for model in ${*:-gemma3:270m smollm2:135m}; do
  for round in 1 2; do
    for v in stock tiled nollamafile; do
      case $v in
        stock) PP=$SRC; X="";;
        tiled) PP=$SRC; X=--tiled;;
        nollamafile) PP=$NOLLAMAFILE:$SRC; X="";;
      esac
      printf '%s round %s %s: ' "$model" "$round" "$v"
      PYTHONPATH=$PP $PY "$(dirname "$0")/exactness.py" speed --model "$model" --rounds 1 --tokens 32 \
        --threads "${THREADS:-2}" $X 2>/dev/null | tail -1
    done
  done
done
uptime
