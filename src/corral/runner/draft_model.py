"""Speculative decoding with a draft model (Ollama's DRAFT layer, llama-server's --spec-draft-model).

A runner whose model carries a draft loads it once beside the target: its own llama model and
context with a KV sequence per slot. For a speculating request the draft proposes up to
`draft_num_predict` tokens greedily (one small decode each); the engine verifies them in its
existing path (one target decode of [current token + draft], the argmax agreed prefix kept), so
a greedy answer is token for token the one it would be without drafting.

The draft's KV for a slot is kept in step with the request's tokens lazily: before drafting, the
sequence is cut back to the longest prefix it shares with the request's context (a rejected
draft's tokens go: llama_memory_seq_rm) and the tokens it lacks are decoded. A new request on the
same slot reuses whatever prefix the last one left.
"""

from __future__ import annotations

import llama_cpp as ll
import numpy as np

from corral.runner.batch import DecodeBatch, LogitsRows
from corral.runner.kernels import KvType
from corral.runner.loading import params
from corral.runner.protocol import GenerationOptions, LoadConfig

DEFAULT_DRAFT_NUM_PREDICT = 4  # Ollama's default for a separate draft model (api/types.go)
DRAFT_BATCH = 512
# llama-server's --draft-p-min default (Ollama passes none): a draft ends at the first token the
# draft model gives less than this probability, so an unsure draft costs no failed verification.
P_MIN = 0.75
# A draft under this many parameters decodes on one thread: a decode of a small model is mostly
# llama.cpp's per-op thread barriers, not matmuls (measured on 2 busy cores: a random 2-layer
# 64-wide draft took ~1 ms for 4 tokens on one thread, 1 ms to 1.4 s on two).
ONE_THREAD_PARAMS = 50_000_000


class DraftError(RuntimeError):
    """A draft model that cannot be loaded, or does not share the target's vocabulary."""


def draft_num_predict(opts: GenerationOptions) -> int:
    """Tokens a request drafts per step: its option, Ollama's default 4, 0 = off."""
    return DEFAULT_DRAFT_NUM_PREDICT if opts.draft_num_predict is None else max(opts.draft_num_predict, 0)


def vocab_texts(vocab: ll.llama_vocab_p, ids: range) -> list[bytes]:
    return [ll.llama_vocab_get_text(vocab, i) or b"" for i in ids]


def check_vocab(target: ll.llama_vocab_p, draft: ll.llama_vocab_p) -> None:
    """The draft must tokenize as the target does: its token ids are what the target verifies.
    Same tokenizer type, size, special tokens and every token's text."""
    n_target, n_draft = ll.llama_vocab_n_tokens(target), ll.llama_vocab_n_tokens(draft)
    if n_target != n_draft:
        raise DraftError(f"the draft model's vocabulary does not match the model's ({n_draft} tokens, "
                         f"the model has {n_target})")
    if ll.llama_vocab_type(target) != ll.llama_vocab_type(draft):
        raise DraftError("the draft model's tokenizer does not match the model's")
    specials = (ll.llama_vocab_bos, ll.llama_vocab_eos)
    if any(f(target) != f(draft) for f in specials) or vocab_texts(target, range(n_target)) != vocab_texts(
            draft, range(n_draft)):
        raise DraftError("the draft model's vocabulary does not match the model's (token texts differ)")


class DraftModel:
    """The draft model of one runner: a context with a sequence per slot, and what each holds."""

    def __init__(self, cfg: LoadConfig, target_vocab: ll.llama_vocab_p) -> None:
        # Fast kernels always: the draft only proposes, the target's verification decides.
        mparams, cparams, _ = params(cfg, False, KvType.F16)
        self.model = ll.llama_model_load_from_file(cfg.draft_model_path.encode(), mparams)
        if not self.model:
            raise DraftError(f"failed to load the draft model {cfg.draft_model_path}")
        try:
            self.vocab = ll.llama_model_get_vocab(self.model)
            check_vocab(target_vocab, self.vocab)
            cparams.n_ctx = cfg.n_ctx_slot * cfg.n_slots
            cparams.n_batch = cparams.n_ubatch = DRAFT_BATCH
            cparams.n_seq_max = cfg.n_slots
            self.max_threads = 1 if ll.llama_model_n_params(self.model) < ONE_THREAD_PARAMS else cfg.n_threads
            cparams.n_threads = cparams.n_threads_batch = self.max_threads
            cparams.no_perf = True
            self.ctx = ll.llama_init_from_model(self.model, cparams)
            if not self.ctx:
                raise DraftError("failed to create the draft model's context (out of memory?)")
        except BaseException:
            ll.llama_model_free(self.model)
            raise
        self.memory = ll.llama_get_memory(self.ctx)
        self.n_ctx_seq = ll.llama_n_ctx(self.ctx) // cfg.n_slots
        self._rows = LogitsRows(self.ctx, ll.llama_vocab_n_tokens(self.vocab))
        self._batch = DecodeBatch.make(DRAFT_BATCH)
        self.kv: list[list[int]] = [[] for _ in range(cfg.n_slots)]  # each sequence's tokens in the KV
        self.p_min = P_MIN

    def drafter(self, seq: int, tokens: list[int], opts: GenerationOptions) -> ModelDrafter | None:
        """A request's drafter on slot `seq`, or None when it asks for no drafting."""
        k = draft_num_predict(opts)
        if k == 0 or opts.speculative is False:
            return None
        return ModelDrafter(self, seq, tokens, k)

    def set_threads(self, n: int) -> None:
        n = max(1, min(n, self.max_threads))
        ll.llama_set_n_threads(self.ctx, n, n)

    def draft(self, seq: int, tokens: list[int], k: int) -> list[int]:
        """Up to k greedy tokens after `tokens` (the request's context); [] when they would not
        fit the draft's sequence (a shifted context) or a decode fails."""
        if k <= 0 or not tokens or len(tokens) + k > self.n_ctx_seq:
            return []
        kv = self.kv[seq]
        keep = _common(kv, tokens, len(tokens) - 1)  # the last token is decoded again: its logits
        if keep < len(kv):
            ll.llama_memory_seq_rm(self.memory, seq, keep, -1)
            del kv[keep:]
        for start in range(keep, len(tokens), DRAFT_BATCH):
            if not self._decode(seq, tokens[start:start + DRAFT_BATCH]):
                return []
        out: list[int] = []
        while (token := self._sure()) is not None:
            out.append(token)
            if len(out) == k or ll.llama_vocab_is_eog(self.vocab, token) or not self._decode(seq, [token]):
                break
        return out

    def _decode(self, seq: int, tokens: list[int]) -> bool:
        """Decode tokens at the sequence's next positions, logits at the last; False (and the
        sequence cleared) on a failure: drafting is optional, the request goes on without it."""
        b, n, kv = self._batch, len(tokens), self.kv[seq]
        b.tok[:n] = tokens
        b.pos[:n] = np.arange(len(kv), len(kv) + n, dtype=np.int32)
        b.seq[:n] = seq
        b.logits[:n] = 0
        b.logits[n - 1] = 1
        b.c.n_tokens = n
        if ll.llama_decode(self.ctx, b.c) != 0:
            ll.llama_memory_seq_rm(self.memory, seq, -1, -1)
            kv.clear()
            return False
        kv.extend(tokens)
        self._rows.load(1)  # the one row asked for: the last token's
        return True

    def _sure(self) -> int | None:
        """The draft's greedy token after the last decode, or None when its probability is
        under p_min."""
        row = self._rows(0)
        best = int(row.argmax())
        if self.p_min > 0 and 1.0 / float(np.exp(row - row[best]).sum()) < self.p_min:
            return None
        return best

    def close(self) -> None:
        ll.llama_free(self.ctx)
        ll.llama_model_free(self.model)


def _common(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of a and b, at most limit."""
    n = min(len(a), len(b), limit)
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


class ModelDrafter:
    """One request's context (prompt + answer so far) and its draft model's sequence."""

    def __init__(self, model: DraftModel, seq: int, tokens: list[int], k: int) -> None:
        self.model, self.seq, self.k = model, seq, k
        self.tokens = list(tokens)

    def append(self, token: int) -> None:
        self.tokens.append(token)

    def draft(self, limit: int | None = None) -> list[int]:
        return self.model.draft(self.seq, self.tokens, self.k if limit is None else min(limit, self.k))

    def feedback(self, agreed: int) -> None:
        """Nothing to do: the next draft() cuts the draft's KV back to the agreed prefix."""
