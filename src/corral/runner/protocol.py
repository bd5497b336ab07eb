"""The runner IPC protocol: the only module both the server and a runner process import.

Transport: the runner's stdin carries server → runner messages and a private duplicate of its
original stdout carries runner → server events (its fd 1 is pointed at stderr so that nothing
llama.cpp prints can corrupt the channel). Framing: one JSON object per line. A runner writes all
events of one decode step in a single write, so the cost is one syscall per step, not per token.

Every message is a small dataclass; `encode` and `decode` here are the only code that knows how
one looks on the wire (its tag under "op" going down, "ev" going up, then its fields).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar


@dataclass(frozen=True)
class LoadConfig:
    """Everything fixed for the life of a runner; a change means a new runner."""

    model_path: str
    n_slots: int
    n_ctx_slot: int
    n_threads: int
    n_gpu_layers: int = 0
    main_gpu: int = 0
    n_batch: int = 512
    prompt_cache_bytes: int = 0  # host memory for saved sequence states
    max_step_s: float = 60.0  # a step running longer than this stops the heartbeat (a stuck decode)
    cache_dir: str = ""  # where prompt-cache states wait for the model's next load (disk_cache.py)
    cache_dir_bytes: int = 0  # that directory's bound, all models together; 0: off
    speculative: bool = False  # n-gram drafting for plain greedy requests that do not say (CORRAL_SPECULATIVE)
    draft_max: int = 10  # tokens drafted at most per step (CORRAL_DRAFT_MAX)
    draft_model_path: str = ""  # a draft model (the manifest's draft layer): drafts instead of n-grams
    stream_interval_s: float = 0.0  # a request's text is sent at most once per this (runner/coalesce.py)
    # Kernels (runner/kernels.py): exact = batch-invariant; flash attention None = the device's default.
    exact: bool = False
    flash_attention: bool | None = None
    kv_type: str = "f16"  # a KvType value

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadConfig:
        return cls(**json.loads(text))


MAX_TOP_LOGPROBS = 20  # Ollama's bound on top_logprobs


@dataclass
class GenerationOptions:
    """Per-request sampling and stopping, with Ollama's defaults."""

    num_predict: int = -1  # -1: until the context is full; -2: fill the context
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    seed: int = -1  # -1: random
    repeat_penalty: float = 1.0  # Ollama's default since v0.12 (api/types.go DefaultOptions)
    repeat_last_n: int = 64  # -1: the whole context; 0: off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    num_keep: int = 4  # tokens kept at the start when a full context is shifted
    shift: bool = True  # shift a full context and go on; False: finish with "length"
    format: Any = None  # "json" or a JSON schema: output constrained by a grammar
    logprobs: bool = False  # each generated token's log-probability (over the raw logits)
    top_logprobs: int = 0  # and this many of the most likely tokens at each position
    # Prompt-lookup drafting, verified by argmax (plain greedy requests only; the output is the
    # same): True / False, or None for the runner's default (LoadConfig.speculative).
    speculative: bool | None = None
    # With a draft model: tokens it drafts per step (None: Ollama's 4; 0: no drafting).
    draft_num_predict: int | None = None

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


class FinishReason(StrEnum):
    """Why a runner ended a request."""

    STOP = "stop"  # an end-of-generation token or a stop string
    LENGTH = "length"  # num_predict reached, or the context full with no shift
    CANCEL = "cancel"  # the server asked


# -- server → runner --------------------------------------------------------------------------

@dataclass(slots=True)
class Submit:
    """Generate from `prompt` (cut to `num_ctx` tokens by the runner).

    `context`: token ids an earlier answer returned (Ollama's deprecated `context`), put before
    the prompt's tokens. `want_context`: the Done carries the prompt's and the answer's tokens."""

    TAG: ClassVar[str] = "submit"
    id: str
    prompt: str
    num_ctx: int
    options: GenerationOptions
    context: list[int] = field(default_factory=list)
    want_context: bool = False


@dataclass(slots=True)
class Embed:
    """Embed each input; answered by a Vector per input, then a Done."""

    TAG: ClassVar[str] = "embed"
    id: str
    inputs: list[str]
    truncate: bool = True
    num_ctx: int = 0  # the request's context: each input's token limit (0: the runner's)


@dataclass(slots=True)
class Cancel:
    TAG: ClassVar[str] = "cancel"
    id: str


@dataclass(slots=True)
class Threads:
    """Use n of the runner's threads from now on (the scheduler shares the cores)."""

    TAG: ClassVar[str] = "threads"
    n: int


@dataclass(slots=True)
class Shutdown:
    TAG: ClassVar[str] = "shutdown"


@dataclass(slots=True)
class Fits:
    """Does this prompt fit a request's context whole? Answered by FitsAnswer from the runner's
    stdin thread at once, not by the engine loop."""

    TAG: ClassVar[str] = "fits"
    id: str
    text: str
    num_ctx: int


Down = Submit | Embed | Cancel | Threads | Shutdown | Fits


# -- runner → server --------------------------------------------------------------------------

@dataclass(slots=True)
class Ready:
    """The model is loaded."""

    TAG: ClassVar[str] = "ready"
    n_ctx_slot: int
    n_slots: int
    pid: int


@dataclass(slots=True, frozen=True)
class TokenLogprob:
    """One token's log-probability: `bytes` is its raw piece (a piece may hold part of a UTF-8
    character, then `token` is what that piece added to the text); `top` the most likely tokens
    at its position, when asked for."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[TokenLogprob, ...] = ()

    def to_wire(self) -> list:
        return [self.token, self.logprob, self.bytes, [t.to_wire() for t in self.top]]

    @classmethod
    def from_wire(cls, wire: list) -> TokenLogprob:
        token, logprob, raw, top = wire
        return cls(token, logprob, tuple(raw), tuple(cls.from_wire(t) for t in top))


@dataclass(slots=True)
class Token:
    """Text of one request (one or more tokens' worth, whole characters only), with the
    log-probabilities of the tokens whose text it completes when the request asked for them."""

    TAG: ClassVar[str] = "tok"
    id: str
    text: str
    logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class Vector:
    """One embedding input's vector."""

    TAG: ClassVar[str] = "emb"
    id: str
    index: int
    embedding: list[float]


@dataclass(slots=True)
class Done:
    """A request ended; its counts (tokens) and durations (ns); the tokens of its prompt and
    answer when the Submit asked for them."""

    TAG: ClassVar[str] = "done"
    id: str
    reason: FinishReason
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    context: list[int] | None = None


@dataclass(slots=True)
class Failed:
    """One request failed; `status` says whose fault (400: the request's, 500: ours)."""

    TAG: ClassVar[str] = "error"
    id: str
    message: str
    status: int = 500


@dataclass(slots=True)
class Fatal:
    """The runner cannot go on (a load failure, an engine error)."""

    TAG: ClassVar[str] = "fatal"
    message: str


@dataclass(slots=True)
class Stats:
    """Runner-wide counters: time inside llama_decode and time the loop had work (ns), tokens."""

    TAG: ClassVar[str] = "stats"
    decode_ns: int
    busy_ns: int
    reused_tokens: int = 0  # prompt tokens taken from a slot's KV or the prompt cache, not decoded
    cache_restores: int = 0  # prompt-cache entries restored into a slot
    evaluated_tokens: int = 0  # prompt tokens decoded
    disk_restores: int = 0  # prompt-cache entries read back from disk at load (a warm reload)
    drafted_tokens: int = 0  # speculative decoding: tokens proposed by prompt lookup
    accepted_tokens: int = 0  # ...and those the model agreed with
    slot_moves: int = 0  # requests moved to another slot, so a decode stays one run of sequence ids

    def __add__(self, other: Stats) -> Stats:
        return Stats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Stats)))


@dataclass(slots=True)
class Beat:
    """A busy runner that has had nothing else to say for a while is still making progress."""

    TAG: ClassVar[str] = "beat"


@dataclass(slots=True)
class FitsAnswer:
    TAG: ClassVar[str] = "fits"
    id: str
    fits: bool


Up = Ready | Token | Vector | Done | Failed | Fatal | Stats | Beat | FitsAnswer

_DOWN: dict[str, type] = {c.TAG: c for c in (Submit, Embed, Cancel, Threads, Shutdown, Fits)}
_UP: dict[str, type] = {c.TAG: c for c in (Ready, Token, Vector, Done, Failed, Fatal, Stats, Beat, FitsAnswer)}
_FIELDS: dict[type, tuple[str, ...]] = {c: tuple(f.name for f in fields(c)) for c in (*_DOWN.values(), *_UP.values())}
_TAG_KEY: dict[type, str] = {**{c: "op" for c in _DOWN.values()}, **{c: "ev" for c in _UP.values()}}

EMBED_OUTPUT_BYTES = 128 << 20  # one embedding decode's output rows (logits + hidden state), at most


def embed_chunk_tokens(n_vocab: int, n_embd: int) -> int:
    """Tokens in one embedding decode of a causal model (embedder.py; memory.py counts it): with
    embeddings on, llama.cpp computes every token's logits and hidden state, so a chunk is bounded
    by those rows' bytes (SmolLM2's 49k-entry vocabulary: 512 tokens; Gemma-3's 262k: 127)."""
    return max(32, min(512, EMBED_OUTPUT_BYTES // (4 * (n_vocab + n_embd))))

# Every runner → server line starts with "ev" and then "id", so that the request a line belongs to
# can be read from its first bytes even when the whole line is too long to keep (see handle.py).
MAX_LINE = 8 << 20


def encode(message: Down | Up) -> bytes:
    """One message as one line."""
    cls = type(message)
    if isinstance(message, Token) and message.logprobs is None:
        return encode_text(message.id, message.text)
    wire: dict[str, Any] = {_TAG_KEY[cls]: cls.TAG}
    for name in _FIELDS[cls]:
        value = getattr(message, name)
        if value is None:
            continue  # an optional field left out reads back as its default (None)
        if isinstance(value, GenerationOptions):
            value = asdict(value)
        elif name == "logprobs":
            value = [t.to_wire() for t in value]
        wire[name] = value
    return json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def encode_text(request_id: str, text: str) -> bytes:
    """A Token without logprobs, the bytes encode()'s json.dumps would give: the message of every
    stream at every step, so written out (json's C string encoder, no dict; ~4x faster)."""
    return f'{_TOKEN_HEAD}{_json_str(request_id)},"text":{_json_str(text)}}}\n'.encode()


_json_str = json.encoder.encode_basestring  # json.dumps's, for ensure_ascii=False
_TOKEN_HEAD = f'{{"{_TAG_KEY[Token]}":"{Token.TAG}","id":'


def decode_up(line: bytes) -> Up:
    """A runner → server line; ValueError if it is not one."""
    wire = _load(line)
    cls = _UP.get(wire.pop("ev", None))
    if cls is None:
        raise ValueError("unknown runner message")
    if cls is Done:
        wire["reason"] = FinishReason(wire["reason"])
    elif cls is Token and "logprobs" in wire:
        try:
            wire["logprobs"] = [TokenLogprob.from_wire(t) for t in wire["logprobs"]]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad logprobs: {exc}") from None
    return cls(**wire)


def decode_down(line: bytes) -> Down:
    """A server → runner line; ValueError if it is not one."""
    wire = _load(line)
    cls = _DOWN.get(wire.pop("op", None))
    if cls is None:
        raise ValueError("unknown server message")
    if cls is Submit:
        wire["options"] = GenerationOptions(**wire.get("options") or {})
    return cls(**wire)


def _load(line: bytes) -> dict[str, Any]:
    try:
        wire = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(wire, dict):
        raise ValueError("not a JSON object")
    return wire


_ID = re.compile(rb'"id":"([^"\\]{1,64})"')


def request_id_of(head: bytes) -> str | None:
    """The request id of a line that cannot be decoded whole, from its first bytes."""
    match = _ID.search(head[:256])
    return match.group(1).decode(errors="replace") if match else None
