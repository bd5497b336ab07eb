"""Incremental detokenization with stop strings: bytes in, safe text out.

Token pieces may split a UTF-8 character, and a stop string may span several tokens, so text is
released only once it can no longer turn into a stop string or a broken character.
"""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, stop: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._held = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add a token's bytes; return the text that is now safe to emit.

        Sets `stopped` when a stop string appeared; the stop string and anything after it are
        dropped, as Ollama does.
        """
        text = self._held + self._decoder.decode(piece)
        for s in self._stop:
            at = text.find(s)
            if at >= 0:
                self.stopped = True
                self._held = ""
                return text[:at]
        keep = self._partial_stop_suffix(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The rest of the text, when generation ends for another reason."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _partial_stop_suffix(self, text: str) -> int:
        """Length of the longest end of `text` that is the start of some stop string."""
        best = 0
        for s in self._stop:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best
