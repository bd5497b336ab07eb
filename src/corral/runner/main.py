"""A runner process: owns one model's llama_context and runs the engine loop.

Started by runner/handle.py as `python -m corral.runner.main '<LoadConfig JSON>'`. A crash here
(a GGML_ASSERT abort, an OOM kill) takes down only this process; the server turns it into errors
for this model's requests. When the server goes away, stdin closes and the runner exits.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.errors import ClientError
from corral.runner import protocol as p
from corral.runner.coalesce import Coalescer

BEAT_S = 1.0


def _beat(engine: Any, step: list[float], send: Callable[[list[p.Up]], None], max_step_s: float) -> None:
    """While the runner has work, say so every second, from beside the engine loop: a long
    llama_decode (it runs without the GIL) cannot speak for itself. A step older than max_step_s
    is taken to be stuck, and the silence lets the server's watchdog act; a stopped process
    says nothing at all."""
    while True:
        time.sleep(BEAT_S)
        if engine.busy and time.monotonic() - step[0] < max_step_s:
            send([p.Beat()])


@dataclass(slots=True)
class Prepared:
    """A request the stdin thread has tokenized (or found bad) for the engine loop."""

    message: p.Submit | p.Embed
    tokens: list[Any]
    error: p.Failed | None = None


def _read_stdin(inbox: queue.Queue, engine: Any, send: Callable[[list[p.Up]], None]) -> None:
    """Reads messages and tokenizes prompts here, beside the engine loop: llama_tokenize runs
    without the GIL, so a huge prompt does not stop the other slots' generation. Questions that
    need only the tokenizer (does a prompt fit?) are answered here at once."""
    for line in sys.stdin.buffer:
        try:
            msg = p.decode_down(line)
        except (ValueError, TypeError):
            continue
        if isinstance(msg, p.Fits):
            try:
                fits = engine.inputs.prompt_fits(msg.text, msg.num_ctx)
            except Exception:
                fits = False
            send([p.FitsAnswer(msg.id, fits)])
        elif isinstance(msg, (p.Submit, p.Embed)):
            inbox.put(_prepare(engine, msg))
        else:
            inbox.put(msg)
    inbox.put(p.Shutdown())


def _prepare(engine: Any, msg: p.Submit | p.Embed) -> Prepared:
    try:
        if isinstance(msg, p.Submit):
            return Prepared(msg, engine.inputs.prompt_tokens(msg.prompt, msg.num_ctx, msg.context))
        return Prepared(msg, engine.inputs.embed_tokens(msg.inputs, msg.truncate, msg.num_ctx))
    except ClientError as exc:  # the request's fault: a 400 for it alone
        return Prepared(msg, [], p.Failed(msg.id, str(exc), 400))
    except Exception as exc:
        return Prepared(msg, [], p.Failed(msg.id, f"{type(exc).__name__}: {exc}", 500))


def _drain(inbox: queue.Queue, block: bool) -> list[Any]:
    messages = [inbox.get()] if block else []
    while True:
        try:
            messages.append(inbox.get_nowait())
        except queue.Empty:
            return messages


def _start(engine: Any, item: Prepared) -> list[p.Up]:
    """Hand a prepared request to the engine; a failure is that request's alone."""
    msg = item.message
    if item.error:
        return [item.error]
    try:
        if isinstance(msg, p.Embed):
            return engine.embed(msg.id, item.tokens)
        return engine.submit(msg.id, item.tokens, msg.options, msg.num_ctx, msg.want_context)
    except ClientError as exc:
        return [p.Failed(msg.id, str(exc), 400)]
    except Exception as exc:
        traceback.print_exc()
        return [p.Failed(msg.id, f"{type(exc).__name__}: {exc}", 500)]


def main() -> int:
    cfg = p.LoadConfig.from_json(sys.argv[1])
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever the C library prints goes to stderr, never into the channel

    write_lock = threading.Lock()  # the stdin thread answers some questions itself

    def send(events: list[p.Up]) -> None:
        if events:
            data = b"".join(p.encode(e) for e in events)
            with write_lock:
                out.write(data)

    try:
        from corral.runner.engine import Engine  # imports llama_cpp: keep it in the child

        engine = Engine(cfg)
    except Exception as exc:
        send([p.Fatal(str(exc) or type(exc).__name__)])
        return 1

    def stats() -> p.Stats:
        return p.Stats(engine.decode_ns, busy_ns, engine.slots.reused_tokens, engine.slots.cache_restores,
                       engine.evaluated_tokens, engine.disk_restores, engine.drafted_tokens, engine.accepted_tokens,
                       engine.slots.moves)

    busy_ns = 0  # wall time of loop iterations with work: the denominator of the decode share
    send([p.Ready(engine.n_ctx_slot, cfg.n_slots, os.getpid()), stats()])  # stats: what came from disk

    inbox: queue.Queue = queue.Queue()
    threading.Thread(target=_read_stdin, args=(inbox, engine, send), daemon=True).start()
    step = [time.monotonic()]  # when the current loop iteration started
    coalescer = Coalescer(cfg.stream_interval_s)
    threading.Thread(target=_beat, args=(engine, step, send, cfg.max_step_s), daemon=True).start()
    while True:
        events: list[p.Up] = []
        messages = _drain(inbox, block=not engine.busy)
        step[0] = time.monotonic()
        t0 = time.perf_counter_ns()
        for msg in messages:
            if isinstance(msg, p.Shutdown):
                engine.close()
                return 0
            if isinstance(msg, p.Cancel):
                events += engine.cancel(msg.id)
            elif isinstance(msg, p.Threads):
                engine.set_threads(msg.n)
            elif isinstance(msg, Prepared):
                events += _start(engine, msg)
        try:
            events += engine.step()
        except Exception:
            send(events + [p.Fatal(traceback.format_exc(limit=3))])
            return 1
        # Counted up to now, so that busy time always includes the decodes reported with it.
        busy_ns += time.perf_counter_ns() - t0
        if any(isinstance(e, p.Done) for e in events):
            events.append(stats())
        t0 = time.perf_counter_ns()
        send(coalescer.take(events, step[0]))
        busy_ns += time.perf_counter_ns() - t0


if __name__ == "__main__":
    sys.exit(main())
