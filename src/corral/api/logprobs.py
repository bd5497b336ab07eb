"""Token log-probabilities in each API's shape: Ollama's `logprobs`, OpenAI chat's
`choices[].logprobs.content`, and the legacy completions' parallel lists."""

from __future__ import annotations

from collections.abc import Sequence

from corral.runner.protocol import TokenLogprob


def ollama_logprobs(entries: Sequence[TokenLogprob]) -> list[dict]:
    """Ollama's []Logprob: `bytes` and `top_logprobs` left out when empty (Go's omitempty)."""
    return [_ollama(e, with_top=True) for e in entries]


def _ollama(e: TokenLogprob, with_top: bool) -> dict:
    obj: dict = {"token": e.token, "logprob": e.logprob}
    if e.bytes:
        obj["bytes"] = list(e.bytes)
    if with_top and e.top:
        obj["top_logprobs"] = [_ollama(t, with_top=False) for t in e.top]
    return obj


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict:
    """OpenAI's chat `logprobs`: every field present (`top_logprobs` an empty list when none
    were asked for), as OpenAI sends them and its clients expect."""
    return {"content": [{**_openai(e), "top_logprobs": [_openai(t) for t in e.top]} for e in entries]}


def _openai(e: TokenLogprob) -> dict:
    return {"token": e.token, "logprob": e.logprob, "bytes": list(e.bytes)}


class CompletionLogprobs:
    """The legacy completions `logprobs` of one reply, chunk by chunk: `text_offset` counts
    characters of the completion from its start across chunks."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, entries: Sequence[TokenLogprob]) -> dict:
        offsets = []
        for e in entries:
            offsets.append(self.offset)
            self.offset += len(e.token)
        return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
                "text_offset": offsets}
