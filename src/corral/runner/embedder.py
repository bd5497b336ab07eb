"""Embeddings: pooled vectors from a second llama_context on the same model.

A separate context keeps generation's context (and its batch invariance) untouched: embeddings
need llama.cpp's embeddings mode and the model's pooling. It is created on the first embed request,
with the pooling the GGUF names (models/embedding.py) and a KV cache as long as the runner's
context, capped at the model's trained one, as Ollama sizes an embedding runner.

With embeddings on, llama.cpp outputs every token of a batch, logits included (a 2,048-token
batch of SmolLM2 took 0.9 GB). So a causal model's input is decoded in chunks of at most
`embed_chunk_tokens` through the KV cache, and the pooled vector is put together across them:
LAST and RANK from the chunk holding the input's last token, CLS from the one holding its first,
MEAN as the token-weighted mean of the chunks' means (measured equal to one whole batch). A
non-causal model (BERT) needs the whole input in one batch, so its chunk is the whole context.
Vectors go out raw; the server normalizes them (as Ollama's EmbedHandler does).
"""

from __future__ import annotations

import ctypes
from collections import deque
from dataclasses import dataclass, field

import llama_cpp as ll
import numpy as np

from corral.models.embedding import Pooling
from corral.runner.protocol import Done, Failed, FinishReason, Up, Vector, embed_chunk_tokens


@dataclass
class EmbedJob:
    id: str
    inputs: list[list[int]]
    pending: int = -1  # inputs not yet sent

    def __post_init__(self) -> None:
        if self.pending < 0:
            self.pending = len(self.inputs)

    @property
    def tokens(self) -> int:
        return sum(len(t) for t in self.inputs)


@dataclass
class _Running:
    """One input holding a sequence of the context: how far it is decoded, its pooled sum."""

    job: EmbedJob
    index: int
    seq: int
    n_done: int = 0
    pooled: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def tokens(self) -> list[int]:
        return self.job.inputs[self.index]


def model_meta(model: ll.llama_model_p, key: str) -> str | None:
    """A GGUF metadata value as text, or None when the model has no such key."""
    buf = ctypes.create_string_buffer(256)
    n = ll.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", errors="replace") if n >= 0 else None


def model_pooling(model: ll.llama_model_p) -> tuple[int | None, bool]:
    """The GGUF's `<arch>.pooling_type` (None when absent) and whether its attention is causal."""
    arch = model_meta(model, "general.architecture") or ""
    pooling = model_meta(model, f"{arch}.pooling_type")
    causal = model_meta(model, f"{arch}.attention.causal")
    return (int(pooling) if pooling and pooling.isdigit() else None), causal != "false"


class Embedder:
    def __init__(self, model: ll.llama_model_p, n_ctx: int, n_threads: int, pooling: Pooling, causal: bool,
                 n_seq: int = 8) -> None:
        self.n_embd = ll.llama_model_n_embd(model)
        n_vocab = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(model))
        self.chunk = min(embed_chunk_tokens(n_vocab, self.n_embd), n_ctx) if causal else n_ctx
        self.causal, self.pooling = causal, pooling
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = self.chunk  # one decode is one ubatch: pooled per call
        cparams.n_seq_max = n_seq
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.embeddings = True
        cparams.pooling_type = int(pooling)
        cparams.kv_unified = True  # the inputs in flight share the n_ctx cells
        cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as generation's context
        self.ctx = ll.llama_init_from_model(model, cparams)
        if not self.ctx:
            raise RuntimeError("failed to create the embedding context")
        self.n_ctx = n_ctx
        self.memory = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(self.chunk, 0, 1)
        self.jobs: deque[EmbedJob] = deque()
        self.waiting: deque[tuple[EmbedJob, int]] = deque()  # inputs without a sequence yet
        self.running: list[_Running] = []
        self.free_seqs = list(range(n_seq))

    def add(self, job: EmbedJob) -> None:
        self.jobs.append(job)
        self.waiting.extend((job, i) for i in range(len(job.inputs)))

    def step(self) -> list[Up]:
        """One decode of as many pending input tokens as fit; the events it completes."""
        self._admit()
        n = 0
        parts: list[tuple[_Running, int]] = []
        for run in self.running:
            left = len(run.tokens) - run.n_done
            take = min(left, self.chunk - n)
            if take <= 0 or (not self.causal and take < left):
                break  # a non-causal input is decoded whole or not yet
            for j in range(take):
                pos = run.n_done + j
                self.batch.token[n], self.batch.pos[n] = run.tokens[pos], pos
                self.batch.n_seq_id[n], self.batch.seq_id[n][0], self.batch.logits[n] = 1, run.seq, 1
                n += 1
            parts.append((run, take))
        if not parts:
            return []
        self.batch.n_tokens = n
        rc = ll.llama_decode(self.ctx, self.batch)
        if rc != 0:
            jobs = {id(run.job): run.job for run, _ in parts}.values()
            for job in jobs:
                self._drop(job)
            return [Failed(job.id, f"llama_decode failed (code {rc})") for job in jobs]
        events: list[Up] = []
        for run, take in parts:
            ptr = ll.llama_get_embeddings_seq(self.ctx, run.seq)
            vec = np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float64)
            first, run.n_done = run.n_done == 0, run.n_done + take
            if self.pooling == Pooling.MEAN:
                run.pooled = vec * take if first else run.pooled + vec * take
            elif self.pooling != Pooling.CLS or first:
                run.pooled = vec
            if run.n_done == len(run.tokens):
                events += self._finish(run)
        if not self.running:
            ll.llama_memory_clear(self.memory, True)  # the next inputs start at cell 0: a short attention span
        return events

    def _admit(self) -> None:
        """Give waiting inputs a sequence, FIFO, while their tokens fit the context's cells."""
        used = sum(len(run.tokens) for run in self.running)
        while self.waiting and self.free_seqs:
            job, index = self.waiting[0]
            if used + len(job.inputs[index]) > self.n_ctx:
                return
            self.waiting.popleft()
            used += len(job.inputs[index])
            self.running.append(_Running(job, index, self.free_seqs.pop(0)))

    def _finish(self, run: _Running) -> list[Up]:
        # Each vector goes out as soon as it exists, one line each: a request with many inputs
        # never makes one huge reply line, and the runner keeps no vectors.
        vector = run.pooled / len(run.tokens) if self.pooling == Pooling.MEAN else run.pooled
        self._release(run)
        events: list[Up] = [Vector(run.job.id, run.index, vector.tolist())]
        run.job.pending -= 1
        if run.job.pending == 0:
            self.jobs.remove(run.job)
            events.append(Done(run.job.id, FinishReason.STOP, prompt_eval_count=run.job.tokens))
        return events

    def _release(self, run: _Running) -> None:
        self.running.remove(run)
        ll.llama_memory_seq_rm(self.memory, run.seq, -1, -1)
        self.free_seqs.append(run.seq)
        self.free_seqs.sort()

    def _drop(self, job: EmbedJob) -> None:
        self.jobs.remove(job)
        self.waiting = deque(w for w in self.waiting if w[0] is not job)
        for run in [r for r in self.running if r.job is job]:
            self._release(run)

    def cancel(self, request_id: str) -> bool:
        for job in self.jobs:
            if job.id == request_id:
                self._drop(job)
                return True
        return False

    def close(self) -> None:
        ll.llama_batch_free(self.batch)
        ll.llama_free(self.ctx)
