"""What a request's stream carries from the scheduler to the API: one small type per kind.

The API matches on these types; nothing here is a dict with keys to remember.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from corral.models.tool_calls import ToolCall
from corral.runner import protocol as p
from corral.runner.protocol import TokenLogprob


class DoneReason(StrEnum):
    """Why a request ended (Ollama's done_reason)."""

    STOP = "stop"
    LENGTH = "length"
    CANCEL = "cancel"
    LOAD = "load"  # an empty request loaded the model
    UNLOAD = "unload"  # an empty request with keep_alive 0 unloaded it
    DEADLINE = "deadline"  # corral's: the request's deadline came while it ran


@dataclass(slots=True, frozen=True)
class Queued:
    """The request waits: its 1-based place among the requests waiting for its model, and its
    predicted start in seconds (eta.py; None until the model's step time was measured)."""

    position: int
    eta_s: float | None = None


@dataclass(slots=True, frozen=True)
class Text:
    """Generated text; with `logprobs`, the entries of the tokens whose text this completes."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(slots=True, frozen=True)
class Embedding:
    """One input's vector (inputs are answered in any order; `index` says which)."""

    index: int
    vector: list[float]


@dataclass(slots=True, frozen=True)
class Thinking:
    """Reasoning text, split out of the model's output (Ollama's `thinking`)."""

    text: str


@dataclass(slots=True, frozen=True)
class ToolCalls:
    """Calls parsed out of the model's output, each with its id and index, sent once complete."""

    calls: tuple[ToolCall, ...]


@dataclass(slots=True, frozen=True)
class Done:
    """The end of a request: counts (tokens), durations (ns), and what it waited for (s)."""

    reason: DoneReason
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    queue_s: float = 0.0  # from admission until a runner took it (its load included)
    load_s: float = 0.0
    tool_calls: bool = False
    context: list[int] | None = None  # the prompt's and answer's tokens, when asked for


@dataclass(slots=True, frozen=True)
class Failed:
    """The request failed; `status` is the HTTP status it means."""

    status: int
    message: str


Event = Queued | Text | Thinking | Embedding | ToolCalls | Done | Failed


def from_reply(reply: p.Token | p.Vector | p.Done | p.Failed, queue_s: float, load_s: float) -> Event:
    """A runner's message for a request → the event the API sees."""
    if isinstance(reply, p.Token):
        return Text(reply.text, tuple(reply.logprobs)) if reply.logprobs else Text(reply.text)
    if isinstance(reply, p.Vector):
        return Embedding(reply.index, reply.embedding)
    if isinstance(reply, p.Done):
        return Done(DoneReason(reply.reason.value), reply.prompt_eval_count, reply.prompt_eval_duration,
                    reply.eval_count, reply.eval_duration, queue_s=queue_s, load_s=load_s, context=reply.context)
    return Failed(reply.status, reply.message)
