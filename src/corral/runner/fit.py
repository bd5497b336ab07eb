"""Tokenizing only the part of a text a context can use.

llama.cpp's tokenizer takes seconds for megabytes of text (11 s for 1.9 MB here), and a request
can carry megabytes. A prompt longer than its context keeps its start token and its latest
tokens, an embedding input its first tokens; so only a window at that end is tokenized, grown
until it holds more tokens than the context. A window's cut edge may split a word differently
than the whole text would, but that edge lies far outside the tokens that are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from corral.errors import ClientError

Tokenize = Callable[[str, bool], list[int]]  # (text, add_special) → token ids

FIRST_WINDOW_BYTES_PER_TOKEN = 8
MARGIN = 16  # tokens beyond the limit a window must hold, so its cut edge is never kept


def prompt_tokens(tokenize: Tokenize, text: str, limit: int) -> list[int]:
    """The tokens of a prompt for a context of `limit` tokens, cut as cut() says."""
    data = text.encode("utf-8", errors="replace")
    window = max(limit, 1) * FIRST_WINDOW_BYTES_PER_TOKEN
    while window < len(data):
        tail = tokenize(data[-window:].decode("utf-8", errors="ignore"), False)
        if len(tail) >= limit + MARGIN:
            first = tokenize(data[:256].decode("utf-8", errors="ignore"), True)[:1]
            return cut(first + tail, limit)
        window *= 4
    return cut(tokenize(text, True), limit)


def cut(tokens: list[int], limit: int) -> list[int]:
    """A prompt of `limit` tokens or more → its first token and the latest three quarters of
    the context, leaving a quarter for the answer (as Ollama); a shorter one as it is."""
    if len(tokens) < limit:
        return tokens
    keep = limit - limit // 4
    return tokens[:1] + tokens[len(tokens) - keep + 1:]


def input_tokens(tokenize: Tokenize, text: str, limit: int) -> tuple[list[int], bool]:
    """The first `limit` tokens of an embedding input, and whether the input was longer."""
    data = text.encode("utf-8", errors="replace")
    window = max(limit, 1) * FIRST_WINDOW_BYTES_PER_TOKEN
    while window < len(data):
        head = tokenize(data[:window].decode("utf-8", errors="ignore"), True)
        if len(head) >= limit + MARGIN:
            return head[:limit], True
        window *= 4
    tokens = tokenize(text, True)
    return tokens[:limit], len(tokens) > limit


@dataclass(frozen=True, slots=True)
class Specials:
    """The start/end tokens a vocabulary adds to a text it tokenizes."""

    bos: int
    eos: int
    add_bos: bool
    add_eos: bool


def embedding_input(tokenize: Tokenize, text: str, limit: int, truncate: bool, specials: Specials) -> list[int]:
    """An embedding input's tokens, cut as Ollama's EmbedHandler cuts them: the text's own tokens
    get `limit` less one for each of BOS and EOS they do not hold already (Ollama reserves both,
    whether or not the vocabulary adds them), then the vocabulary's own start/end are added.
    Ollama's errors, in its words: a context too small for any token, an over-long input with
    `truncate` off, and (from llama-server) an input with no token at all."""
    tokens, longer = input_tokens(lambda t, _special: tokenize(t, False), text, limit)
    if tokens:
        budget = limit - (tokens[0] != specials.bos) - (longer or tokens[-1] != specials.eos)
        if budget <= 0:
            raise ClientError("input after truncation exceeds maximum context length")
        if longer or len(tokens) > budget:
            if not truncate:
                raise ClientError("the input length exceeds the context length")
            tokens = tokens[:budget]
    head = [specials.bos] if specials.add_bos and tokens[:1] != [specials.bos] else []
    tail = [specials.eos] if specials.add_eos and tokens[-1:] != [specials.eos] else []
    full = head + tokens + tail
    if not full:
        raise ClientError("Input content cannot be empty")
    return full


@dataclass(frozen=True)
class Inputs:
    """A runner's tokenizer with its limits: prompts and embedding inputs cut to a request's
    context. Thread-safe: the runner's stdin reader tokenizes beside the engine loop."""

    tokenize: Tokenize
    n_vocab: int
    n_ctx_slot: int
    n_ctx_embed: int  # the slot's context, at most the model's trained one (as Ollama)
    specials: Specials
    embeds: bool  # False for a reranker (rank pooling)

    def limit(self, num_ctx: int) -> int:
        """A request's context: its num_ctx, at most the slot's."""
        return min(num_ctx, self.n_ctx_slot) if num_ctx > 0 else self.n_ctx_slot

    def prompt_tokens(self, text: str, num_ctx: int, context: list[int] | None = None) -> list[int]:
        """A prompt's tokens, cut to its context; after `context` (token ids an earlier answer
        returned, which start with their own BOS)."""
        limit = self.limit(num_ctx)
        if not context:
            return prompt_tokens(self.tokenize, text, limit)
        bad = next((t for t in context if not 0 <= t < self.n_vocab), None)
        if bad is not None:  # an id outside the vocabulary would abort llama.cpp
            raise ClientError(f"context: token id {bad} is not in the model's vocabulary (0 to {self.n_vocab - 1})")
        return cut(list(context) + self.tokenize(text, False), limit)

    def prompt_fits(self, text: str, num_ctx: int) -> bool:
        """Whether a prompt's tokens fit its context whole."""
        _, longer = input_tokens(self.tokenize, text, self.limit(num_ctx) - 1)
        return not longer

    def embed_tokens(self, inputs: list[str], truncate: bool, num_ctx: int = 0) -> list[list[int]]:
        """Embedding inputs' tokens, each cut to the request's context as Ollama cuts them."""
        if not self.embeds:
            raise ClientError("this model does not support embeddings")
        limit = min(self.limit(num_ctx), self.n_ctx_embed)
        return [embedding_input(self.tokenize, text, limit, truncate, self.specials) for text in inputs]
