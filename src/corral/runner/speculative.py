"""Prompt-lookup ("n-gram") drafting for speculative decoding, without a model.

A request's own context often says what comes next: an answer that edits, quotes or summarises
its prompt repeats runs of it. The drafter finds the longest recent n-gram (N_MAX down to N_MIN
tokens) ending the context that occurred earlier, and proposes the tokens that followed its most
recent earlier occurrence (as llama.cpp's `--spec-type ngram-simple` and vLLM's "ngram" method).
The engine decodes [current token + draft] in one call and keeps the longest prefix the model's
argmax agrees with (`accepted`), so a greedy answer is the one it would give without drafting.

Pure Python on token ids: an index from each n-gram to where its continuation starts, kept up to
date one token at a time (O(N_MAX) per token), so drafting costs no scan of the context.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

N_MIN = 2
N_MAX = 4
DRAFT_MAX = 10  # tokens proposed at most per step (the engine lowers it near a limit)
PAUSE_MAX = 16  # steps without drafting after a run of wholly rejected drafts, at most


class Drafter(Protocol):
    """What the engine asks of a request's drafter (NgramDrafter, draft_model.ModelDrafter): it
    is told every answer token, proposes a draft, and hears how much of it was kept."""

    def append(self, token: int) -> None: ...

    def draft(self, limit: int | None = None) -> list[int]: ...

    def feedback(self, agreed: int) -> None: ...


@dataclass(frozen=True)
class DraftConfig:
    """How a runner drafts: the n-gram lengths it matches and the longest draft it proposes."""

    n_min: int = N_MIN
    n_max: int = N_MAX
    draft_max: int = DRAFT_MAX


class NgramDrafter:
    """A request's context (prompt + tokens generated so far) and its n-gram index."""

    def __init__(self, tokens: Iterable[int] = (), config: DraftConfig = DraftConfig()) -> None:
        if not 1 <= config.n_min <= config.n_max:
            raise ValueError("need 1 <= n_min <= n_max")
        self.config = config
        self.tokens: list[int] = []
        # n → {n-gram: index of the token that followed its latest occurrence}. An n-gram goes in
        # only once a token follows it, so the context's own ending never matches itself.
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(config.n_min, config.n_max + 1)}
        self._misses = 0  # drafts in a row the model rejected whole
        self._pause = 0  # draft() calls left that propose nothing
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        toks = self.tokens
        end = len(toks)
        for n, index in self._index.items():
            if end >= n:
                index[tuple(toks[end - n:end])] = end
        toks.append(token)

    def draft(self, limit: int | None = None) -> list[int]:
        """The tokens that followed the latest earlier occurrence of the longest n-gram ending
        the context; [] when none occurred (or `limit` is 0)."""
        k = self.config.draft_max if limit is None else min(limit, self.config.draft_max)
        if self._pause > 0:
            self._pause -= 1
            return []
        if k <= 0:
            return []
        toks = self.tokens
        for n in range(self.config.n_max, self.config.n_min - 1, -1):
            if len(toks) < n:
                continue
            start = self._index[n].get(tuple(toks[-n:]))
            if start is not None:
                return toks[start:start + k]
        return []


    def feedback(self, agreed: int) -> None:
        """How many tokens of the last draft the model kept. A wholly rejected draft pauses
        drafting for 1, 2, 4 ... PAUSE_MAX steps (doubling while they keep failing): an answer
        that does not repeat its context then pays for a failed verification rarely."""
        if agreed:
            self._misses = 0
            return
        self._misses += 1
        self._pause = min(2 ** (self._misses - 1), PAUSE_MAX)


def accepted(draft: Sequence[int], argmax: Sequence[int]) -> int:
    """How many draft tokens the model agrees with: `argmax[i]` is the model's token after the
    current token and draft[:i] (len(argmax) == len(draft) + 1). The answer's next tokens are
    then argmax[:n + 1]: the agreed draft tokens and the model's own token after them."""
    n = 0
    while n < len(draft) and argmax[n] == draft[n]:
        n += 1
    return n
