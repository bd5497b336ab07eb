#!/usr/bin/env bash
# Build llama-cpp-python's libraries with CUDA on a GPU machine that has nvcc but no network.
# Usage: build_cuda.sh SRC_TARBALL WORKDIR   (the tarball: the llama-cpp-python sdist, trimmed)
# Leaves WORKDIR/llama_cpp_python-*/ as an importable llama_cpp package with CUDA libraries in lib/.
set -euo pipefail
src=$1 work=$2
mkdir -p "$work" && cd "$work"
tar xJf "$src"
cd llama_cpp_python-*/
# One architecture (Hopper, sm_90) and no FlashAttention kernels keep the build to minutes:
# corral runs with flash attention off (ARCHITECTURE.md, "Decisions").
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAVA_BUILD=OFF \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DGGML_NATIVE=ON \
  > "$work/cmake.log" 2>&1 || { tail -40 "$work/cmake.log"; exit 1; }
cmake --build build -j"$(nproc)" > "$work/build.log" 2>&1 || { grep -m5 -B2 -A10 error "$work/build.log"; exit 1; }
cmake --install build > /dev/null
ls -la llama_cpp/lib
