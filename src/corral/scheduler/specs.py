"""From a model name and request options to the ModelSpec a runner is built with."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import lru_cache

from corral.config import Settings
from corral.errors import ClientError
from corral.models.gguf_info import read_gguf
from corral.models.store import ModelName, Store
from corral.runner.kernels import choose
from corral.scheduler.memory import system_budget
from corral.scheduler.scheduler import ModelSpec

AUTO_PARALLEL = 4
log = logging.getLogger("corral.scheduler")


class BadOption(ClientError):
    """A load-time option the model cannot take (HTTP 400)."""


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether this llama-cpp-python build can offload to a GPU."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        return False


@dataclass
class SpecResolver:
    settings: Settings
    store: Store

    def resolve(self, name: str, num_ctx: int | None = None, num_gpu: int | None = None,
                num_thread: int | None = None, exact: bool | None = None) -> ModelSpec:
        """ModelNotFound / InvalidName / GGUFFormatError / BadOption on failure.

        num_gpu 0 keeps the model on the CPU; any other value lets it go wholly onto a GPU where
        one fits (corral does not split a model between devices). num_thread sets the runner's
        threads. As in Ollama, a request asking for other values than the loaded runner's
        waits for that runner to be idle and reloads it. `exact` (None: CORRAL_EXACT) picks
        batch-invariant kernels over fast ones, also a load option (runner/kernels.py)."""
        parsed = ModelName.parse(name)
        manifest = self.store.manifest(parsed)
        info = read_gguf(self.store.model_file(parsed))
        draft_file = self.store.draft_file(parsed)
        if num_ctx is not None and num_ctx > info.context_length:
            # As Ollama: clamped, not refused (clients such as Continue send 32768 to every model).
            log.info("num_ctx %d for %s is above its training context; using %d", num_ctx, parsed.short,
                     info.context_length)
            num_ctx = info.context_length
        if num_ctx is not None and num_ctx < 1:
            raise BadOption(f"num_ctx must be positive, got {num_ctx}")
        n_ctx = num_ctx or min(self.settings.context_length, info.context_length)
        gpu_layers = -1 if num_gpu != 0 and self.settings.cuda is not False and cuda_available() else 0
        kernels = choose(self.settings.exact if exact is None else exact, self.settings.flash_attention,
                         self.settings.kv_cache_type, info.supports_flash_attention)
        # The store's spelling, so that `SmolLM2:135M` and `smollm2:135m` share one runner.
        spec = ModelSpec(name=manifest.name.short, digest=manifest.digest, info=info, n_ctx=n_ctx, n_slots=1,
                         n_gpu_layers=gpu_layers, n_threads=num_thread or self.settings.threads,
                         prompt_cache_bytes=self.settings.prompt_cache_bytes, exact=kernels.exact,
                         flash_attention=kernels.flash_attention, kv_type=kernels.kv_type,
                         draft=read_gguf(draft_file) if draft_file else None)
        slots = self.settings.parallel_for(manifest.name.short)
        if slots <= 0:
            # Auto, as Ollama: 4 slots when the model with 4 x num_ctx of KV fits the budget.
            wide = replace(spec, n_slots=AUTO_PARALLEL)
            slots = AUTO_PARALLEL if wide.estimate().total <= system_budget(self.settings.memory_limit) else 1
        return replace(spec, n_slots=slots)
