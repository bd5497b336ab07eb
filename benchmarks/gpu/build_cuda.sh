#!/usr/bin/env bash
# Build llama.cpp (the tree llama-cpp-python 0.3.36 vendors) with CUDA on a GPU machine that has nvcc
# but no network: shared libraries for llama-cpp-python (LLAMA_CPP_LIB_PATH) and llama-server, from
# one build, so corral and its peer run the same kernels.
# Usage: build_cuda.sh SRC_TARBALL WORKDIR   (the tarball: llama_cpp/ and vendor/llama.cpp from the
# sdist, trimmed of models, docs, tests and other backends; see docs/GPU.md)
# Leaves WORKDIR/llama_cpp (the Python package) and WORKDIR/vendor/llama.cpp/build/bin/{libllama.so,llama-server}.
set -euo pipefail
src=$1 work=$2
mkdir -p "$work" && cd "$work"
tar xJf "$src"
cd vendor/llama.cpp
# One architecture (Hopper, sm_90) keeps the build to minutes; flash-attention kernels are built,
# since corral's default (fast) mode and llama-server's default use them.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  > "$work/cmake.log" 2>&1 || { tail -40 "$work/cmake.log"; exit 1; }
time cmake --build build -j"$(nproc)" --target llama llama-server > "$work/build.log" 2>&1 \
  || { grep -m5 -B2 -A10 error "$work/build.log"; exit 1; }
ls -la build/bin
