"""A model and its llama_context, as a LoadConfig asks: the kernels (kernels.configure, and exact
mode's process-wide choice), the whole model on one GPU or on the CPU, one KV sequence per slot.
The engine (engine.py) owns what this returns and frees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import llama_cpp as ll

from corral.runner.exactness import pin_exact_kernels
from corral.runner.kernels import KvType, configure
from corral.runner.protocol import LoadConfig


class LoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class Loaded:
    model: Any  # llama_model_p
    ctx: Any  # llama_context_p
    on_gpu: bool


def params(cfg: LoadConfig, exact: bool, kv: KvType) -> tuple[Any, Any, bool]:
    """llama.cpp's model and context parameters for cfg's placement, with the kernels of a mode
    (kernels.configure); and whether the model goes on a GPU. The draft model's too."""
    mparams = ll.llama_model_default_params()
    mparams.n_gpu_layers = cfg.n_gpu_layers
    on_gpu = cfg.n_gpu_layers != 0
    if on_gpu:
        # Wholly on one GPU: the scheduler placed the model there by its footprint.
        mparams.split_mode = ll.LLAMA_SPLIT_MODE_NONE
        mparams.main_gpu = cfg.main_gpu
    cparams = ll.llama_context_default_params()
    configure(mparams, cparams, exact, cfg.flash_attention, kv, on_gpu)
    return mparams, cparams, on_gpu


def load(cfg: LoadConfig) -> Loaded:
    """The model and a context of n_slots sequences of n_ctx_slot tokens; LoadError if llama.cpp
    refuses either (the model frees itself when its context cannot be made)."""
    if cfg.exact:
        pin_exact_kernels()  # before any decode, for the whole process: see exactness.py
    ll.llama_backend_init()
    mparams, cparams, on_gpu = params(cfg, cfg.exact, KvType(cfg.kv_type))
    model = ll.llama_model_load_from_file(cfg.model_path.encode(), mparams)
    if not model:
        raise LoadError(f"failed to load model {cfg.model_path}")
    cparams.n_ctx = cfg.n_ctx_slot * cfg.n_slots
    cparams.n_batch = cfg.n_batch
    cparams.n_ubatch = cfg.n_batch
    cparams.n_seq_max = cfg.n_slots
    cparams.n_threads = cfg.n_threads
    cparams.n_threads_batch = cfg.n_threads
    cparams.no_perf = True
    ctx = ll.llama_init_from_model(model, cparams)
    if not ctx:
        ll.llama_model_free(model)
        raise LoadError("failed to create the llama context (out of memory?)")
    return Loaded(model, ctx, on_gpu)
