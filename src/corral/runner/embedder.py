"""Embeddings: mean-pooled, L2-normalized vectors from a second llama_context on the same model.

A separate context keeps generation's context (and its batch invariance) untouched: pooled
embeddings need the whole input in one ubatch and embeddings turned on, neither of which suits
token-by-token generation. It is created on the first embed request.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import llama_cpp as ll
import numpy as np

from corral.runner.protocol import Done, Failed, FinishReason, Up, Vector


@dataclass
class EmbedJob:
    id: str
    inputs: list[list[int]]
    n_done: int = 0  # inputs embedded (and sent) so far

    @property
    def tokens(self) -> int:
        return sum(len(t) for t in self.inputs)


class Embedder:
    def __init__(self, model: ll.llama_model_p, n_ctx: int, n_threads: int, n_seq: int = 8) -> None:
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = n_ctx  # a pooled input must fit one ubatch
        cparams.n_seq_max = n_seq
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.embeddings = True
        cparams.pooling_type = ll.LLAMA_POOLING_TYPE_MEAN
        cparams.kv_unified = True
        self.ctx = ll.llama_init_from_model(model, cparams)
        if not self.ctx:
            raise RuntimeError("failed to create the embedding context")
        self.n_ctx, self.n_seq = n_ctx, n_seq
        self.n_embd = ll.llama_model_n_embd(model)
        self.memory = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(n_ctx, 0, 1)
        self.jobs: deque[EmbedJob] = deque()

    def step(self) -> list[Up]:
        """One decode of as many pending inputs as fit; events for the jobs that completed."""
        packed: list[tuple[EmbedJob, int]] = []  # (job, index of the input within it)
        n = 0
        for job in self.jobs:
            for i in range(job.n_done, len(job.inputs)):
                tokens = job.inputs[i]
                if len(packed) == self.n_seq or n + len(tokens) > self.n_ctx:
                    break
                seq = len(packed)
                for pos, token in enumerate(tokens):
                    self.batch.token[n], self.batch.pos[n] = token, pos
                    self.batch.n_seq_id[n], self.batch.seq_id[n][0], self.batch.logits[n] = 1, seq, 1
                    n += 1
                packed.append((job, i))
            else:
                continue
            break
        if not packed:
            return []
        self.batch.n_tokens = n
        rc = ll.llama_decode(self.ctx, self.batch)
        ll.llama_memory_clear(self.memory, True)
        if rc != 0:
            failed = {id(job): job for job, _ in packed}.values()
            for job in failed:
                self.jobs.remove(job)
            return [Failed(job.id, f"llama_decode failed (code {rc})") for job in failed]
        # Each vector goes out as soon as it exists, one line each: a request with many inputs
        # never makes one huge reply line, and the runner keeps no vectors.
        events: list[Up] = []
        for seq, (job, index) in enumerate(packed):
            ptr = ll.llama_get_embeddings_seq(self.ctx, seq)
            vec = np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float64)
            norm = np.linalg.norm(vec)
            events.append(Vector(job.id, index, (vec / norm if norm > 0 else vec).tolist()))
            job.n_done += 1
        while self.jobs and self.jobs[0].n_done == len(self.jobs[0].inputs):
            job = self.jobs.popleft()
            events.append(Done(job.id, FinishReason.STOP, prompt_eval_count=job.tokens))
        return events

    def cancel(self, request_id: str) -> bool:
        for job in self.jobs:
            if job.id == request_id:
                self.jobs.remove(job)
                return True
        return False

    def close(self) -> None:
        ll.llama_batch_free(self.batch)
        ll.llama_free(self.ctx)
