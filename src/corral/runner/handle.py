"""The server's side of one runner process: spawn, stream, cancel, and turn a crash into errors.

Plain asyncio, no web framework: the scheduler owns handles, the API never sees them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
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

    kind: str  # "queued" | "text" | "done" | "error"
    text: str = ""
    stats: dict | None = None


_ids = itertools.count(1)


class RunnerHandle:
    def __init__(self, cfg: p.LoadConfig, on_exit: Callable[["RunnerHandle"], None] | None = None) -> None:
        self.cfg = cfg
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
            sys.executable, "-m", "corral.runner.main", self.cfg.to_json(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            limit=1 << 24,
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

    async def _read_events(self) -> None:
        assert self.proc and self.proc.stdout
        try:
            async for line in self.proc.stdout:
                msg = p.decode(line)
                ev = msg.get("ev")
                queue = self._streams.get(msg.get("id", ""))
                if ev == p.EV_TOKEN and queue:
                    queue.put_nowait(Event("text", msg["text"]))
                elif ev == p.EV_DONE and queue:
                    engine = msg.pop("engine", None)
                    if engine:
                        self.decode_ns, self.busy_ns = engine["decode_ns"], engine["busy_ns"]
                    self._streams.pop(msg["id"])
                    queue.put_nowait(Event("done", stats=msg))
                elif ev == p.EV_ERROR and queue:
                    self._streams.pop(msg["id"])
                    queue.put_nowait(Event("error", msg["message"], stats={"status": msg.get("status", 500)}))
                elif ev == p.EV_FATAL:
                    self._stderr.append(msg.get("message", ""))
                    break
        finally:
            await self._died()

    async def _died(self) -> None:
        self.alive = False
        if self.proc and self.proc.returncode is None:
            await self.kill()
        code = self.proc.returncode if self.proc else None
        reason = f"model runner exited unexpectedly (exit code {code})"
        detail = self._last_stderr()
        for queue in self._streams.values():
            queue.put_nowait(Event("error", f"{reason}: {detail}" if detail else reason))
        self._streams.clear()
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

    def stream(self, prompt: str, options: p.GenerationOptions, num_ctx: int = 0) -> AsyncIterator[Event]:
        """Generate: text events, then "done" (or "error")."""
        return self._run({"op": p.OP_SUBMIT, "prompt": prompt, "num_ctx": num_ctx, "options": options.__dict__})

    def embed(self, inputs: list[str], truncate: bool = True) -> AsyncIterator[Event]:
        """Embed: one "done" event whose stats hold "embeddings" (or "error")."""
        return self._run({"op": p.OP_EMBED, "inputs": inputs, "truncate": truncate})

    async def _run(self, message: dict) -> AsyncIterator[Event]:
        """One request's events; cancels it in the runner if the consumer stops early."""
        request_id, queue = self._submit(message)
        finished = False
        try:
            while True:
                event = await queue.get()
                yield event
                if event.kind != "text":
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

    async def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self.proc.wait()
