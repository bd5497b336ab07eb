"""Continuous batching over llama.cpp's C API: P slots (KV sequences), each holding at most one
Request (slot.py).

Each step decodes one token of every generating slot (with a draft to verify, for a speculative
request) and chunks of waiting prompts (while others generate, only as many prompt tokens as fit
PREFILL_STEP_NS), and samples each slot that produced logits (argmax for plain greedy, else the
request's sampler chain): in fast mode in one llama_decode, in exact mode each prompt chunk and
each verification in a call of its own (see _step_exact for why). A request joins at the
next step after it arrives and its slot is free the moment it ends; the slot keeps its KV for
prefix reuse. One Engine owns one llama_context; only the tokenizer may be used from another
thread (the runner's stdin reader).
"""

from __future__ import annotations

import time

import llama_cpp as ll

from corral.models.embedding import Pooling, embedding_pooling
from corral.runner.batch import DecodeBatch, LogitsRows
from corral.runner.disk_cache import DiskCache
from corral.runner.draft_model import DraftModel
from corral.runner.embedder import Embedder, EmbedJob, model_pooling
from corral.runner.fit import Inputs, Specials, cut
from corral.runner.loading import load
from corral.runner.logprobs import Logprobs
from corral.runner.pieces import Kind, Piece, advance, next_piece, prompt_pieces, rewind
from corral.runner.prompt_cache import PromptCache
from corral.runner.protocol import Done, Failed, FinishReason, GenerationOptions, LoadConfig, Token, Up
from corral.runner.sampling import is_plain_greedy, make_sampler
from corral.runner.slot import Request, Slot
from corral.runner.slots import SlotPool, SlotsFull
from corral.runner.speculative import DraftConfig, Drafter, NgramDrafter, accepted
from corral.runner.textstream import TextStream
from corral.runner.vocab import Vocab

MIN_PIECE_CPU = 2
MIN_PIECE_GPU = 32
# While other slots generate, a step spends about this long on prompt tokens (at least
# PREFILL_MIN_TOKENS of them): the bound on the extra gap a long prompt adds between their tokens.
PREFILL_STEP_NS = 100_000_000
PREFILL_MIN_TOKENS = 32
PREFILL_SAMPLE_MIN = 16  # decodes with fewer prompt tokens say little about the speed
OPEN_ENDED_CONTEXTS = 10
MOVE_MAX_BYTES = 256 << 20


class Engine:
    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        loaded = load(cfg)
        self.model, self.ctx, self.on_gpu = loaded.model, loaded.ctx, loaded.on_gpu
        self.exact = cfg.exact
        # Exact: no prompt piece shorter than this (see prompt_chunk): the CPU takes other kernels
        # for a single token; CUDA for up to 8 tokens (mmvq, mmvf) and up to 16 (mmf).
        self.min_piece = (MIN_PIECE_GPU if self.on_gpu else MIN_PIECE_CPU) if cfg.exact else 1
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.memory = ll.llama_get_memory(self.ctx)
        self.can_shift = bool(ll.llama_memory_can_shift(self.memory))
        self.n_ctx_slot = ll.llama_n_ctx(self.ctx) // cfg.n_slots
        self.n_batch = cfg.n_batch
        self.n_threads = cfg.n_threads
        words = Vocab(self.vocab)
        self.tokenize, self.piece, self.add_bos, self.bos = words.tokenize, words.piece, words.add_bos, words.bos
        specials = Specials(self.bos, ll.llama_vocab_eos(self.vocab), self.add_bos,
                            bool(ll.llama_vocab_get_add_eos(self.vocab)))
        # Embeddings: the GGUF's pooling, inputs up to the context, at most the trained one (as Ollama).
        pooling, self.embed_causal = model_pooling(self.model)
        self.embed_pooling = embedding_pooling(pooling)
        self.n_ctx_embed = min(self.n_ctx_slot, ll.llama_model_n_ctx_train(self.model) or self.n_ctx_slot)
        self.inputs = Inputs(self.tokenize, self.n_vocab, self.n_ctx_slot, self.n_ctx_embed, specials,
                             embeds=self.embed_pooling != Pooling.RANK)
        self._rows = LogitsRows(self.ctx, self.n_vocab)  # the last decode's logits rows
        self._buffers = DecodeBatch.make(cfg.n_batch)
        b = self._buffers  # the batch's buffers by name: benchmarks/exactness.py fills them by hand
        self.batch, self._tok, self._pos, self._seq, self._logits = b.c, b.tok, b.pos, b.seq, b.logits
        self.active: list[Slot] = []  # in admission order, so prompts are served FIFO
        self.prefill_ns_per_token = 0.0  # measured; sizes prompt chunks while others generate
        self.decode_ns = 0  # time inside llama_decode, for the Python-overhead share
        self.step_ns = 0
        self.embedder: Embedder | None = None
        self.prompt_cache = PromptCache(self.ctx, cfg.prompt_cache_bytes)
        self.slots = SlotPool(self.ctx, cfg.n_slots, self.prompt_cache, self.min_piece, cfg.exact)
        # Holes are filled (packing.holes) only where a token can be taken back out of the KV: not
        # a recurrent state, which a throwaway token would change for good.
        self._fillable = not (ll.llama_model_is_recurrent(self.model) or ll.llama_model_is_hybrid(self.model))
        self.draft_config = DraftConfig(draft_max=cfg.draft_max)
        self.draft_model = DraftModel(cfg, self.vocab) if cfg.draft_model_path else None
        # Scattered busy slots are packed into one run (packing.py) on the CPU, where a move (a copy
        # of the sequence's state through host memory) costs less than the pass over the weights it
        # saves in every later step while its state is under the weights' size; and at most
        # MOVE_MAX_BYTES, the host memory a move may take for a moment beside the model's estimate.
        # Not with a draft model, whose own KV sequence would have to move too; on a GPU a move's
        # state crosses the bus both ways, not measured yet.
        self._packable = self._fillable and not self.on_gpu and self.draft_model is None
        self.move_bytes = min(ll.llama_model_size(self.model), MOVE_MAX_BYTES)
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
        if self.draft_model:
            self.draft_model.set_threads(self.n_threads)

    # -- requests -----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self.active) or bool(self.embedder and self.embedder.jobs)

    def embed(self, request_id: str, tokenized: list[list[int]]) -> list[Up]:
        """Queue tokenized inputs (inputs.embed_tokens()) for embedding."""
        if self.embedder is None:
            self.embedder = Embedder(self.model, self.n_ctx_embed, self.cfg.n_threads, self.embed_pooling,
                                     self.embed_causal)
            self.set_threads(self.n_threads)  # the share the scheduler gave this runner
        self.embedder.add(EmbedJob(request_id, tokenized))
        return []

    def submit(self, request_id: str, tokens: list[int], opts: GenerationOptions, num_ctx: int = 0,
               want_context: bool = False) -> list[Up]:
        """Start a request on a free slot; `tokens` is its prompt (inputs.prompt_tokens()). With
        `want_context` its Done carries the prompt's and the answer's tokens."""
        if not self.slots.free:
            raise SlotsFull("no free slot")
        # First: a bad format fails before a slot is taken. Plain greedy is argmax (_sample): no chain.
        greedy = is_plain_greedy(opts)
        sampler = None if greedy else make_sampler(self.vocab, self.n_vocab, self.n_ctx_slot, opts)
        limit = self.inputs.limit(num_ctx)
        if not tokens:
            tokens = [self.bos] if self.bos >= 0 else []
        tokens = cut(tokens, limit)
        slot = self.slots.take(tokens)
        # As Ollama: an open-ended generation (-1) is bounded at ten contexts; -2 fills one.
        num_predict = OPEN_ENDED_CONTEXTS * limit if opts.num_predict == -1 else opts.num_predict
        slot.req = Request(request_id, tokens, ctx_limit=limit, num_predict=num_predict,
                           shift=opts.shift and opts.num_predict != -2 and self.can_shift, num_keep=opts.num_keep,
                           text=TextStream(opts.stop), sampler=sampler, greedy=greedy,
                           logprobs=Logprobs(opts.top_logprobs, self.piece) if opts.logprobs else None,
                           n_prompt=slot.n_past, generated=[] if want_context else None,
                           drafter=self._drafter(slot.seq, tokens, opts) if greedy and not opts.logprobs else None)
        self.active.append(slot)
        if opts.num_predict == 0:
            return self._finish(slot, FinishReason.LENGTH)
        return []

    def _drafter(self, seq: int, tokens: list[int], opts: GenerationOptions) -> Drafter | None:
        """A greedy request's drafter (not with logprobs: a verified position's logits come from
        multi-token kernels and differ from a one-token decode's in the last digits): the runner's
        draft model if it has one, else prompt lookup when asked (or on by default)."""
        if self.draft_model is not None:
            return self.draft_model.drafter(seq, tokens, opts)
        if self.cfg.speculative if opts.speculative is None else opts.speculative:
            return NgramDrafter(tokens, self.draft_config)
        return None

    def cancel(self, request_id: str) -> list[Up]:
        if self.embedder and self.embedder.cancel(request_id):
            return [Done(request_id, FinishReason.CANCEL)]
        for slot in self.active:
            if slot.request.id == request_id:
                return self._finish(slot, FinishReason.CANCEL)
        return []

    # -- the loop -----------------------------------------------------------------------------
    def step(self) -> list[Up]:
        """One step: a token of every generating slot and chunks of waiting prompts (FIFO; while
        others generate, only as many prompt tokens as fit PREFILL_STEP_NS); fast mode in one
        llama_decode, exact mode in several (_step_exact)."""
        t0 = time.perf_counter_ns()
        events: list[Up] = self._embed_step() if self.embedder and self.embedder.jobs else []
        if self._packable and len(self.active) > 1:
            self.slots.pack(self.active, self.move_bytes)
        events += self._step_exact(t0) if self.exact else self._step_fast(t0)
        self.step_ns += time.perf_counter_ns() - t0
        return events

    def _prompts(self, n_generating: int, t0: int) -> list[Piece]:
        """This step's prompt chunks, beside n_generating tokens of generating slots."""
        room = self.n_batch - n_generating
        if n_generating:
            # Streams are generating: prefill only what fits the step's time budget at the
            # measured speed (a small first chunk measures it), so a long prompt arriving delays
            # each of their tokens by about PREFILL_STEP_NS, not seconds.
            fit = int(PREFILL_STEP_NS / self.prefill_ns_per_token) if self.prefill_ns_per_token else 0
            room = min(room, max(PREFILL_MIN_TOKENS, min(fit, self.n_batch)))
        pieces = prompt_pieces(self.active, room, self.min_piece)
        for piece in pieces:
            piece.req.t_prompt = piece.req.t_prompt or t0
        return pieces

    def _step_fast(self, t0: int) -> list[Up]:
        """Every slot's piece in one seq-ordered llama_decode (as llama-server): the prompts cost
        no decode of their own, and a prompt that ends here is sampled beside the streams.

        With one KV stream per sequence llama.cpp cuts the call into ubatches, each a run of
        consecutive sequence ids with the same number of tokens each: the first holds one token
        of every slot, the rest of the longer pieces (prompt chunks, drafts) follow, prompts of
        neighbouring slots together. Alone, a request's step is one piece: the decodes of the
        per-piece path (_step_exact), so the same answer."""
        generating = [slot for slot in self.active if not slot.request.prefilling]
        room = self.n_batch - len(generating)  # what drafts may take (first come, first served)
        pieces: list[Piece] = []
        for slot in generating:
            pieces.append(piece := next_piece(slot, room))
            room -= len(piece.tokens) - 1
        pieces += self._prompts(sum(len(piece.tokens) for piece in pieces), t0)
        return self._run(sorted(pieces, key=lambda p: p.slot.seq)) if pieces else []

    def _step_exact(self, t0: int) -> list[Up]:
        """Prompt chunks, each in a llama_decode of its own, then a token of every generating
        slot in one seq-ordered call; a draft is verified in a call of its own.

        How llama.cpp splits a batch decides the numbers: with one KV stream per sequence a
        ubatch holds a run of consecutive sequence ids with the same number of tokens each, and
        a one-token chunk of a prompt is computed by other kernels than a longer one. So
        generating tokens go in one seq-ordered call, each prompt chunk and each 1+K-token
        verification in a call of its own, and no prompt is ever cut into a one-token piece.
        Then a request's output is the same alone, batched, or resumed from a cached prefix.
        """
        events: list[Up] = []
        for piece in self._prompts(sum(1 for s in self.active if not s.request.prefilling), t0):
            events += self._run([piece])  # a failure fails its own slot only
        # After the prompts, so a slot whose prompt just finished generates in this same call:
        # a slot still prefilling would leave a hole in the run of sequence ids, and llama.cpp
        # would split the call into two ubatches.
        generating = sorted((s for s in self.active if not s.request.prefilling), key=lambda s: s.seq)
        pieces = [next_piece(slot, self.n_batch - 1) for slot in generating]
        for piece in pieces:
            if piece.kind == Kind.VERIFY:
                events += self._run([piece])
        if nexts := [piece for piece in pieces if piece.kind == Kind.NEXT]:
            events += self._run(nexts)
        return events

    def _run(self, pieces: list[Piece]) -> list[Up]:
        """Decode the pieces in one llama_decode, then sample (or verify) the ones with logits."""
        fill = self._fill(pieces)
        n, n_out = self._buffers.lay(pieces, fill)
        for piece in pieces:
            advance(piece)
        td = time.perf_counter_ns()
        rc = ll.llama_decode(self.ctx, self.batch)
        if self.on_gpu:
            # CUDA decodes asynchronously; wait here so decode_ns holds the GPU's work and the
            # Python share reported from it is Python's.
            ll.llama_synchronize(self.ctx)
        t_decoded = time.perf_counter_ns()
        self.decode_ns += t_decoded - td
        for seq, pos in fill:
            ll.llama_memory_seq_rm(self.memory, seq, pos, -1)
        if rc != 0 and len(pieces) > 1:
            # One slot's piece can fail a shared call: every slot back to where it was, and each
            # piece again alone, so only those that fail alone fail.
            for piece in pieces:
                rewind(piece, self.memory)
            return [e for piece in pieces for e in self._run([piece])]
        if rc != 0:
            # 1: no KV room, 2: aborted, <0: error. The sequence is in an unknown state, so fail
            # it rather than guess; the other slots go on.
            return self._fail(pieces[0].slot, f"llama_decode failed (code {rc})")
        n_prompt = sum(len(p.tokens) for p in pieces if p.kind == Kind.PROMPT)
        self.evaluated_tokens += n_prompt
        if n_out:
            self._rows.load(n_out)
        events: list[Up] = []
        for piece in pieces:  # one piece a slot: an ending one leaves the others' slots alone
            if piece.kind == Kind.VERIFY:
                events += self._accept(piece, t_decoded)
            elif piece.ends:
                events += self._sample(piece, t_decoded)
        if n_prompt >= PREFILL_SAMPLE_MIN:
            # Smoothed cost of a token in a decode that holds prompt tokens (sampling included).
            # In fast mode the streams' tokens share the call, so the budget bounds the whole step.
            per_token = (time.perf_counter_ns() - td) / n
            self.prefill_ns_per_token += (per_token - self.prefill_ns_per_token) * 0.3
        return events

    def _fill(self, pieces: list[Piece]) -> list[tuple[int, int]]:
        """Throwaway tokens (sequence id, position) for the hole in the pieces' run of sequence
        ids (SlotPool.fillers); none where the batch has no room left for them."""
        if len(pieces) < 2 or not self._fillable:
            return []
        fill = self.slots.fillers([piece.slot.seq for piece in pieces], self.n_ctx_slot)
        if fill and sum(len(piece.tokens) for piece in pieces) + len(fill) > self.n_batch:
            return []
        return fill

    def _embed_step(self) -> list[Up]:
        assert self.embedder is not None  # step() calls this only when there is one with jobs
        td = time.perf_counter_ns()
        events = self.embedder.step()
        self.decode_ns += time.perf_counter_ns() - td
        return events

    def _accept(self, piece: Piece, now: int) -> list[Up]:
        """A verified draft: the argmax at every position, the draft's agreed prefix kept in the
        KV, each answer token (the agreed ones and the model's own after them) through _emit."""
        slot, req, draft = piece.slot, piece.req, piece.tokens[1:]
        assert req.drafter is not None  # only a drafting request has a draft
        answer: list[int] = self._rows.view[piece.out:piece.out + len(piece.tokens)].argmax(axis=1).tolist()
        agreed = accepted(draft, answer)
        self.drafted_tokens += len(draft)
        self.accepted_tokens += agreed
        req.drafter.feedback(agreed)
        ll.llama_memory_seq_rm(self.memory, slot.seq, slot.n_past + agreed, -1)
        events: list[Up] = []
        for i in range(agreed + 1):
            if i:  # the KV already holds this agreed draft token
                slot.n_past += 1
                slot.cached.append(req.next_token)
            events += self._emit(slot, answer[i], piece.out + i, now)
            if slot.req is not req:
                break  # finished: release drops the KV past its cached tokens
        return events

    def _sample(self, piece: Piece, now: int) -> list[Up]:
        req = piece.req
        # Plain greedy: llama_sampler_sample copies the whole vocabulary into a candidate array
        # before taking the max; argmax over the logits row is the same token (first max on ties).
        token = (int(self._rows(piece.out).argmax()) if req.greedy
                 else ll.llama_sampler_sample(req.sampler, self.ctx, piece.last))
        return self._emit(piece.slot, token, piece.out, now)

    def _emit(self, slot: Slot, token: int, row: int, now: int) -> list[Up]:
        """One answer token (logits row `row` holds its logits): end of generation, text and
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
            req.logprobs.add(self._rows(row), token)
            sent = req.logprobs.sent(text, req.text.stopped) if text or req.text.stopped else []
            events = [Token(req.id, text, sent)] if text or sent else []
        if req.text.stopped:
            return events + self._finish(slot, FinishReason.STOP)
        if 0 < req.num_predict <= req.n_generated:
            return events + self._finish(slot, FinishReason.LENGTH)
        if slot.n_past >= req.ctx_limit:
            if not req.shift:
                return events + self._finish(slot, FinishReason.LENGTH)
            self.slots.shift(slot, self.add_bos)
        return events

    def _release(self, slot: Slot, keep_cache: bool = True) -> None:
        req = slot.request
        self.active.remove(slot)
        self.slots.release(slot, keep_cache)
        if req.sampler:
            ll.llama_sampler_free(req.sampler)
            req.sampler = None

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
        free = self.slots.free
        if self.disk and free:
            for slot in free:  # a slot's last sequence may have left the prompt cache since
                self.prompt_cache.save(slot.seq, slot.cached)
            scratch = free[0]
            self.slots.clear(scratch)
            self.disk.save(self.prompt_cache, scratch.seq)
        if self.embedder:
            self.embedder.close()
        if self.draft_model:
            self.draft_model.close()
        ll.llama_free(self.ctx)
        ll.llama_model_free(self.model)
