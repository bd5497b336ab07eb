"""Which llama.cpp kernels a runner uses: fast (llama-server's defaults) or exact (batch-invariant),
flash attention, and the KV cache's type. Plain data for the scheduler; `configure` applies a
LoadConfig's choice to llama.cpp's parameter structs in the runner."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

log = logging.getLogger("corral.kernels")


class KvType(StrEnum):
    """OLLAMA_KV_CACHE_TYPE: the KV cache's element type."""

    F16 = "f16"
    Q8_0 = "q8_0"
    Q4_0 = "q4_0"

    @property
    def bytes_per_value(self) -> float:
        # ggml's blocks: q8_0 = 32 int8 + an f16 scale (34 bytes), q4_0 = 32 nibbles + a scale (18).
        return {KvType.F16: 2.0, KvType.Q8_0: 34 / 32, KvType.Q4_0: 18 / 32}[self]

    @property
    def quantized(self) -> bool:
        return self != KvType.F16

    @classmethod
    def parse(cls, text: str) -> KvType:
        """As Ollama: case-insensitive; empty or unknown is f16 (unknown with a warning)."""
        value = text.strip().lower()
        try:
            return cls(value or "f16")
        except ValueError:
            log.warning("unsupported OLLAMA_KV_CACHE_TYPE %r; using f16", text)
            return cls.F16


class FlashAttention(IntEnum):
    """llama.cpp's llama_flash_attn_type values."""

    AUTO = -1
    DISABLED = 0
    ENABLED = 1


# Flash attention when OLLAMA_FLASH_ATTENTION is not set, per device, in fast mode. AUTO lets
# llama.cpp use it where the device supports it (it does on the CPU and on CUDA), as llama-server
# and Ollama do. On this project's 2-core CPU it is faster (benchmarks/kernels.py, SmolLM2 C=8:
# 273 tok/s with it, 232 without, docs/PERFORMANCE.md).
FLASH_DEFAULT_CPU = FlashAttention.AUTO
FLASH_DEFAULT_GPU = FlashAttention.AUTO


@dataclass(frozen=True)
class KernelChoice:
    """A runner's kernels, as the scheduler decides them from the settings and the request."""

    exact: bool = False
    flash_attention: bool | None = None  # OLLAMA_FLASH_ATTENTION; None: the device's default
    kv_type: KvType = KvType.F16


def choose(exact: bool, flash_attention: bool | None, kv_type: KvType, model_supports_flash: bool) -> KernelChoice:
    """The kernels a runner is built with. Exact mode turns flash attention off (its results
    depend on the batch). A quantized KV cache needs flash attention, as in Ollama: where it is
    off (asked, exact, or the model cannot) the cache falls back to f16 with a warning."""
    if exact or not model_supports_flash:
        flash_attention = False
    if kv_type.quantized and flash_attention is False:
        why = "exact mode" if exact else ("the model" if not model_supports_flash else "OLLAMA_FLASH_ATTENTION=0")
        _warn_once(f"a quantized OLLAMA_KV_CACHE_TYPE ({kv_type.value}) needs flash attention, which {why} "
                   "turns off; using f16")
        kv_type = KvType.F16
    if kv_type.quantized:
        flash_attention = True
    return KernelChoice(exact=exact, flash_attention=flash_attention, kv_type=kv_type)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    # choose() runs for every request: one warning per distinct case, not one per request.
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def flash_type(exact: bool, flash_attention: bool | None, on_gpu: bool) -> FlashAttention:
    if exact or flash_attention is False:
        return FlashAttention.DISABLED
    if flash_attention:
        return FlashAttention.ENABLED
    return FLASH_DEFAULT_GPU if on_gpu else FLASH_DEFAULT_CPU


def configure(mparams: Any, cparams: Any, exact: bool, flash_attention: bool | None, kv_type: KvType,
              on_gpu: bool) -> None:
    """Set llama.cpp's model and context parameters for the runner's kernels."""
    import llama_cpp as ll

    # Exact: CPU "repacked" weights (Q4_0, Q4_K, Q8_0 on AVX2) multiply groups of four rows with
    # one kernel and leftover rows with another, so a token's numbers depend on where it sits in
    # the batch; plain per-row dot products keep prefix reuse and batching exact. Fast: repacked,
    # as llama-server (about 12 % more tokens/s here).
    mparams.use_extra_bufts = not exact
    # Exact: one KV stream per slot, so a sequence's numbers never depend on its neighbours.
    # Fast keeps it too: llama-server's default, and measured its faster configuration here.
    cparams.kv_unified = False
    # Flash attention on the CPU makes a sequence's logits depend on its batch neighbours
    # (measured on gemma3: up to 1.6 apart); plain attention is exactly batch-invariant.
    cparams.flash_attn_type = int(flash_type(exact, flash_attention, on_gpu))
    ggml = {KvType.F16: ll.GGML_TYPE_F16, KvType.Q8_0: ll.GGML_TYPE_Q8_0, KvType.Q4_0: ll.GGML_TYPE_Q4_0}[kv_type]
    cparams.type_k = ggml
    cparams.type_v = ggml
