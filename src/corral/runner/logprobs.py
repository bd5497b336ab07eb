"""Log-probabilities of sampled tokens, for the requests that ask (Ollama's `logprobs`).

As Ollama (whose llama-server computes them before its sampler chain): the log-softmax of the
raw logits row, so temperature, penalties and grammars do not change them. An entry goes out
with the text chunk that completes its token's text: pieces of a UTF-8 character and the start
of a possible stop string are held back by the TextStream, and so are their entries.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from corral.runner.protocol import MAX_TOP_LOGPROBS, TokenLogprob


def log_softmax_at(row: np.ndarray, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of `token` in a logits row, and the `top` most likely (id, logprob)
    pairs, most likely first (lower id first on ties). One pass of exp over the row."""
    peak = float(row.max())
    # Summed in float64: a float32 sum over a 250k-token vocabulary loses the small terms.
    log_z = peak + float(np.log(np.exp(row - peak).sum(dtype=np.float64)))
    best: list[tuple[int, float]] = []
    if top > 0:
        k = min(top, row.size)
        ids = np.argpartition(row, row.size - k)[row.size - k:]
        ids = ids[np.lexsort((ids, -row[ids]))]
        best = [(int(i), float(row[i]) - log_z) for i in ids]
    return float(row[token]) - log_z, best


@dataclass(slots=True)
class _Pending:
    token: int
    text: str
    logprob: float
    top: tuple[TokenLogprob, ...]
    end: int  # characters of the request's text up to and including this token's


class Logprobs:
    """One request's log-probabilities, held until the text they belong to is sent."""

    def __init__(self, top: int, piece: Callable[[int], bytes]) -> None:
        self.top = max(0, min(top, MAX_TOP_LOGPROBS))
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[_Pending] = []
        self._decoded = 0  # characters decoded so far
        self._sent = 0  # characters of text sent so far

    def add(self, row: np.ndarray, token: int) -> None:
        """A sampled token, with the logits row it was sampled from."""
        logprob, best = log_softmax_at(row, token, self.top)
        top = tuple(self._entry(i, lp) for i, lp in best)
        text = self._decoder.decode(self._piece(token))
        self._decoded += len(text)
        self._pending.append(_Pending(token, text, logprob, top, self._decoded))

    def sent(self, text: str, stopped: bool = False) -> list[TokenLogprob]:
        """`text` went out: the entries whose text it completes. After a stop string, also
        those whose text it began (the rest of theirs was the stop string), and no others."""
        self._sent += len(text)
        n = 0
        for p in self._pending:
            if p.end > self._sent and not (stopped and p.end - len(p.text) < self._sent):
                break
            n += 1
        out = [self._out(p) for p in self._pending[:n]]
        self._pending = [] if stopped else self._pending[n:]
        return out

    def flush(self) -> list[TokenLogprob]:
        """The generation ended otherwise (length, end token): every held entry. A character
        cut off by the end is what the TextStream flushes too: a replacement character."""
        tail = self._decoder.decode(b"", final=True)
        if tail and self._pending:
            self._pending[-1].text += tail
        out = [self._out(p) for p in self._pending]
        self._pending = []
        return out

    def _entry(self, token: int, logprob: float) -> TokenLogprob:
        piece = self._piece(token)
        return TokenLogprob(piece.decode("utf-8", errors="replace"), logprob, tuple(piece))

    def _out(self, p: _Pending) -> TokenLogprob:
        return TokenLogprob(p.text, p.logprob, tuple(self._piece(p.token)), p.top)
