"""Exact mode's process-wide kernel choice: what the engine's context settings cannot reach.

With repacked weights off, llama.cpp's CPU backend still multiplies K-quant weights (Q2_K..Q6_K,
IQ*) with a second kernel, ggml-cpu/tiled, once a matmul has 8 or more token rows
(ggml_tiled_min_batch), and with the per-row dot products below that. The two round
differently, so a token's logits depend on how many tokens share its decode: gemma3:270m
(Q4_K_M, its Q4_K/Q6_K tensors) gives logits up to 0.35 apart for one sequence decoded beside
7 others vs alone, and prompt chunks (8+ tokens) disagree with generated tokens, which breaks
prefix reuse. Switching the tiled kernel off leaves one kernel per weight type for every batch
size (measured: 0 difference alone vs beside 1..7, benchmarks/exactness.py).

llamafile's tinyBLAS takes weight matmuls of Q4_0/Q5_0/Q8_0 at 2+ rows: on x86 its sums are the
per-row dot product's, term by term (measured: 0 difference at 1..7 rows on gemma3's Q5_0/Q8_0
and SmolLM2's Q8_0 tensors). It also takes attention's F16/F32 matmuls once a sequence has 2+
tokens in a decode, and there it does differ from the one-token path: a generated token's K/V are
not what the same token read in a prompt gets (logits up to 0.6-0.85 apart after them, both
models), so reusing a slot's generated tokens as a prefix is exact only in a build without it
(CMAKE_ARGS="-DGGML_LLAMAFILE=OFF"; then 0). That is a build-time choice: see llamafile_built().
"""

from __future__ import annotations

import os
from functools import cache

import llama_cpp as ll

# ggml reads this once, at the first K-quant matmul of the process (std::call_once in
# ggml-cpu/tiled/tiled.cpp), so it must be set before any decode and holds for the whole runner
# process; a runner serves one model in one mode.
TILED_MATMUL_ENV = "GGML_CPU_TILED_MM"


def pin_exact_kernels() -> None:
    """Make every matmul of this process take the same kernel whatever the batch's size."""
    os.environ[TILED_MATMUL_ENV] = "0"


@cache
def llamafile_built() -> bool:
    """Whether this llama.cpp was built with llamafile's tinyBLAS (the default build)."""
    return b"LLAMAFILE = 1" in ll.llama_print_system_info()
