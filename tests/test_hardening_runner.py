"""Hardening of the runner path: reply size, stalls, huge prompts (issue: hardening, items 1, 3, 6)."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import textwrap
import time

import httpx
import pytest
from conftest import SMOL
from helpers import ps, stream_generate, wait_until, warm

from corral.runner import protocol as p
from corral.runner.fit import cut, input_tokens, prompt_tokens
from corral.runner.handle import RunnerHandle

# A stand-in runner process for the framing test: a real process on real pipes, writing what a
# broken runner could write (a line over the limit, a line that is not JSON) between good ones.
FAKE_RUNNER = textwrap.dedent("""
    import json, sys
    out = sys.stdout.buffer
    out.write(b'{"ev":"ready","n_ctx_slot":64,"n_slots":2,"pid":1}\\n'); out.flush()
    a, b, c = [json.loads(sys.stdin.readline())["id"] for _ in range(3)]
    def send(obj): out.write(json.dumps(obj).encode() + b"\\n"); out.flush()
    send({"ev": "tok", "id": a, "text": "one"})
    out.write(('{"ev":"done","id":"%s","embeddings":"' % b).encode() + b"x" * (OVER) + b'"}\\n'); out.flush()
    out.write(b'{"ev":"tok","id":"' + c.encode() + b'","text": garbage\\n'); out.flush()
    send({"ev": "tok", "id": a, "text": "two"})
    send({"ev": "done", "id": a, "reason": "stop"})
    sys.stdin.readline()
""").replace("OVER", str(p.MAX_LINE + 1000))


def test_oversized_or_malformed_runner_line_fails_only_its_request(tmp_path):
    async def scenario():
        cfg = p.LoadConfig(model_path="unused", n_slots=2, n_ctx_slot=64, n_threads=1)
        handle = RunnerHandle(cfg, command=(sys.executable, "-c", FAKE_RUNNER))
        await handle.start(timeout=30)
        async def drain(prompt: str) -> list:
            return [ev async for ev in handle.stream(prompt, p.GenerationOptions())]

        got = await asyncio.wait_for(asyncio.gather(drain("a"), drain("b"), drain("c")), 30)
        alive = handle.alive
        await handle.kill()
        return got, alive

    (events_a, events_b, events_c), alive = asyncio.run(scenario())
    assert [type(e) for e in events_a] == [p.Token, p.Token, p.Done]
    assert [e.text for e in events_a[:2]] == ["one", "two"]
    assert [type(e) for e in events_b] == [p.Failed] and "too large" in events_b[0].message
    assert [type(e) for e in events_c] == [p.Failed] and "malformed" in events_c[0].message
    assert alive, "bad lines must not end the runner"


def test_prompt_window_tokenizing_matches_the_whole_text():
    # A tokenizer where every word is a token and the first token is a start token.
    def tokenize(text: str, add_special: bool) -> list[int]:
        words = [len(w) for w in text.split(" ") if w]
        return ([0] if add_special else []) + words

    text = " ".join(f"w{'x' * (i % 7)}" for i in range(50_000))
    assert prompt_tokens(tokenize, text, 1000) == cut(tokenize(text, True), 1000)
    assert len(prompt_tokens(tokenize, text, 1000)) == 750
    assert prompt_tokens(tokenize, "a b c", 1000) == [0, 1, 1, 1]
    head, longer = input_tokens(tokenize, text, 500)
    assert head == tokenize(text, True)[:500] and longer
    assert input_tokens(tokenize, "a b", 500) == ([0, 1, 1], False)


def test_many_embedding_inputs_do_not_kill_the_runner(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="2")
    warm(server.url, SMOL)
    pid = ps(server.url)[SMOL]["pid"]

    async def scenario():
        stream = asyncio.create_task(stream_generate(server.url, SMOL, "Write a long story about a dragon.",
                                                     {"temperature": 0, "num_predict": 64}))
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as c:
            # 2,000 inputs: one reply line would have been ~25 MB, over the handle's read limit.
            inputs = [f"sentence number {i}" for i in range(2000)]
            big = await c.post("/api/embed", json={"model": SMOL, "input": inputs})
            over = await c.post("/api/embed", json={"model": SMOL, "input": inputs + ["x"] * 49})
        return await stream, big, over

    streamed, big, over = asyncio.run(scenario())
    assert big.status_code == 200, big.text
    vectors = big.json()["embeddings"]
    assert len(vectors) == 2000 and all(len(v) == 576 for v in vectors)
    assert vectors[0] != vectors[1]
    assert over.status_code == 400 and "2048" in over.json()["error"]
    assert streamed["error"] is None and streamed["final"]["eval_count"] == 64
    assert ps(server.url)[SMOL]["pid"] == pid  # the same runner, never killed


def test_stalled_runner_is_killed_and_its_queue_served_by_a_new_one(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1", CORRAL_STALL_TIMEOUT="3")
    warm(server.url, SMOL)
    old_pid = ps(server.url)[SMOL]["pid"]

    async def scenario():
        running = asyncio.create_task(stream_generate(server.url, SMOL, "Write a long story about a dragon.",
                                                      {"temperature": 0, "num_predict": 2000}))
        await asyncio.to_thread(wait_until, lambda: ps(server.url)[SMOL]["slots_busy"] == 1, 30)
        await asyncio.sleep(0.3)
        os.kill(old_pid, signal.SIGSTOP)  # a runner that makes no progress, as a deadlock would
        stopped_at = time.monotonic()
        queued = asyncio.create_task(stream_generate(server.url, SMOL, "Say hello.",
                                                     {"temperature": 0, "num_predict": 8}))
        unresponsive = await asyncio.to_thread(
            wait_until, lambda: ps(server.url).get(SMOL, {}).get("health") == "unresponsive", 3)
        first = await running
        return first, await queued, unresponsive, first["end"] - stopped_at

    try:
        first, second, unresponsive, ended_after = asyncio.run(scenario())
    finally:
        try:
            os.kill(old_pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert unresponsive, "/api/ps should show the stalled runner as unresponsive before it is killed"
    assert first["error"] and "no progress" in first["error"]
    assert 2.5 < ended_after < 10, ended_after
    assert second["error"] is None and second["final"]["eval_count"] >= 1
    assert second["positions"], "the second request waited in the queue"
    now = ps(server.url)[SMOL]
    assert now["pid"] != old_pid and now["restarts"] == 1 and now["health"] == "ok"
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)
    metrics = httpx.get(server.url + "/metrics").text
    assert f'corral_runner_restarts_total{{model="{SMOL}",reason="stall"}} 1.0' in metrics
    assert f'corral_runner_healthy{{model="{SMOL}"}} 1.0' in metrics


def test_huge_prompts_do_not_stop_other_streams(start_server):
    # A short stall timeout also checks that long prefills (silent steps) are not taken for a stall.
    server = start_server(OLLAMA_NUM_PARALLEL="2", OLLAMA_CONTEXT_LENGTH="4096", CORRAL_STALL_TIMEOUT="10")
    warm(server.url, SMOL)
    limit = 4096

    async def scenario():
        times: list[float] = []

        async def stream():
            body = {"model": SMOL, "prompt": "Write a very long story about a dragon and a knight.",
                    "options": {"temperature": 0, "num_predict": 3000}}
            async with httpx.AsyncClient(base_url=server.url, timeout=300) as c:
                async with c.stream("POST", "/api/generate", json=body) as r:
                    async for line in r.aiter_lines():
                        if '"response":""' not in line.replace(" ", ""):
                            times.append(time.monotonic())
                        if '"done":true' in line.replace(" ", "") or '"error"' in line:
                            return line

        task = asyncio.create_task(stream())
        while len(times) < 10:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as c:
            t0 = time.monotonic()
            messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"}
                        for i in range(50_000)]
            chat = await c.post("/api/chat", json={"model": SMOL, "messages": messages, "stream": False,
                                                   "options": {"temperature": 0, "num_predict": 2}})
            words = " ".join(f"w{i}" for i in range(50_000))  # ~100k tokens
            gen = await c.post("/api/generate", json={"model": SMOL, "prompt": words, "stream": False,
                                                      "options": {"temperature": 0, "num_predict": 2}})
            t1 = time.monotonic()
        task.cancel()
        gaps = [b - a for a, b in zip(times, times[1:]) if t0 <= b <= t1]
        return chat.json(), gen.json(), gaps, t1 - t0

    chat, gen, gaps, took = asyncio.run(scenario())
    keep = limit - limit // 4
    # The chat drops whole old turns to fit (Ollama); the plain prompt keeps its latest tokens.
    assert keep < chat.get("prompt_eval_count", 0) < limit and gen.get("prompt_eval_count") == keep, (chat, gen)
    gaps.sort()
    p99 = gaps[int(len(gaps) * 0.99)]
    print(f"huge prompts took {took:.1f}s; stream gaps during them: n={len(gaps)} "
          f"median {statistics.median(gaps) * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, max {gaps[-1] * 1e3:.0f} ms")
    # Before: the whole prompt was tokenized and prefilled in 512-token steps ahead of the
    # stream's tokens (gaps of seconds, 33 s at worst at 8k context).
    assert len(gaps) > 20, "the stream kept flowing while the prompts were prefilled"
    assert p99 < 0.6 and gaps[-1] < 1.5, gaps[-5:]
    assert ps(server.url)[SMOL]["restarts"] == 0
