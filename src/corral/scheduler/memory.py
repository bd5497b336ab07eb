"""How much memory a model will take, and how much corral may use.

The estimate follows Ollama's: weights + KV cache for every slot (at the cache type's real size:
f16 2 bytes a value, q8_0 34 bytes per 32, q4_0 18 per 32) + a compute-buffer surcharge.
It is checked against the runner's real RSS after load and both are shown in /api/ps.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from corral.models.gguf_info import GGUFInfo
from corral.runner.protocol import embed_chunk_tokens


@dataclass(frozen=True, slots=True)
class Pool:
    """Where a runner's memory lives: system RAM, or one GPU's memory."""

    gpu: int | None = None  # the GPU's index; None for system RAM

    @property
    def is_gpu(self) -> bool:
        return self.gpu is not None

    def __str__(self) -> str:
        return "cpu" if self.gpu is None else f"gpu{self.gpu}"


CPU = Pool()
MiB = 2**20
GiB = 2**30
RESERVE_BYTES = 1 * GiB  # left for the OS and the server itself when the budget is measured
RUNTIME_OVERHEAD = 48 * MiB  # a runner's interpreter, llama.cpp's code and allocator slack
GPU_RESERVE_BYTES = 512 * MiB  # per GPU, for CUDA contexts and fragmentation


@dataclass(frozen=True)
class Estimate:
    weights: int
    kv_cache: int
    compute: int
    prompt_cache: int = 0
    embedder: int = 0  # the pooled-embedding context, created on the first embed request
    draft: int = 0  # a draft model (speculative decoding): its weights, KV for every slot, compute

    @property
    def total(self) -> int:
        return (self.weights + self.kv_cache + self.compute + self.prompt_cache + self.embedder + self.draft
                + RUNTIME_OVERHEAD)


def estimate(info: GGUFInfo, n_ctx_slot: int, n_slots: int, n_batch: int = 512, prompt_cache: int = 0,
             kv_bytes_per_value: float = 2.0, draft: GGUFInfo | None = None) -> Estimate:
    kv = info.kv_bytes_per_token(kv_bytes_per_value) * n_ctx_slot * n_slots
    n_vocab = info.vocab_size or 32_000
    # Activations for one n_batch ubatch plus the logits rows kept for sampling.
    compute = info.embedding_length * n_batch * 4 * 8 + n_vocab * 4 * max(n_slots, 1) * 2
    embedder = _embedder_bytes(info, n_ctx_slot, n_vocab)
    return Estimate(weights=info.tensor_bytes, kv_cache=kv, compute=compute, prompt_cache=prompt_cache,
                    embedder=embedder, draft=_draft_bytes(draft, n_ctx_slot, n_slots, n_batch))


def _draft_bytes(draft: GGUFInfo | None, n_ctx_slot: int, n_slots: int, n_batch: int) -> int:
    """The draft model's context (runner/draft_model.py): a sequence of n_ctx_slot per slot, its
    f16 KV, one n_batch ubatch of activations and a logits row."""
    if draft is None:
        return 0
    compute = draft.embedding_length * n_batch * 4 * 8 + (draft.vocab_size or 32_000) * 4 * 2
    return draft.tensor_bytes + draft.kv_bytes_per_token() * n_ctx_slot * n_slots + compute


def _embedder_bytes(info: GGUFInfo, n_ctx_slot: int, n_vocab: int) -> int:
    """The embedding context (runner/embedder.py): a KV cache of the runner's context (at most the
    trained one) and one chunk's outputs (logits and hidden states) and attention scores."""
    n_ctx = min(n_ctx_slot, info.context_length)
    causal = info.metadata.get(f"{info.architecture}.attention.causal", True) is not False
    chunk = min(embed_chunk_tokens(n_vocab, info.embedding_length), n_ctx) if causal else n_ctx
    outputs = chunk * (2 * n_vocab + 8 * info.embedding_length) * 4
    return info.kv_bytes_per_token() * n_ctx + outputs + chunk * n_ctx * max(info.head_count, 1) * 4


def system_budget(limit: int | None = None) -> int:
    """Bytes corral may fill with models: CORRAL_MEMORY_LIMIT, else available RAM less a reserve."""
    if limit is not None:
        return limit
    return max(psutil.virtual_memory().available - RESERVE_BYTES, 0)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total: int
    free: int

    @property
    def budget(self) -> int:
        """VRAM corral may fill: what was free at start, less a reserve for the CUDA context."""
        return max(self.free - GPU_RESERVE_BYTES, 0)


def gpu_inventory() -> list[Gpu]:
    """NVIDIA GPUs as NVML reports them; none when the driver or nvidia-ml-py is missing, or
    when this llama-cpp-python build cannot offload."""
    try:
        import llama_cpp
        import pynvml

        if not llama_cpp.llama_supports_gpu_offload():
            return []
        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(Gpu(i, name.decode() if isinstance(name, bytes) else name, int(mem.total), int(mem.free)))
        return gpus
    finally:
        pynvml.nvmlShutdown()
