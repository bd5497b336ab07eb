"""The server's side of one runner process: spawn, stream, cancel, and turn a crash into errors.

Plain asyncio, no web framework: the scheduler owns handles, the API never sees them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import psutil

from corral.runner import protocol as p


class RunnerError(RuntimeError):
    """A runner failed to load, or died while serving a request."""


@dataclass
class Event:
    """One item of a request's stream: text, the final stats, or an error."""

    kind: str  # "queued" | "text" | "embedding" | "tool_calls" | "done" | "error"
    text: str = ""
    stats: dict | None = None


_ids = itertools.count(1)


class RunnerHandle:
    def __init__(self, cfg: p.LoadConfig, on_exit: Callable[["RunnerHandle"], None] | None = None,
                 command: tuple[str, ...] = (sys.executable, "-m", "corral.runner.main")) -> None:
        """`command` (followed by the config as JSON) starts the runner process; tests swap it."""
        self.cfg = cfg
        self.command = command
        self.on_exit = on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.n_ctx_slot = cfg.n_ctx_slot
        self.alive = False
        self._streams: dict[str, asyncio.Queue[Event]] = {}
        self._stderr: deque[str] = deque(maxlen=40)
        self._tasks: list[asyncio.Task] = []
        # Cumulative runner-loop figures: time inside llama_decode, and time the loop had work.
        self.decode_ns = 0
        self.busy_ns = 0
        self.last_progress = time.monotonic()  # the last line read from the runner
        self._questions: dict[str, asyncio.Future[bool]] = {}
        self.kill_reason = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    def rss(self) -> int:
        try:
            return psutil.Process(self.pid).memory_info().rss if self.pid else 0
        except psutil.Error:
            return 0

    async def start(self, timeout: float) -> None:
        """Spawn the process and wait until its model is loaded; RunnerError on failure."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, self.cfg.to_json(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            limit=p.MAX_LINE,
        )
        self._tasks.append(asyncio.create_task(self._drain_stderr()))
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            raise RunnerError(f"model load timed out after {timeout:.0f}s") from None
        msg = p.decode(line) if line else {"ev": p.EV_FATAL, "message": ""}
        if msg.get("ev") != p.EV_READY:
            await self.kill()
            detail = msg.get("message") or self._last_stderr() or f"exit code {self.proc.returncode}"
            raise RunnerError(f"model failed to load: {detail}")
        self.n_ctx_slot = int(msg["n_ctx_slot"])
        self.alive = True
        self._tasks.append(asyncio.create_task(self._read_events()))

    def _last_stderr(self) -> str:
        lines = [l for l in self._stderr if l.strip()]
        return lines[-1].strip() if lines else ""

    async def _drain_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        async for raw in self.proc.stderr:
            self._stderr.append(raw.decode(errors="replace"))

    async def _next_line(self) -> tuple[bytes, bool]:
        """The next line from the runner, and whether it is whole: a line over MAX_LINE comes back
        as its first bytes only (the rest is read and dropped), so no reply size can break the
        channel. b"" at EOF."""
        assert self.proc and self.proc.stdout
        reader = self.proc.stdout
        try:
            return await reader.readuntil(b"\n"), True
        except asyncio.IncompleteReadError as exc:
            return exc.partial, True
        except asyncio.LimitOverrunError as exc:
            head = await reader.read(exc.consumed)
        while True:
            try:
                await reader.readuntil(b"\n")
                return head, False
            except asyncio.IncompleteReadError:
                return head, False
            except asyncio.LimitOverrunError as exc:
                await reader.read(exc.consumed)

    async def _read_events(self) -> None:
        assert self.proc and self.proc.stdout
        try:
            while True:
                line, whole = await self._next_line()
                if not line:
                    break
                self.last_progress = time.monotonic()
                try:
                    msg = p.decode(line) if whole else None
                except ValueError:
                    msg = None
                if msg is None:
                    # One bad line fails the request it belongs to, not the runner.
                    what = "too large" if not whole else "malformed"
                    self._fail(p.request_id_of(line), f"the model runner's reply was {what}")
                    continue
                ev = msg.get("ev")
                queue = self._streams.get(msg.get("id", ""))
                if ev == p.EV_TOKEN and queue:
                    queue.put_nowait(Event("text", msg["text"]))
                elif ev == p.EV_EMBEDDING and queue:
                    queue.put_nowait(Event("embedding", stats={"index": msg["index"], "vector": msg["embedding"]}))
                elif ev == p.EV_DONE and queue:
                    engine = msg.pop("engine", None)
                    if engine:
                        self.decode_ns, self.busy_ns = engine["decode_ns"], engine["busy_ns"]
                    self._streams.pop(msg["id"])
                    queue.put_nowait(Event("done", stats=msg))
                elif ev == p.EV_ERROR and queue:
                    self._streams.pop(msg["id"])
                    queue.put_nowait(Event("error", msg["message"], stats={"status": msg.get("status", 500)}))
                elif ev == p.EV_FITS:
                    answer = self._questions.pop(msg.get("id", ""), None)
                    if answer and not answer.done():
                        answer.set_result(bool(msg.get("fits")))
                elif ev == p.EV_FATAL:
                    self._stderr.append(msg.get("message", ""))
                    break
        finally:
            await self._died()

    def _fail(self, request_id: str | None, message: str) -> None:
        queue = self._streams.pop(request_id, None) if request_id else None
        if queue is None:
            self._stderr.append(message)
            return
        queue.put_nowait(Event("error", message, stats={"status": 500}))
        try:
            self._send({"op": p.OP_CANCEL, "id": request_id})  # stop the work nobody will read
        except (RunnerError, ConnectionError):
            pass

    def silent_for(self, now: float | None = None) -> float:
        """Seconds this runner has had work and said nothing (0 when it has no work)."""
        if not self._streams or not self.alive:
            return 0.0
        return (time.monotonic() if now is None else now) - self.last_progress

    async def _died(self) -> None:
        self.alive = False
        if self.proc and self.proc.returncode is None:
            await self.kill()
        code = self.proc.returncode if self.proc else None
        reason = self.kill_reason or f"model runner exited unexpectedly (exit code {code})"
        detail = self._last_stderr()
        for queue in self._streams.values():
            queue.put_nowait(Event("error", f"{reason}: {detail}" if detail else reason))
        self._streams.clear()
        for answer in self._questions.values():
            if not answer.done():
                answer.set_exception(RunnerError(reason))
        self._questions.clear()
        if self.on_exit:
            self.on_exit(self)

    def _send(self, message: dict) -> None:
        if not self.alive or not self.proc or not self.proc.stdin or self.proc.stdin.is_closing():
            raise RunnerError("model runner is not running")
        self.proc.stdin.write(p.encode(message))

    def _submit(self, message: dict) -> tuple[str, asyncio.Queue[Event]]:
        request_id = f"r{next(_ids)}"
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._send({**message, "id": request_id})
        if not self._streams:
            self.last_progress = time.monotonic()  # an idle runner's silence is not a stall
        self._streams[request_id] = queue
        return request_id, queue

    def cancel(self, request_id: str) -> None:
        if request_id in self._streams and self.alive:
            try:
                self._send({"op": p.OP_CANCEL, "id": request_id})
            except (RunnerError, ConnectionError):
                pass

    def set_threads(self, n: int) -> None:
        try:
            self._send({"op": p.OP_THREADS, "n": n})
        except (RunnerError, ConnectionError):
            pass  # a dead runner needs no threads

    async def fits(self, text: str, num_ctx: int = 0) -> bool:
        """Whether a prompt fits a request's context whole (asked of the runner's tokenizer)."""
        question_id = f"q{next(_ids)}"
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._questions[question_id] = answer
        try:
            self._send({"op": p.OP_FITS, "id": question_id, "text": text, "num_ctx": num_ctx})
            return await answer
        finally:
            self._questions.pop(question_id, None)

    def stream(self, prompt: str, options: p.GenerationOptions, num_ctx: int = 0) -> AsyncIterator[Event]:
        """Generate: text events, then "done" (or "error")."""
        return self._run({"op": p.OP_SUBMIT, "prompt": prompt, "num_ctx": num_ctx, "options": options.__dict__})

    def embed(self, inputs: list[str], truncate: bool = True) -> AsyncIterator[Event]:
        """Embed: an "embedding" event per input ({"index", "vector"}), then "done" (or "error")."""
        return self._run({"op": p.OP_EMBED, "inputs": inputs, "truncate": truncate})

    async def _run(self, message: dict) -> AsyncIterator[Event]:
        """One request's events; cancels it in the runner if the consumer stops early."""
        request_id, queue = self._submit(message)
        finished = False
        try:
            while True:
                event = await queue.get()
                yield event
                if event.kind not in ("text", "embedding"):
                    finished = True
                    return
        finally:
            if not finished:
                self.cancel(request_id)

    async def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self._send({"op": p.OP_SHUTDOWN})
            await asyncio.wait_for(self.proc.wait(), timeout)
        except (RunnerError, ConnectionError, asyncio.TimeoutError):
            await self.kill()

    async def kill(self, reason: str = "") -> None:
        """SIGKILL (works on a stopped process too); `reason` becomes its requests' error."""
        if reason:
            self.kill_reason = reason
        if self.proc and self.proc.returncode is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self.proc.wait()
