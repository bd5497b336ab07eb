"""The engine's slots over one llama_context's KV sequences: which free slot a prompt takes (the
longest prefix already computed, in the slot or in the prompt cache), what a finished one keeps,
moving a request to another slot (packing.py), and the context shift of a full one."""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Sequence

import llama_cpp as ll
import numpy as np

from corral.runner.exactness import llamafile_built
from corral.runner.packing import holes, packing, runs
from corral.runner.prompt_cache import MIN_TOKENS, PromptCache, common_prefix
from corral.runner.slot import Slot

# A moved state's host buffer is kept for the next move up to this size; a larger one (a long
# context of a large model) is the move's own, so the runner holds no such memory between moves.
KEEP_MOVE_BUFFER = 64 << 20


class SlotsFull(RuntimeError):
    pass


class SlotPool:
    def __init__(self, ctx: ll.llama_context_p, n_slots: int, prompt_cache: PromptCache, min_piece: int,
                 exact: bool) -> None:
        self.ctx, self.memory = ctx, ll.llama_get_memory(ctx)
        self.prompt_cache, self.min_piece, self.exact = prompt_cache, min_piece, exact
        self.by_seq = tuple(Slot(seq=i) for i in range(n_slots))
        self.free: deque[Slot] = deque(self.by_seq)
        self.reused_tokens = 0  # prompt tokens not decoded thanks to prefix reuse
        self.cache_restores = 0
        self.moves = 0  # requests moved to another slot (packing)
        self._moving = np.empty(0, np.uint8)  # a moved sequence's state, reused from move to move

    def take(self, tokens: list[int]) -> Slot:
        """A free slot with as much of this prompt already in its KV as possible.

        The slot keeps what its last request left if that is the longest match; if the prompt
        cache (where every finished sequence is saved) holds a longer one, that state is restored
        into it. The KV is then cut back to the shared prefix. K and V of a token do not depend
        on the batch that computed them, so a reused prefix gives the same numbers as a fresh one
        (a generated token's only in a build without llamafile: see exactness.py, and release).
        """
        # Next to the busy slots (the lowest such): llama.cpp decodes a run of consecutive
        # sequence ids as one ubatch, so a slot apart from the run costs a pass of its own.
        busy = [slot.seq for slot in self.by_seq if slot not in self.free]
        best = min(self.free, key=lambda s: (runs(sorted([*busy, s.seq])), s.seq))
        best_len = common_prefix(best.cached, tokens)
        entry, entry_len = self.prompt_cache.best(tokens)
        if entry is not None and entry_len >= best_len + MIN_TOKENS:
            self.clear(best)
            if self.prompt_cache.restore(entry, best.seq):
                best.cached, best_len = list(entry.tokens), entry_len
                self.cache_restores += 1
            else:
                best_len = 0
        self.free.remove(best)
        # Decode at least min_piece prompt tokens (see engine.step), fewer only when the prompt is shorter.
        keep = max(min(best_len, len(tokens) - self.min_piece), 0)
        if best.cached and ll.llama_memory_seq_pos_min(self.memory, best.seq) > 0:
            keep = 0  # a sliding-window cache has dropped early positions: the prefix is incomplete
        if keep < len(best.cached):
            ll.llama_memory_seq_rm(self.memory, best.seq, keep, -1)
            del best.cached[keep:]
        best.n_past = keep
        self.reused_tokens += keep
        return best

    def pack(self, active: list[Slot], max_bytes: int) -> None:
        """Where the active slots lie scattered (the last requests of a burst, a slot freed beside
        the run's end), their requests moved into one run of sequence ids (packing.packing); each
        moved one takes its new slot's place in `active` (whose order is the prompts' FIFO)."""
        for src, dst in packing([slot.seq for slot in active], len(self.by_seq)):
            slot, target = self.by_seq[src], self.by_seq[dst]
            if self.move(slot, target, max_bytes):
                active[active.index(slot)] = target

    def move(self, src: Slot, dst: Slot, max_bytes: int) -> bool:
        """Move src's request to the free slot dst: its KV state copied across (the very bytes,
        so its answer is unchanged), src free and empty. Not when the state is over max_bytes,
        nor a shifted sequence (its keys wait for their re-rope in the next decode)."""
        n = ll.llama_state_seq_get_size(self.ctx, src.seq)
        if src.request.shifted or not 0 < n <= max_bytes:
            return False
        held = self._moving if len(self._moving) >= n else np.empty(n, np.uint8)
        if n <= KEEP_MOVE_BUFFER:
            self._moving = held
        buf = (ctypes.c_uint8 * n).from_buffer(held)
        self.clear(dst)
        written = ll.llama_state_seq_get_data(self.ctx, buf, n, src.seq)
        if written <= 0 or ll.llama_state_seq_set_data(self.ctx, buf, written, dst.seq) <= 0:
            self.clear(dst)
            return False
        dst.req, dst.n_past, dst.cached = src.req, src.n_past, src.cached
        src.req, src.cached = None, []
        self.clear(src)
        self.free.remove(dst)
        self.free.append(src)
        self.moves += 1
        return True

    def clear(self, slot: Slot) -> None:
        ll.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
        slot.cached.clear()
        slot.n_past = 0

    def release(self, slot: Slot, keep_cache: bool = True) -> None:
        """A slot whose request ended: its KV saved as a prefix to reuse (not after a shift, nor
        when keep_cache is False: a failed decode leaves it in an unknown state), then free."""
        req = slot.request
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
            self.clear(slot)
        slot.n_past = len(slot.cached)  # what its KV holds now
        slot.req = None
        self.free.append(slot)

    def fillers(self, seqs: Sequence[int], n_ctx_slot: int) -> list[tuple[int, int]]:
        """(sequence id, position) of a throwaway token for each hole in the run `seqs` that
        packing.holes fills, at that slot's next position (a free slot's after what it keeps for
        prefix reuse, a waiting prompt's at its next token); none where a slot's context is full."""
        fill = [(seq, self.by_seq[seq].n_past) for seq in holes(seqs)]
        return [] if any(pos >= n_ctx_slot for _, pos in fill) else fill

    def shift(self, slot: Slot, add_bos: bool) -> None:
        """The context is full: keep the first num_keep tokens (after the start token), drop
        half of the rest, slide the remainder back, and go on (Ollama's and llama-server's
        context shift). The moved keys are re-roped, not recomputed, so the sequence is no longer
        what a fresh prompt would give: it is never reused as a cached prefix."""
        req = slot.request
        n_keep = min(max(req.num_keep, 0) + (1 if add_bos else 0), slot.n_past - 2)
        n_discard = (slot.n_past - n_keep) // 2
        ll.llama_memory_seq_rm(self.memory, slot.seq, n_keep, n_keep + n_discard)
        ll.llama_memory_seq_add(self.memory, slot.seq, n_keep + n_discard, slot.n_past, -n_discard)
        del slot.cached[n_keep:n_keep + n_discard]
        slot.n_past -= n_discard
        req.shifted = True
