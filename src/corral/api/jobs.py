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
from corral.api.tenancy import current_caller, deadline_in
from corral.api.vectors import normalize
from corral.config import parse_duration
from corral.errors import ClientError, RequestFailed
from corral.models.capabilities import Capability, check_request, model_capabilities, prefer_chat_template
from corral.models.modelfile import load_extras
from corral.models.output_parser import Content, OutputFormat, OutputParser, Piece, Reasoning, TemplateTags
from corral.models.prompt_fit import byte_budget, fit_chat, tail_text, trim_messages
from corral.models.store import ModelName
from corral.models.template import ChatPrompt, is_go_template, render_chat, render_go, render_go_generate
from corral.models.thinking import Think, parse_think, thinks
from corral.models.tool_calls import ToolCall
from corral.runner.protocol import TokenLogprob
from corral.scheduler.events import Done, Embedding, Event, Failed, Text, Thinking, ToolCalls
from corral.scheduler.scheduler import ModelSpec, PromptFit
from corral.scheduler.tenants import Lane, Ticket


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Job:
    """One generate or chat request on its way through the scheduler."""

    def __init__(self, ctx: AppContext, model: str, options: Options, keep_alive: str | int | float | None,
                 priority: str | None = None, deadline: float | None = None) -> None:
        """`priority` and `deadline` (seconds): the body's fields, under the X-Corral-Priority and
        X-Corral-Deadline headers (api/tenancy.py)."""
        self.ctx = ctx
        self.started = time.monotonic_ns()
        self.admitted = self.started  # when run() or embed() handed it to the scheduler
        try:
            self.keep_alive = parse_duration(keep_alive, ctx.settings.keep_alive)
        except ValueError as exc:
            raise ClientError(f"invalid keep_alive: {exc}") from None
        self.name = ModelName.parse(model)
        caller = current_caller()
        asked = caller.priority or (Lane.parse(priority, "priority") if priority is not None else None)
        until = caller.deadline or (deadline_in(deadline, "deadline") if deadline is not None else None)
        self.ticket = Ticket(caller.tenant, caller.tenant.lane(asked), until)
        extras = load_extras(ctx.store, self.name)
        if extras.parameters:  # a created model's PARAMETERs are defaults under the request's options
            options = Options.model_validate({**extras.parameters, **options.model_dump(exclude_none=True)})
        self.spec: ModelSpec = ctx.resolver.resolve(model, options.num_ctx, options.num_gpu, options.num_thread,
                                                     options.exact)
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
        self.capabilities = model_capabilities(info, extras.template)

    def check(self, endpoint: str, model: str, think: object, *, tools: list | None = None,
              suffix: str | None = None, images: list | None = None) -> Think | None:
        """Ollama's capability checks (a 400 with its text, before anything is admitted) and
        the `think` the request runs with: a thinking model thinks unless told not to."""
        want = [Capability.TOOLS] if tools else []
        want += [Capability.INSERT] if suffix else []
        # Ollama sends images on to its engine, which refuses them; corral says so up front.
        want += [Capability.VISION] if images else []
        n = self.name
        return check_request(self.capabilities, model=model, endpoint=endpoint, think=parse_think(think),
                             full_name=f"{n.host}/{n.namespace}/{n.model}:{n.tag}", want=want)

    def split(self, events: AsyncIterator[Event], prompt: str, think: Think | None,
              tools: list | None = None) -> AsyncIterator[Event]:
        """The output split into Text, Thinking and ToolCalls events (models/output_parser.py):
        thinking when the request thinks and the template shows its tags, calls when tools were
        offered. `prompt` is the rendered prompt (one that ends in the opening tag starts inside
        thinking)."""
        names = frozenset(t["function"]["name"] for t in tools or ()
                          if isinstance(t, dict) and isinstance(t.get("function"), dict)
                          and isinstance(t["function"].get("name"), str))
        tags = TemplateTags.of(self.go_template, self.template)
        parser = OutputParser(OutputFormat(tags, thinking=thinks(think), prompt=prompt, tools=names))
        return events if parser.idle else _split(events, parser)

    def conversation(self, messages: list[dict]) -> list[dict]:
        """A chat as Ollama runs it: the model's MESSAGEs first, and its SYSTEM in front when
        the request's own first message is not a system message."""
        if not messages:
            return messages
        full = [*self.messages, *messages]
        if self.system and messages[0].get("role") != "system":
            full.insert(0, {"role": "system", "content": self.system})
        return full

    def render(self, messages: list[dict], tools: list | None = None, think: Think | None = None) -> ChatPrompt:
        """Messages (a conversation()) → prompt, with the model's template."""
        if self.go_template:
            return render_go(self.go_template, messages, tools=tools, think=think)
        info = self.spec.info
        return render_chat(self.template, messages, bos_token=info.bos_token, eos_token=info.eos_token,
                           tools=tools, think=think)

    def generate_prompt(self, prompt: str, system: str | None, template: str | None, suffix: str | None,
                        continues: bool = False, think: Think | None = None) -> ChatPrompt:
        """/api/generate's prompt, as Ollama's GenerateHandler builds it: the request's system
        (else the model's), the model's MESSAGEs (not when it `continues` an earlier answer's
        context), then the prompt; a request's `template` is Go."""
        system = system or self.system or ""
        prompt = tail_text(prompt, self._budget())
        history = [] if continues else self.messages
        go = template or self.go_template
        if go:
            return render_go_generate(go, prompt, system=system, suffix=suffix or "", history=history,
                                      tools=None if template else [], think=think)
        if not self.template:
            return ChatPrompt(prompt)  # Ollama's default template is {{ .Prompt }}
        messages = [{"role": "system", "content": system}] if system else []
        return self.render([*messages, *history, {"role": "user", "content": prompt}], think=think)

    def chat(self, messages: list[dict], tools: list | None = None, format: Any = None,
             shift: bool | None = None, think: Think | None = None,
             logprobs: int | None = None) -> AsyncIterator[Event]:
        """A chat, rendered to fit its context as Ollama does: when the whole conversation is too
        long, the oldest turns go and the system messages stay (asked of the runner's tokenizer
        once the request has its slot). A template that fails is a 400 before admission. The
        output comes split (split())."""
        messages = trim_messages(self.conversation(messages), self._budget())
        first = self.render(messages, tools, think)
        # A token covers at least one byte (plus a start token): a short rendering surely fits.
        if len(first.text.encode("utf-8", errors="surrogatepass")) + 2 < self.spec.n_ctx:
            return self.split(self.run(first.text, first.stop, format, shift, logprobs=logprobs), first.text,
                              think, tools)

        async def render(subset: list[dict]) -> str:
            return (await asyncio.to_thread(self.render, subset, tools, think)).text

        async def fitted(fits: Callable[[str], Awaitable[bool]]) -> str:
            return tail_text(await fit_chat(messages, render, fits), self._budget())

        # Every fitting ends as the whole rendering does (the generation prompt).
        return self.split(self.run(fitted, first.stop, format, shift, logprobs=logprobs), first.text, think, tools)

    async def load_or_unload(self, shape: Callable[[str], dict]) -> dict:
        """Ollama's empty prompt: load the model, or unload it when keep_alive is 0. The reply
        has the durations it took (nothing was evaluated, so no eval counts, as Ollama's)."""
        if self.keep_alive == 0:
            self.ctx.scheduler.unload(self.spec.name)
            reason = "unload"
        else:
            await self.ctx.scheduler.warm(self.ctx.scheduler.admit(self.spec, self.keep_alive, self.ticket))
            reason = "load"
        took = max(time.monotonic_ns() - self.started, 1)
        return {**shape(""), "done": True, "done_reason": reason, "total_duration": took, "load_duration": took}

    def _budget(self) -> int:
        return byte_budget(self.spec.n_ctx, self.spec.info.max_token_bytes)

    def run(self, prompt: str | PromptFit, extra_stop: tuple[str, ...] = (), format: Any = None,
            shift: bool | None = None, context: list[int] | None = None,
            want_context: bool = False, logprobs: int | None = None) -> AsyncIterator[Event]:
        """Admit and generate; `prompt` is the text, or a function that finds it once a runner
        can say what fits (see Scheduler.generate); `context` and `want_context` as Ollama's
        /api/generate `context` (runner.protocol.Submit); `logprobs`: None, or the alternatives
        per token."""
        options = self.options.generation(extra_stop, format, shift=shift is not False, logprobs=logprobs)
        if isinstance(prompt, str):
            prompt = tail_text(prompt, self._budget())
        waiter = self.ctx.scheduler.admit(self.spec, self.keep_alive, self.ticket)  # Busy/...: before any reply
        self.admitted = time.monotonic_ns()
        return self.ctx.scheduler.generate(waiter, prompt, options, context, want_context)

    def final_stats(self, done: Done) -> dict:
        """Ollama's closing fields, every one present and non-zero as Ollama's are (a duration
        that rounds to nothing, a prompt wholly reused from the cache, is 1 ns)."""
        stats: dict[str, Any] = {
            "done": True,
            "done_reason": done.reason.value,
            "total_duration": time.monotonic_ns() - self.started,
            "load_duration": self.load_duration(done),
            "prompt_eval_count": done.prompt_eval_count,
            "prompt_eval_duration": max(done.prompt_eval_duration, 1),
            "eval_count": done.eval_count,
            "eval_duration": max(done.eval_duration, 1),
        }
        if done.context is not None:
            stats["context"] = done.context
        return stats

    def load_duration(self, done: Done) -> int:
        """Ollama's load_duration: all the time before the work began (lookup, queue, load)."""
        return max(int(done.queue_s * 1e9) + self.admitted - self.started, 1)

    async def embed(self, inputs: list[str], truncate: bool = True,
                    shape: Callable[[list[float]], list[float]] = normalize) -> Embedded:
        """Embeddings for `inputs` through the scheduler, each raw vector passed through `shape`
        (vectors.py: normalized, cut to dimensions). Each input is cut to the request's context
        (or refused with `truncate` off) by the runner, as Ollama's EmbedHandler does.

        Raises RequestFailed with the runner's status when it reports an error.
        """
        if len(inputs) > MAX_EMBED_INPUTS:
            raise ClientError(f"too many inputs: {len(inputs)} (at most {MAX_EMBED_INPUTS} per request)")
        waiter = self.ctx.scheduler.admit(self.spec, self.keep_alive, self.ticket)
        self.admitted = time.monotonic_ns()
        vectors: list[list[float]] = [[] for _ in inputs]
        async for ev in self.ctx.scheduler.embed(waiter, inputs, truncate):
            if isinstance(ev, Failed):
                raise RequestFailed(ev.status, ev.message)
            if isinstance(ev, Embedding):
                vectors[ev.index] = shape(ev.vector)
            elif isinstance(ev, Done):
                return Embedded(vectors, ev.prompt_eval_count, time.monotonic_ns() - self.started,
                                self.load_duration(ev))
        raise RequestFailed(500, "embedding ended without a result")


@dataclass(frozen=True, slots=True)
class Embedded:
    """An embed request's answer: a vector per input, the tokens they used, durations (ns)."""

    vectors: list[list[float]]
    prompt_eval_count: int
    total_duration: int
    load_duration: int


# As OpenAI's embeddings endpoint: a bound on one request's work and on the reply it builds.
MAX_EMBED_INPUTS = 2048


async def _split(events: AsyncIterator[Event], parser: OutputParser) -> AsyncIterator[Event]:
    async for ev in events:
        if isinstance(ev, Text):
            for out in _events(parser.add(ev.text), ev):
                yield out
            continue
        if isinstance(ev, Done):
            for out in _events(parser.flush(), Text("")):
                yield out
            if parser.called:
                ev = replace(ev, tool_calls=True)
        yield ev


def _events(pieces: list[Piece], source: Text) -> list[Event]:
    """Pieces as events: the first content keeps the rest of the Text it came from (its tokens'
    logprobs), calls in a row are one ToolCalls event. Logprobs of text the parser keeps or
    turns into thinking or a call still go out, on an empty Text (as Ollama's parsers)."""
    events: list[Event] = []
    carried = not source.logprobs
    for piece in pieces:
        if isinstance(piece, Content):
            events.append(Text(piece.text) if carried else replace(source, text=piece.text))
            carried = True
        elif isinstance(piece, Reasoning):
            events.append(Thinking(piece.text))
        elif events and isinstance(events[-1], ToolCalls):
            events[-1] = ToolCalls((*events[-1].calls, piece))
        else:
            events.append(ToolCalls((piece,)))
    if not carried:
        events.append(replace(source, text=""))
    return events


@dataclass
class Collected:
    """A non-streaming reply: all text, thinking, tool calls, and how it ended."""

    text: str = ""
    thinking: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    done: Done | None = None
    failed: Failed | None = None


async def collect(events: AsyncIterator[Event]) -> Collected:
    parts: list[str] = []
    thinking: list[str] = []
    result = Collected()
    async for ev in events:
        if isinstance(ev, Text):
            parts.append(ev.text)
            result.logprobs.extend(ev.logprobs)
        elif isinstance(ev, Thinking):
            thinking.append(ev.text)
        elif isinstance(ev, ToolCalls):
            result.calls.extend(ev.calls)
        elif isinstance(ev, Done):
            result.done = ev
            break
        elif isinstance(ev, Failed):
            result.failed = ev
            break
    result.text = "".join(parts)
    result.thinking = "".join(thinking)
    if result.done is None and result.failed is None:
        result.failed = Failed(500, "generation ended without a result")
    return result
