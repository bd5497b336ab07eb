"""One generate/chat request on its way through the scheduler, shared by the Ollama and OpenAI routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from corral.api.context import AppContext
from corral.api.schemas import Options
from corral.config import parse_duration
from corral.errors import ClientError, RequestFailed
from corral.models.capabilities import prefer_chat_template
from corral.models.modelfile import load_extras
from corral.models.prompt_fit import byte_budget, fit_chat, tail_text, trim_messages
from corral.models.store import ModelName
from corral.models.template import ChatPrompt, is_go_template, render_chat, render_go, render_go_generate
from corral.models.tool_calls import parse_tool_calls
from corral.runner.protocol import TokenLogprob
from corral.scheduler.events import Done, Embedding, Event, Failed, Text, ToolCalls
from corral.scheduler.scheduler import ModelSpec, PromptFit


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Job:
    """One generate or chat request on its way through the scheduler."""

    def __init__(self, ctx: AppContext, model: str, options: Options, keep_alive: str | int | float | None) -> None:
        self.ctx = ctx
        self.started = time.monotonic_ns()
        try:
            self.keep_alive = parse_duration(keep_alive, ctx.settings.keep_alive)
        except ValueError as exc:
            raise ClientError(f"invalid keep_alive: {exc}") from None
        extras = load_extras(ctx.store, ModelName.parse(model))
        if extras.parameters:  # a created model's PARAMETERs are defaults under the request's options
            options = Options.model_validate({**extras.parameters, **options.model_dump(exclude_none=True)})
        self.spec: ModelSpec = ctx.resolver.resolve(model, options.num_ctx, options.num_gpu, options.num_thread)
        self.options = options
        # As Ollama: the manifest's Go template, unless the GGUF's Jinja template can do more
        # (prefer_chat_template); else the GGUF's; else the prompt as it is.
        info = self.spec.info
        self.go_template: str | None = None
        self.template = info.chat_template
        if extras.template and not is_go_template(extras.template):
            self.template = extras.template  # a Jinja TEMPLATE given to corral's create
        elif extras.template and not prefer_chat_template(extras.template, info.chat_template):
            self.go_template = extras.template
        self.system = extras.system
        self.messages = extras.messages

    def conversation(self, messages: list[dict]) -> list[dict]:
        """A chat as Ollama runs it: the model's MESSAGEs first, and its SYSTEM in front when
        the request's own first message is not a system message."""
        if not messages:
            return messages
        full = [*self.messages, *messages]
        if self.system and messages[0].get("role") != "system":
            full.insert(0, {"role": "system", "content": self.system})
        return full

    def render(self, messages: list[dict], tools: list | None = None) -> ChatPrompt:
        """Messages (a conversation()) → prompt, with the model's template."""
        if self.go_template:
            return render_go(self.go_template, messages, tools=tools)
        info = self.spec.info
        return render_chat(self.template, messages, bos_token=info.bos_token, eos_token=info.eos_token, tools=tools)

    def generate_prompt(self, prompt: str, system: str | None, template: str | None, suffix: str | None) -> ChatPrompt:
        """/api/generate's prompt, as Ollama's GenerateHandler builds it: the request's system
        (else the model's), the model's MESSAGEs, then the prompt; a request's `template` is Go."""
        system = system or self.system or ""
        prompt = tail_text(prompt, self._budget())
        go = template or self.go_template
        if go:
            return render_go_generate(go, prompt, system=system, suffix=suffix or "", history=self.messages,
                                      tools=None if template else [])
        if not self.template:
            return ChatPrompt(prompt)  # Ollama's default template is {{ .Prompt }}
        messages = [{"role": "system", "content": system}] if system else []
        return self.render([*messages, *self.messages, {"role": "user", "content": prompt}])

    def chat(self, messages: list[dict], tools: list | None = None, format: Any = None,
             shift: bool | None = None, logprobs: int | None = None) -> AsyncIterator[Event]:
        """A chat, rendered to fit its context as Ollama does: when the whole conversation is too
        long, the oldest turns go and the system messages stay (asked of the runner's tokenizer
        once the request has its slot). A template that fails is a 400 before admission."""
        messages = trim_messages(self.conversation(messages), self._budget())
        first = self.render(messages, tools)
        # A token covers at least one byte (plus a start token): a short rendering surely fits.
        if len(first.text.encode("utf-8", errors="surrogatepass")) + 2 < self.spec.n_ctx:
            return self.run(first.text, first.stop, format, shift, logprobs)

        async def render(subset: list[dict]) -> str:
            return (await asyncio.to_thread(self.render, subset, tools)).text

        async def fitted(fits: Callable[[str], Awaitable[bool]]) -> str:
            return tail_text(await fit_chat(messages, render, fits), self._budget())

        return self.run(fitted, first.stop, format, shift, logprobs)

    async def load_or_unload(self, shape: Callable[[str], dict]) -> dict:
        """Ollama's empty prompt: load the model, or unload it when keep_alive is 0."""
        if self.keep_alive == 0:
            self.ctx.scheduler.unload(self.spec.name)
            return {**shape(""), "done": True, "done_reason": "unload"}
        waiter = self.ctx.scheduler.admit(self.spec, self.keep_alive)
        await self.ctx.scheduler.warm(waiter)
        return {**shape(""), "done": True, "done_reason": "load"}

    def _budget(self) -> int:
        return byte_budget(self.spec.n_ctx, self.spec.info.max_token_bytes)

    def run(self, prompt: str | PromptFit, extra_stop: tuple[str, ...] = (), format: Any = None,
            shift: bool | None = None, logprobs: int | None = None) -> AsyncIterator[Event]:
        """Admit and generate; `prompt` is the text, or a function that finds it once a runner
        can say what fits (see Scheduler.generate). `logprobs`: None, or the alternatives per token."""
        options = self.options.generation(extra_stop, format, shift=shift is not False, logprobs=logprobs)
        if isinstance(prompt, str):
            prompt = tail_text(prompt, self._budget())
        waiter = self.ctx.scheduler.admit(self.spec, self.keep_alive)  # Busy/NeverFits: before any reply
        return self.ctx.scheduler.generate(waiter, prompt, options)

    def final_stats(self, done: Done) -> dict:
        """Ollama's closing fields; every duration is there (load_duration 0 when loaded)."""
        return {
            "done": True,
            "done_reason": done.reason.value,
            "total_duration": time.monotonic_ns() - self.started,
            "load_duration": int(done.load_s * 1e9),
            "prompt_eval_count": done.prompt_eval_count,
            "prompt_eval_duration": done.prompt_eval_duration,
            "eval_count": done.eval_count,
            "eval_duration": done.eval_duration,
        }

    async def embed(self, inputs: list[str], truncate: bool = True, dimensions: int | None = None) -> dict:
        """Embeddings for `inputs` through the scheduler: {"embeddings", "prompt_eval_count", durations}.

        Raises RequestFailed with the runner's status when it reports an error.
        """
        if len(inputs) > MAX_EMBED_INPUTS:
            raise ClientError(f"too many inputs: {len(inputs)} (at most {MAX_EMBED_INPUTS} per request)")
        waiter = self.ctx.scheduler.admit(self.spec, self.keep_alive)
        vectors: list[list[float]] = [[] for _ in inputs]
        async for ev in self.ctx.scheduler.embed(waiter, inputs, truncate):
            if isinstance(ev, Failed):
                raise RequestFailed(ev.status, ev.message)
            if isinstance(ev, Embedding):
                vectors[ev.index] = ev.vector
            elif isinstance(ev, Done):
                if dimensions:
                    vectors = [_shorten(v, dimensions) for v in vectors]
                return {"embeddings": vectors, "prompt_eval_count": ev.prompt_eval_count,
                        "total_duration": time.monotonic_ns() - self.started,
                        "load_duration": int(ev.load_s * 1e9)}
        raise RequestFailed(500, "embedding ended without a result")


# As OpenAI's embeddings endpoint: a bound on one request's work and on the reply it builds.
MAX_EMBED_INPUTS = 2048


def _shorten(vector: list[float], dimensions: int) -> list[float]:
    """The first `dimensions` components, renormalized (Matryoshka-style, as Ollama does)."""
    if dimensions > len(vector):
        raise ClientError(f"dimensions {dimensions} exceeds the model's embedding size {len(vector)}")
    head = vector[:dimensions]
    norm = sum(x * x for x in head) ** 0.5
    return [x / norm for x in head] if norm else head


async def with_tool_calls(events: AsyncIterator[Event], tools: list[dict] | None) -> AsyncIterator[Event]:
    """When tools were offered, hold the text back and, at the end, split it into content and a
    ToolCalls event (a call cannot be streamed before it is complete)."""
    names = {t.get("function", {}).get("name") for t in tools or []} - {None}
    if not names:
        async for ev in events:
            yield ev
        return
    parts: list[str] = []
    logprobs: list[TokenLogprob] = []
    async for ev in events:
        if isinstance(ev, Text):
            parts.append(ev.text)
            logprobs.extend(ev.logprobs)
            continue
        if isinstance(ev, Done):
            content, calls = parse_tool_calls("".join(parts), names)
            if content or logprobs:  # every token's entry, the calls' included (as Ollama's parsers)
                yield Text(content, tuple(logprobs))
            if calls:
                yield ToolCalls(calls)
                ev = replace(ev, tool_calls=True)
        yield ev


@dataclass
class Collected:
    """A non-streaming reply: all text, tool calls, and how it ended."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    done: Done | None = None
    failed: Failed | None = None


async def collect(events: AsyncIterator[Event]) -> Collected:
    parts: list[str] = []
    result = Collected()
    async for ev in events:
        if isinstance(ev, Text):
            parts.append(ev.text)
            result.logprobs.extend(ev.logprobs)
        elif isinstance(ev, ToolCalls):
            result.calls = ev.calls
        elif isinstance(ev, Done):
            result.done = ev
            break
        elif isinstance(ev, Failed):
            result.failed = ev
            break
    result.text = "".join(parts)
    if result.done is None and result.failed is None:
        result.failed = Failed(500, "generation ended without a result")
    return result
