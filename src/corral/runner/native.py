"""llama.cpp calls that llama-cpp-python does not bind, or binds too slowly for every token.

Threadpool: without one, ggml makes a throwaway threadpool for every graph, so each llama_decode
starts and joins its worker threads and the workers arrive cold. llama.cpp's own server attaches
a persistent pool whose workers poll briefly for the next graph (common.cpp); so do we. Under a
serving load on 2 cores this took a generated token's decode from 12.0 to 10.0 ms.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp.llama_cpp as ll

GGML_MAX_N_THREADS = 512  # ggml.h of the llama.cpp that llama-cpp-python 0.3.36 vendors


def llama_function(name: str, argtypes: list, restype) -> ctypes._CFuncPtr:
    """Our own handle on a libllama function, with our own types: llama-cpp-python's handles
    are shared, so changing their types would change them for it too."""
    fn = getattr(ctypes.CDLL(ll._lib._name), name)
    fn.argtypes, fn.restype = argtypes, restype
    return fn


class ThreadpoolParams(ctypes.Structure):
    _fields_ = [
        ("cpumask", ctypes.c_bool * GGML_MAX_N_THREADS),
        ("n_threads", ctypes.c_int),
        ("prio", ctypes.c_int),
        ("poll", ctypes.c_uint32),
        ("strict_cpu", ctypes.c_bool),
        ("paused", ctypes.c_bool),
    ]


class Threadpool:
    """Owns one pool, shared by the contexts of one runner (they never compute at once);
    `close()` after those contexts are freed."""

    def __init__(self, n_threads: int, poll: int = 50) -> None:
        lib_dir = Path(ll.__file__).parent / "lib"
        self._cpu = ctypes.CDLL(str(lib_dir / "libggml-cpu.so"))
        base = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
        base.ggml_threadpool_params_init.argtypes = [ctypes.POINTER(ThreadpoolParams), ctypes.c_int]
        self._cpu.ggml_threadpool_new.argtypes = [ctypes.POINTER(ThreadpoolParams)]
        self._cpu.ggml_threadpool_new.restype = ctypes.c_void_p
        self._cpu.ggml_threadpool_free.argtypes = [ctypes.c_void_p]
        self._attach = llama_function("llama_attach_threadpool", [ctypes.c_void_p] * 3, None)

        params = ThreadpoolParams()
        base.ggml_threadpool_params_init(ctypes.byref(params), n_threads)
        params.poll = poll
        self.pool = self._cpu.ggml_threadpool_new(ctypes.byref(params))
        if not self.pool:
            raise RuntimeError(f"ggml_threadpool_new failed for {n_threads} threads")

    def attach(self, ctx: ctypes.c_void_p) -> None:
        # One pool for generation and prompt batches: their thread counts are the same.
        self._attach(ctx, self.pool, self.pool)

    def close(self) -> None:
        if self.pool:
            self._cpu.ggml_threadpool_free(self.pool)
            self.pool = None
