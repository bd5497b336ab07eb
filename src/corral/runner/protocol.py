"""The runner IPC protocol: the only module both the server and a runner process import.

Transport: the runner's stdin carries server → runner messages and a private duplicate of its
original stdout carries runner → server events (its fd 1 is pointed at stderr so that nothing
llama.cpp prints can corrupt the channel). Framing: one JSON object per line. A runner writes all
events of one decode step in a single write, so the cost is one syscall per step, not per token.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# server → runner
OP_SUBMIT = "submit"  # generate: {"id", "prompt", "num_ctx", "options"}
OP_EMBED = "embed"  # {"id", "inputs", "truncate"}; answered by a "done" with "embeddings"
OP_CANCEL = "cancel"
OP_SHUTDOWN = "shutdown"
OP_THREADS = "threads"  # {"n"}: use n of the runner's threads from now on
OP_FITS = "fits"  # {"id", "text", "num_ctx"}: does this prompt fit the context? answered by EV_FITS

# runner → server
EV_READY = "ready"  # model loaded: {"n_ctx_slot", "n_slots"}
EV_FATAL = "fatal"  # the runner cannot go on: {"message"}
EV_TOKEN = "tok"  # {"id", "text"}
EV_EMBEDDING = "emb"  # one input's vector: {"id", "index", "embedding"}; a "done" follows the last
EV_DONE = "done"  # {"id", "reason", counts and durations}
EV_ERROR = "error"  # one request failed: {"id", "message"}
EV_FITS = "fits"  # {"id", "fits"}: answered at once by the stdin thread, not the engine loop
EV_BEAT = "beat"  # a busy runner that has had nothing else to say for a while is still making progress

# Every runner → server line starts with "ev" and then "id", so that the request a line belongs to
# can be read from its first bytes even when the whole line is too long to keep (see handle.py).
MAX_LINE = 8 << 20


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

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "LoadConfig":
        return cls(**json.loads(text))


@dataclass
class GenerationOptions:
    """Per-request sampling and stopping, with Ollama's defaults."""

    num_predict: int = -1  # -1: until the context is full; -2: fill the context
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    seed: int = -1  # -1: random
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64  # -1: the whole context; 0: off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    num_keep: int = 4  # tokens kept at the start when a full context is shifted
    shift: bool = True  # shift a full context and go on; False: finish with "length"
    format: Any = None  # "json" or a JSON schema: output constrained by a grammar

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict:
    return json.loads(line)


_ID = re.compile(rb'"id":"([^"\\]{1,64})"')


def request_id_of(head: bytes) -> str | None:
    """The request id of a line that cannot be decoded whole, from its first bytes."""
    match = _ID.search(head[:256])
    return match.group(1).decode(errors="replace") if match else None
