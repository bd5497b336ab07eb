"""The server's side of one runner process: spawn, stream, cancel, and turn a crash into errors.

Plain asyncio, no web framework: the scheduler owns handles, the API never sees them. A request's
stream is the runner's own messages for it (Token, Vector, then Done or Failed); a crash, a kill
or a broken line becomes a Failed for the requests it touches.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import psutil

from corral.errors import ServerError
from corral.runner import protocol as p


class RunnerError(ServerError):
    """A runner failed to load, or died while serving a request."""


# What a request's stream carries: its text or vectors, then how it ended.
Reply = p.Token | p.Vector | p.Done | p.Failed

_ids = itertools.count(1)


class RunnerHandle:
    def __init__(self, cfg: p.LoadConfig, on_exit: Callable[[RunnerHandle], None] | None = None,
                 command: tuple[str, ...] = (sys.executable, "-m", "corral.runner.main")) -> None:
        """`command` (followed by the config as JSON) starts the runner process; tests swap it."""
        self.cfg = cfg
        self.command = command
        self.on_exit = on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.n_ctx_slot = cfg.n_ctx_slot
        self.alive = False
        self._streams: dict[str, asyncio.Queue[Reply]] = {}
        self._questions: dict[str, asyncio.Future[bool]] = {}
        self._stderr: deque[str] = deque(maxlen=40)
        self._tasks: list[asyncio.Task] = []
        self.stats = p.Stats(decode_ns=0, busy_ns=0)  # the runner's latest counters
        self.last_progress = time.monotonic()  # the last line read from the runner
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
        assert self.proc.stdout
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            await self.kill()
            raise RunnerError(f"model load timed out after {timeout:.0f}s") from None
        try:
            msg: p.Up = p.decode_up(line) if line else p.Fatal("")
        except (ValueError, TypeError):
            msg = p.Fatal("")
        if not isinstance(msg, p.Ready):
            await self.kill()
            detail = (msg.message if isinstance(msg, p.Fatal) else "") or self._last_stderr() or \
                f"exit code {self.proc.returncode}"
            raise RunnerError(f"model failed to load: {detail}")
        self.n_ctx_slot = msg.n_ctx_slot
        self.alive = True
        self._tasks.append(asyncio.create_task(self._read_events()))

    def _last_stderr(self) -> str:
        lines = [line for line in self._stderr if line.strip()]
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
        try:
            while True:
                line, whole = await self._next_line()
                if not line:
                    break
                self.last_progress = time.monotonic()
                try:
                    msg = p.decode_up(line) if whole else None
                except (ValueError, TypeError):
                    msg = None
                if msg is None:
                    # One bad line fails the request it belongs to, not the runner.
                    what = "too large" if not whole else "malformed"
                    self._fail(p.request_id_of(line), f"the model runner's reply was {what}")
                elif isinstance(msg, (p.Token, p.Vector)):
                    queue = self._streams.get(msg.id)
                    if queue:
                        queue.put_nowait(msg)
                elif isinstance(msg, (p.Done, p.Failed)):
                    queue = self._streams.pop(msg.id, None)
                    if queue:
                        queue.put_nowait(msg)
                elif isinstance(msg, p.Stats):
                    self.stats = msg
                elif isinstance(msg, p.FitsAnswer):
                    answer = self._questions.pop(msg.id, None)
                    if answer and not answer.done():
                        answer.set_result(msg.fits)
                elif isinstance(msg, p.Fatal):
                    self._stderr.append(msg.message)
                    break
        finally:
            await self._died()

    def _fail(self, request_id: str | None, message: str) -> None:
        queue = self._streams.pop(request_id, None) if request_id else None
        if queue is None or request_id is None:
            self._stderr.append(message)
            return
        queue.put_nowait(p.Failed(request_id, message))
        self._try_send(p.Cancel(request_id))  # stop the work nobody will read

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
        for request_id, queue in self._streams.items():
            queue.put_nowait(p.Failed(request_id, f"{reason}: {detail}" if detail else reason))
        self._streams.clear()
        for answer in self._questions.values():
            if not answer.done():
                answer.set_exception(RunnerError(reason))
        self._questions.clear()
        if self.on_exit:
            self.on_exit(self)

    def _send(self, message: p.Down) -> None:
        if not self.alive or not self.proc or not self.proc.stdin or self.proc.stdin.is_closing():
            raise RunnerError("model runner is not running")
        self.proc.stdin.write(p.encode(message))

    def _try_send(self, message: p.Down) -> None:
        """Send if the runner is there; a dead runner needs no cancel and no threads."""
        try:
            self._send(message)
        except (RunnerError, ConnectionError):
            pass

    def cancel(self, request_id: str) -> None:
        if request_id in self._streams and self.alive:
            self._try_send(p.Cancel(request_id))

    def set_threads(self, n: int) -> None:
        self._try_send(p.Threads(n))

    async def fits(self, text: str, num_ctx: int = 0) -> bool:
        """Whether a prompt fits a request's context whole (asked of the runner's tokenizer)."""
        question_id = f"q{next(_ids)}"
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._questions[question_id] = answer
        try:
            self._send(p.Fits(question_id, text, num_ctx))
            return await answer
        finally:
            self._questions.pop(question_id, None)

    def stream(self, prompt: str, options: p.GenerationOptions, num_ctx: int = 0,
               context: list[int] | None = None, want_context: bool = False) -> AsyncIterator[Reply]:
        """Generate: Token messages, then Done (or Failed). See p.Submit for the context."""
        return self._run(lambda request_id: p.Submit(request_id, prompt, num_ctx, options,
                                                     list(context or ()), want_context))

    def embed(self, inputs: list[str], truncate: bool = True, num_ctx: int = 0) -> AsyncIterator[Reply]:
        """Embed: a Vector per input, then Done (or Failed)."""
        return self._run(lambda request_id: p.Embed(request_id, inputs, truncate, num_ctx))

    async def _run(self, make: Callable[[str], p.Submit | p.Embed]) -> AsyncIterator[Reply]:
        """One request's messages; cancels it in the runner if the consumer stops early."""
        request_id = f"r{next(_ids)}"
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self._send(make(request_id))
        if not self._streams:
            self.last_progress = time.monotonic()  # an idle runner's silence is not a stall
        self._streams[request_id] = queue
        finished = False
        try:
            while True:
                reply = await queue.get()
                yield reply
                if isinstance(reply, (p.Done, p.Failed)):
                    finished = True
                    return
        finally:
            if not finished:
                self.cancel(request_id)

    async def stop(self, timeout: float = 10.0) -> None:
        """An orderly stop (the runner writes its hottest prompt states to disk first, up to
        disk_cache.UNLOAD_BYTES); a runner that does not exit in `timeout` is killed."""
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self._send(p.Shutdown())
            await asyncio.wait_for(self.proc.wait(), timeout)
        except (TimeoutError, RunnerError, ConnectionError):
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
