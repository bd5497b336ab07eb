"""A model's vocabulary through llama.cpp: text → tokens, token → bytes (cached)."""

from __future__ import annotations

import ctypes

import llama_cpp as ll


class Vocab:
    """Tokenizing is thread-safe (the runner's stdin reader calls it beside the decode loop);
    pieces are only asked for from the engine's thread."""

    def __init__(self, vocab: ctypes.c_void_p) -> None:
        self.vocab = vocab
        self.add_bos = bool(ll.llama_vocab_get_add_bos(vocab))
        self.bos = ll.llama_vocab_bos(vocab)
        self._piece = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        data = text.encode("utf-8", errors="replace")
        cap = len(data) + 16
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, True)
        if n < 0:
            cap = -n
            buf = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, True)
        tokens = list(buf[:n])
        # A chat template that writes its own BOS, tokenized with add_special, gets two.
        if self.add_bos and len(tokens) > 1 and tokens[0] == tokens[1] == self.bos:
            tokens = tokens[1:]
        return tokens

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            n = ll.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, False)
            if n < 0:
                self._piece = ctypes.create_string_buffer(-n)
                n = ll.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, False)
            cached = self._pieces[token] = self._piece.raw[:n]
        return cached
