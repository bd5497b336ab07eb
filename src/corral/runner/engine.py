"""Continuous batching over llama.cpp's C API: P slots (KV sequences), each holding at most one
Request (slot.py).

Each step decodes chunks of waiting prompts, each chunk in a llama_decode of its own (while others
generate, only as many prompt tokens as fit PREFILL_STEP_NS), then one token of every generating
slot in a single seq-ordered llama_decode, and samples each (argmax for plain greedy, else the
request's sampler chain); see step() for why the batches are cut this way. A request joins at the
next step after it arrives and its slot is free the moment it ends; the slot keeps its KV for
prefix reuse. One Engine owns one llama_context; only the tokenizer may be used from another
thread (the runner's stdin reader).
"""

from __future__ import annotations

import ctypes
import time
from collections import deque

import llama_cpp as ll
import numpy as np

from corral.errors import ClientError
from corral.models.embedding import Pooling, embedding_pooling
from corral.runner.batch import DecodeBatch
from corral.runner.disk_cache import DiskCache
from corral.runner.embedder import Embedder, EmbedJob, model_pooling
from corral.runner.exactness import llamafile_built, pin_exact_kernels
from corral.runner.fit import Specials, cut, embedding_input, input_tokens, prompt_tokens
from corral.runner.kernels import KvType, configure
from corral.runner.logprobs import Logprobs
from corral.runner.prompt_cache import MIN_TOKENS, PromptCache, common_prefix
from corral.runner.protocol import Done, Failed, FinishReason, GenerationOptions, LoadConfig, Token, Up
from corral.runner.sampling import is_plain_greedy, make_sampler
from corral.runner.slot import Request, Slot, prompt_chunk
from corral.runner.speculative import DraftConfig, NgramDrafter, accepted
from corral.runner.textstream import TextStream
from corral.runner.vocab import Vocab


class LoadError(RuntimeError):
    pass


MIN_PIECE_CPU = 2
MIN_PIECE_GPU = 32
# While other slots generate, a step spends about this long on prompt tokens (at least
# PREFILL_MIN_TOKENS of them): the bound on the extra gap a long prompt adds between their tokens.
PREFILL_STEP_NS = 100_000_000
PREFILL_MIN_TOKENS = 32
PREFILL_SAMPLE_MIN = 16
OPEN_ENDED_CONTEXTS = 10  # chunks shorter than this say little about the speed


class SlotsFull(RuntimeError):
    pass


class Engine:
    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        if cfg.exact:
            pin_exact_kernels()  # before any decode, for the whole process: see exactness.py
        ll.llama_backend_init()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = cfg.n_gpu_layers
        self.on_gpu = cfg.n_gpu_layers != 0
        self.exact = cfg.exact
        # Exact: no prompt piece shorter than this (see prompt_chunk): the CPU takes other kernels
        # for a single token; CUDA for up to 8 tokens (mmvq, mmvf) and up to 16 (mmf).
        self.min_piece = (MIN_PIECE_GPU if self.on_gpu else MIN_PIECE_CPU) if cfg.exact else 1
        if self.on_gpu:
            # Wholly on one GPU: the scheduler placed the model there by its footprint.
            mparams.split_mode = ll.LLAMA_SPLIT_MODE_NONE
            mparams.main_gpu = cfg.main_gpu
        cparams = ll.llama_context_default_params()
        configure(mparams, cparams, cfg.exact, cfg.flash_attention, KvType(cfg.kv_type), self.on_gpu)
        self.model = ll.llama_model_load_from_file(cfg.model_path.encode(), mparams)
        if not self.model:
            raise LoadError(f"failed to load model {cfg.model_path}")
        cparams.n_ctx = cfg.n_ctx_slot * cfg.n_slots
        cparams.n_batch = cfg.n_batch
        cparams.n_ubatch = cfg.n_batch
        cparams.n_seq_max = cfg.n_slots
        cparams.n_threads = cfg.n_threads
        cparams.n_threads_batch = cfg.n_threads
        cparams.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise LoadError("failed to create the llama context (out of memory?)")
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.memory = ll.llama_get_memory(self.ctx)
        self.can_shift = bool(ll.llama_memory_can_shift(self.memory))
        self.n_ctx_slot = ll.llama_n_ctx(self.ctx) // cfg.n_slots
        self.n_batch = cfg.n_batch
        self.n_threads = cfg.n_threads
        words = Vocab(self.vocab)
        self.tokenize, self.piece, self.add_bos, self.bos = words.tokenize, words.piece, words.add_bos, words.bos
        self.specials = Specials(self.bos, ll.llama_vocab_eos(self.vocab), self.add_bos,
                                 bool(ll.llama_vocab_get_add_eos(self.vocab)))
        # Embeddings: the GGUF's pooling, inputs up to the context, at most the trained one (as Ollama).
        pooling, self.embed_causal = model_pooling(self.model)
        self.embed_pooling = embedding_pooling(pooling)
        self.n_ctx_embed = min(self.n_ctx_slot, ll.llama_model_n_ctx_train(self.model) or self.n_ctx_slot)
        # A private handle on llama_get_logits_ith (its own CDLL, so llama-cpp-python's shared one
        # keeps its types) returning a plain address: numpy's as_array on a ctypes pointer builds
        # a new array type per call (~60 us, most of a token's Python).
        self._logits_ith = ctypes.CDLL(ll.llama_cpp._lib._name).llama_get_logits_ith
        self._logits_ith.argtypes, self._logits_ith.restype = [ctypes.c_void_p, ctypes.c_int32], ctypes.c_void_p
        self._logits_row = ctypes.c_float * self.n_vocab
        self._buffers = DecodeBatch.make(cfg.n_batch)
        b = self._buffers
        self.batch, self._tok, self._pos, self._seq, self._logits = b.c, b.tok, b.pos, b.seq, b.logits
        self.free: deque[Slot] = deque(Slot(seq=i) for i in range(cfg.n_slots))
        self.active: list[Slot] = []  # in admission order, so prompts are served FIFO
        self.prefill_ns_per_token = 0.0  # measured; sizes prompt chunks while others generate
        self.decode_ns = 0  # time inside llama_decode, for the Python-overhead share
        self.reused_tokens = 0  # prompt tokens not decoded thanks to prefix reuse
        self.cache_restores = 0
        self.step_ns = 0
        self.embedder: Embedder | None = None
        self.prompt_cache = PromptCache(self.ctx, cfg.prompt_cache_bytes)
        self.draft_config = DraftConfig(draft_max=cfg.draft_max)
        self.drafted_tokens = self.accepted_tokens = 0  # speculative decoding's counts
        self.evaluated_tokens = 0  # prompt tokens decoded
        # A warm reload: what the last runner of this model kept on disk, before we say ready.
        self.disk = DiskCache.open(cfg, ll.__version__)
        self.disk_restores = self.disk.restore(self.prompt_cache, self.n_ctx_slot) if self.disk else 0

    def set_threads(self, n: int) -> None:
        """Use n of the threads this runner was started with (the scheduler shares the cores
        among busy runners: two runners spinning two threads each on two cores starve both)."""
        self.n_threads = max(1, min(n, self.cfg.n_threads))
        ll.llama_set_n_threads(self.ctx, self.n_threads, self.n_threads)
        if self.embedder:
            ll.llama_set_n_threads(self.embedder.ctx, self.n_threads, self.n_threads)

    # -- requests -----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self.active) or bool(self.embedder and self.embedder.jobs)

    def request_limit(self, num_ctx: int) -> int:
        """A request's context: its num_ctx, at most the slot's."""
        return min(num_ctx, self.n_ctx_slot) if num_ctx > 0 else self.n_ctx_slot

    def prompt_tokens(self, text: str, num_ctx: int, context: list[int] | None = None) -> list[int]:
        """A prompt's tokens, cut to its context (thread-safe: the stdin reader calls it);
        after `context` (token ids an earlier answer returned, which start with their own BOS)."""
        limit = self.request_limit(num_ctx)
        if not context:
            return prompt_tokens(self.tokenize, text, limit)
        bad = next((t for t in context if not 0 <= t < self.n_vocab), None)
        if bad is not None:  # an id outside the vocabulary would abort llama.cpp
            raise ClientError(f"context: token id {bad} is not in the model's vocabulary (0 to {self.n_vocab - 1})")
        return cut(list(context) + self.tokenize(text, False), limit)

    def prompt_fits(self, text: str, num_ctx: int) -> bool:
        """Whether a prompt's tokens fit its context whole (thread-safe)."""
        limit = self.request_limit(num_ctx)
        _, longer = input_tokens(self.tokenize, text, limit - 1)
        return not longer

    def embed_tokens(self, inputs: list[str], truncate: bool, num_ctx: int = 0) -> list[list[int]]:
        """Embedding inputs' tokens, each cut to the request's context as Ollama cuts them
        (fit.embedding_input; thread-safe)."""
        if self.embed_pooling == Pooling.RANK:
            raise ClientError("this model does not support embeddings")
        limit = min(self.request_limit(num_ctx), self.n_ctx_embed)
        return [embedding_input(self.tokenize, text, limit, truncate, self.specials) for text in inputs]

    def embed(self, request_id: str, tokenized: list[list[int]]) -> list[Up]:
        """Queue tokenized inputs (embed_tokens()) for embedding."""
        if self.embedder is None:
            self.embedder = Embedder(self.model, self.n_ctx_embed, self.cfg.n_threads, self.embed_pooling,
                                     self.embed_causal)
            self.set_threads(self.n_threads)  # the share the scheduler gave this runner
        self.embedder.add(EmbedJob(request_id, tokenized))
        return []

    def submit(self, request_id: str, tokens: list[int], opts: GenerationOptions, num_ctx: int = 0,
               want_context: bool = False) -> list[Up]:
        """Start a request on a free slot; `tokens` is its prompt (prompt_tokens()). With
        `want_context` its Done carries the prompt's and the answer's tokens."""
        if not self.free:
            raise SlotsFull("no free slot")
        # First: a bad format fails before a slot is taken.
        sampler = make_sampler(self.vocab, self.n_vocab, self.n_ctx_slot, opts)
        limit = self.request_limit(num_ctx)
        if not tokens:
            tokens = [self.bos] if self.bos >= 0 else []
        tokens = cut(tokens, limit)
        slot = self._take_slot(tokens)
        # As Ollama: an open-ended generation (-1) is bounded at ten contexts; -2 fills one.
        num_predict = OPEN_ENDED_CONTEXTS * limit if opts.num_predict == -1 else opts.num_predict
        greedy = is_plain_greedy(opts)
        # Not with logprobs: a verified position's logits come from multi-token kernels and differ
        # from the one-token decode's in the last digits (the argmax is what is checked, not them).
        speculate = greedy and not opts.logprobs and (self.cfg.speculative if opts.speculative is None
                                                      else opts.speculative)
        slot.req = Request(request_id, tokens, ctx_limit=limit, num_predict=num_predict,
                           shift=opts.shift and opts.num_predict != -2 and self.can_shift, num_keep=opts.num_keep,
                           text=TextStream(opts.stop), sampler=sampler, greedy=greedy,
                           logprobs=Logprobs(opts.top_logprobs, self.piece) if opts.logprobs else None,
                           n_prompt=slot.n_past, generated=[] if want_context else None,
                           drafter=NgramDrafter(tokens, self.draft_config) if speculate else None)
        self.active.append(slot)
        if opts.num_predict == 0:
            return self._finish(slot, FinishReason.LENGTH)
        return []

    def _take_slot(self, tokens: list[int]) -> Slot:
        """A free slot with as much of this prompt already in its KV as possible.

        The slot keeps what its last request left if that is the longest match; if the prompt
        cache (where every finished sequence is saved) holds a longer one, that state is restored
        into it. The KV is then cut back to the shared prefix. K and V of a token do not depend
        on the batch that computed them, so a reused prefix gives the same numbers as a fresh one
        (a generated token's only in a build without llamafile: see exactness.py, and _release).
        """
        # The lowest free sequence id: llama.cpp decodes a run of consecutive sequence ids as
        # one ubatch, so keeping busy slots packed at low ids means fewer ubatches per step.
        best = min(self.free, key=lambda s: s.seq)
        best_len = common_prefix(best.cached, tokens)
        entry, entry_len = self.prompt_cache.best(tokens)
        if entry is not None and entry_len >= best_len + MIN_TOKENS:
            self._clear(best)
            if self.prompt_cache.restore(entry, best.seq):
                best.cached, best_len = list(entry.tokens), entry_len
                self.cache_restores += 1
            else:
                best_len = 0
        self.free.remove(best)
        # Decode at least min_piece prompt tokens (see step()), fewer only when the prompt is shorter.
        keep = max(min(best_len, len(tokens) - self.min_piece), 0)
        if best.cached and ll.llama_memory_seq_pos_min(self.memory, best.seq) > 0:
            keep = 0  # a sliding-window cache has dropped early positions: the prefix is incomplete
        if keep < len(best.cached):
            ll.llama_memory_seq_rm(self.memory, best.seq, keep, -1)
            del best.cached[keep:]
        best.n_past = keep
        self.reused_tokens += keep
        return best

    def _clear(self, slot: Slot) -> None:
        ll.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
        slot.cached.clear()

    def cancel(self, request_id: str) -> list[Up]:
        if self.embedder and self.embedder.cancel(request_id):
            return [Done(request_id, FinishReason.CANCEL)]
        for slot in self.active:
            if slot.request.id == request_id:
                return self._finish(slot, FinishReason.CANCEL)
        return []

    # -- the loop -----------------------------------------------------------------------------
    def step(self) -> list[Up]:
        """One step: prompt chunks (FIFO), then a token for every generating slot in one decode.

        How llama.cpp splits a batch decides the numbers: with one KV stream per sequence a
        ubatch holds a run of consecutive sequence ids with the same number of tokens each, and
        a one-token chunk of a prompt is computed by other kernels than a longer one. So
        generating tokens go in one seq-ordered call, each prompt chunk in a call of its own,
        and no prompt is ever cut into a one-token piece. Then a request's output is the same
        alone, batched, or resumed from a cached prefix.
        """
        t0 = time.perf_counter_ns()
        events: list[Up] = self._embed_step() if self.embedder and self.embedder.jobs else []
        n_generating = sum(1 for s in self.active if not s.request.prefilling)
        room = self.n_batch - n_generating
        if n_generating:
            # Streams are generating: prefill only what fits the step's time budget, so a long
            # prompt arriving delays each of their tokens by about PREFILL_STEP_NS, not seconds.
            room = min(room, self._prefill_room())
        chunks: list[tuple[Slot, int]] = []
        for slot in self.active:
            if room <= 0:
                break
            req = slot.request
            if req.prefilling:
                take = prompt_chunk(len(req.prompt) - req.n_prompt, room, self.min_piece)
                chunks.append((slot, take))
                room -= take
        for slot, take in chunks:
            if slot not in self.active:
                continue  # failed in an earlier decode of this step
            req = slot.request
            start, pos = req.n_prompt, slot.n_past
            if not req.t_prompt:
                req.t_prompt = t0
            self._tok[:take] = req.prompt[start:start + take]
            self._pos[:take] = np.arange(pos, pos + take, dtype=np.int32)
            self._seq[:take] = slot.seq
            self._logits[:take] = 0
            slot.n_past += take
            req.n_prompt += take
            self.evaluated_tokens += take
            slot.cached.extend(req.prompt[start:start + take])
            done = not req.prefilling
            if done:
                self._logits[take - 1] = 1
            td = time.perf_counter_ns()
            events += self._decode(take, [(slot, take - 1)] if done else [], [slot])
            if take >= PREFILL_SAMPLE_MIN:
                # Smoothed cost of a prompt token (decode and sampling of the last one included).
                per_token = (time.perf_counter_ns() - td) / take
                self.prefill_ns_per_token += (per_token - self.prefill_ns_per_token) * 0.3
        # After the prompts, so a slot whose prompt just finished generates in this same call:
        # a slot still prefilling would leave a hole in the run of sequence ids, and llama.cpp
        # would split the call into two ubatches.
        generating = sorted((s for s in self.active if not s.request.prefilling), key=lambda s: s.seq)
        drafts = [(slot, draft) for slot in generating if (draft := self._draft(slot))]
        for slot, draft in drafts:
            generating.remove(slot)
            events += self._verify(slot, draft)
        if generating:
            for n, slot in enumerate(generating):
                token = slot.request.next_token
                self._tok[n], self._pos[n], self._seq[n], self._logits[n] = token, slot.n_past, slot.seq, 1
                slot.n_past += 1
                slot.cached.append(token)
            events += self._decode(len(generating), list(zip(generating, range(len(generating)))))
        self.step_ns += time.perf_counter_ns() - t0
        return events

    def _prefill_room(self) -> int:
        """Prompt tokens that fit PREFILL_STEP_NS at the measured prompt speed (never < min)."""
        if not self.prefill_ns_per_token:
            return PREFILL_MIN_TOKENS  # not measured yet: a small first chunk measures it
        fit = int(PREFILL_STEP_NS / self.prefill_ns_per_token)
        return max(PREFILL_MIN_TOKENS, min(fit, self.n_batch))

    def _decode(self, n: int, to_sample: list[tuple[Slot, int]], owners: list[Slot] | None = None) -> list[Up]:
        """Decode the first n batch entries, then sample the slots that produced logits."""
        self.batch.n_tokens = n
        td = time.perf_counter_ns()
        rc = ll.llama_decode(self.ctx, self.batch)
        if self.on_gpu:
            # CUDA decodes asynchronously; wait here so decode_ns holds the GPU's work and the
            # Python share reported from it is Python's.
            ll.llama_synchronize(self.ctx)
        t_decoded = time.perf_counter_ns()
        self.decode_ns += t_decoded - td
        if rc != 0:
            # 1: no KV room, 2: aborted, <0: error. These sequences are in an unknown state, so
            # fail them rather than guess; the other slots go on.
            failed = owners if owners is not None else [slot for slot, _ in to_sample]
            return [e for slot in failed for e in self._fail(slot, f"llama_decode failed (code {rc})")]
        events: list[Up] = []
        for slot, index in to_sample:
            events += self._sample(slot, index, t_decoded)
        return events

    def _embed_step(self) -> list[Up]:
        assert self.embedder is not None  # step() calls this only when there is one with jobs
        td = time.perf_counter_ns()
        events = self.embedder.step()
        self.decode_ns += time.perf_counter_ns() - td
        return events

    def _draft(self, slot: Slot) -> list[int]:
        """Draft tokens to verify after the slot's next token (speculative requests only): never
        past num_predict or the context's end, so an accepted run needs no shift inside it."""
        req = slot.request
        if req.drafter is None:
            return []
        room = min(req.ctx_limit - slot.n_past - 2, self.n_batch - 1)
        if req.num_predict > 0:
            room = min(room, req.num_predict - req.n_generated - 1)
        return req.drafter.draft(room)

    def _verify(self, slot: Slot, draft: list[int]) -> list[Up]:
        """Decode the slot's next token and a draft in a call of their own (a 1+K-token sequence
        beside one-token ones would split the shared call), take the argmax at every position,
        keep the draft's agreed prefix in the KV and send each answer token through _emit."""
        req, p, n = slot.request, slot.n_past, len(draft) + 1
        assert req.drafter is not None  # only a drafting request has a draft
        self._tok[:n] = [req.next_token, *draft]
        self._pos[:n] = np.arange(p, p + n, dtype=np.int32)
        self._seq[:n] = slot.seq
        self._logits[:n] = 1
        slot.n_past += 1
        slot.cached.append(req.next_token)
        events = self._decode(n, [], [slot])
        if slot.req is not req:
            return events  # the decode failed it
        now = time.perf_counter_ns()
        answer = [int(self._row(i).argmax()) for i in range(n)]
        agreed = accepted(draft, answer)
        self.drafted_tokens += len(draft)
        self.accepted_tokens += agreed
        req.drafter.feedback(agreed)
        ll.llama_memory_seq_rm(self.memory, slot.seq, p + 1 + agreed, -1)
        for i in range(agreed + 1):
            if i:  # the KV already holds this agreed draft token
                slot.n_past += 1
                slot.cached.append(req.next_token)
            events += self._emit(slot, answer[i], i, now)
            if slot.req is not req:
                break  # finished: _release drops the KV past its cached tokens
        return events

    def _sample(self, slot: Slot, index: int, now: int) -> list[Up]:
        req = slot.request
        # Plain greedy: llama_sampler_sample copies the whole vocabulary into a candidate array
        # before taking the max; argmax over the logits row is the same token (first max on ties).
        token = int(self._row(index).argmax()) if req.greedy else ll.llama_sampler_sample(req.sampler, self.ctx, index)
        return self._emit(slot, token, index, now)

    def _emit(self, slot: Slot, token: int, index: int, now: int) -> list[Up]:
        """One answer token (batch entry `index` holds its logits): end of generation, text and
        stop strings, logprobs, num_predict and the context's end, for sampled and drafted alike."""
        req = slot.request
        if not req.t_first:
            req.t_first = now
        if ll.llama_vocab_is_eog(self.vocab, token):
            return self._finish(slot, FinishReason.STOP)
        req.n_generated += 1
        req.next_token = token
        if req.generated is not None:
            req.generated.append(token)
        if req.drafter is not None:
            req.drafter.append(token)
        text = req.text.feed(self.piece(token))
        events: list[Up]
        if req.logprobs is None:
            events = [Token(req.id, text)] if text else []
        else:
            # The sampler chain works on a copy: the row still holds the raw logits.
            req.logprobs.add(self._row(index), token)
            sent = req.logprobs.sent(text, req.text.stopped) if text or req.text.stopped else []
            events = [Token(req.id, text, sent)] if text or sent else []
        if req.text.stopped:
            return events + self._finish(slot, FinishReason.STOP)
        if 0 < req.num_predict <= req.n_generated:
            return events + self._finish(slot, FinishReason.LENGTH)
        if slot.n_past >= req.ctx_limit:
            if not req.shift:
                return events + self._finish(slot, FinishReason.LENGTH)
            self._shift(slot)
        return events

    def _row(self, index: int) -> np.ndarray:
        """The logits of a batch entry, as a view of llama.cpp's buffer (valid until the next decode)."""
        address = self._logits_ith(self.ctx, index)
        if not address:
            raise RuntimeError(f"no logits for batch entry {index}")
        return np.frombuffer(self._logits_row.from_address(address), np.float32)

    def _shift(self, slot: Slot) -> None:
        """The context is full: keep the first num_keep tokens (after the start token), drop
        half of the rest, slide the remainder back, and go on (Ollama's and llama-server's
        context shift). The moved keys are re-roped, not recomputed, so the sequence is no longer
        what a fresh prompt would give: it is never reused as a cached prefix."""
        req = slot.request
        n_keep = min(max(req.num_keep, 0) + (1 if self.add_bos else 0), slot.n_past - 2)
        n_discard = (slot.n_past - n_keep) // 2
        ll.llama_memory_seq_rm(self.memory, slot.seq, n_keep, n_keep + n_discard)
        ll.llama_memory_seq_add(self.memory, slot.seq, n_keep + n_discard, slot.n_past, -n_discard)
        del slot.cached[n_keep:n_keep + n_discard]
        slot.n_past -= n_discard
        req.shifted = True

    def _release(self, slot: Slot, keep_cache: bool = True) -> None:
        req = slot.request
        self.active.remove(slot)
        # A speculative run that ended inside an agreed draft leaves KV past the answer's end.
        ll.llama_memory_seq_rm(self.memory, slot.seq, len(slot.cached), -1)
        if self.exact and llamafile_built() and len(slot.cached) > len(req.prompt):
            # A generated token's K/V come from the one-token attention kernel, a prompt's from
            # tinyBLAS (exactness.py): keep the prompt only, so a follow-up that carries the answer
            # reads it as a prompt, as a fresh slot would.
            ll.llama_memory_seq_rm(self.memory, slot.seq, len(req.prompt), -1)
            del slot.cached[len(req.prompt):]
        if keep_cache and not req.shifted:
            self.prompt_cache.save(slot.seq, slot.cached)
        else:
            self._clear(slot)
        if req.sampler:
            ll.llama_sampler_free(req.sampler)
            req.sampler = None
        slot.req = None
        self.free.append(slot)

    def _finish(self, slot: Slot, reason: FinishReason) -> list[Up]:
        req = slot.request
        tail = req.text.flush() if reason != FinishReason.CANCEL and not req.text.stopped else ""
        end = time.perf_counter_ns()
        first = req.t_first or end
        held = req.logprobs.flush() if req.logprobs is not None and reason != FinishReason.CANCEL else None
        events: list[Up] = [Token(req.id, tail, held)] if tail or held else []
        events.append(Done(req.id, reason, prompt_eval_count=len(req.prompt),
                           prompt_eval_duration=max(first - (req.t_prompt or first), 0),
                           eval_count=req.n_generated, eval_duration=end - first,
                           context=None if req.generated is None else req.prompt + req.generated))
        self._release(slot)
        return events

    def _fail(self, slot: Slot, message: str) -> list[Up]:
        request_id = slot.request.id
        self._release(slot, keep_cache=False)  # its KV is in an unknown state
        return [Failed(request_id, message)]

    def close(self) -> None:
        """An orderly stop: the hottest prompt states go to disk (if on) before the context."""
        for slot in list(self.active):
            self._release(slot)
        if self.disk and self.free:
            for slot in self.free:  # a slot's last sequence may have left the prompt cache since
                self.prompt_cache.save(slot.seq, slot.cached)
            scratch = self.free[0]
            self._clear(scratch)
            self.disk.save(self.prompt_cache, scratch.seq)
        if self.embedder:
            self.embedder.close()
        ll.llama_free(self.ctx)
        ll.llama_model_free(self.model)
