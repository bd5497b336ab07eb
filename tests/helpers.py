"""Client-side helpers for live-server tests: streaming with timestamps, concurrency, polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx


async def stream_generate(url: str, model: str, prompt: str, options: dict, *,
                          streaming: asyncio.Event | None = None, **body) -> dict:
    """Stream one /api/generate; record token arrival times, queue positions, status and errors
    (`streaming` is set at its first token)."""
    record: dict = {"text": "", "token_times": [], "positions": [], "etas": [], "final": None, "error": None,
                    "status": None, "start": time.monotonic(), "end": None, "headers": {}}
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        async with client.stream("POST", "/api/generate",
                                 json={"model": model, "prompt": prompt, "options": options, **body}) as r:
            record["status"], record["headers"] = r.status_code, dict(r.headers)
            if r.status_code != 200:
                record["error"] = json.loads(await r.aread())["error"]
                record["end"] = time.monotonic()
                return record
            async for line in r.aiter_lines():
                obj = json.loads(line)
                if "error" in obj:
                    record["error"] = obj["error"]
                elif "queue_position" in obj:
                    record["positions"].append(obj["queue_position"])
                    record["etas"].append((time.monotonic(), obj.get("eta_s")))
                elif obj.get("done"):
                    record["final"] = obj
                elif obj.get("response"):
                    record["text"] += obj["response"]
                    record["token_times"].append(time.monotonic())
                    if streaming is not None:
                        streaming.set()
    record["end"] = time.monotonic()
    return record


async def run_all(url: str, model: str, prompts: list[str], options: dict, **body) -> list[dict]:
    return await asyncio.gather(*(stream_generate(url, model, p, options, **body) for p in prompts))


def warm(url: str, model: str, **body) -> None:
    r = httpx.post(url + "/api/generate", json={"model": model, "prompt": "", **body}, timeout=120)
    assert r.json()["done_reason"] == "load", r.text


def ps(url: str) -> dict[str, dict]:
    return {m["name"]: m for m in httpx.get(url + "/api/ps", timeout=10).json()["models"]}


def wait_until(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def gguf_with_template(source, target, template: str) -> None:
    """Copy a GGUF, replacing its chat template with `template` padded to the same byte length
    (so the header size, and with it every tensor offset, stays as it was)."""
    import struct

    data = bytearray(open(source, "rb").read())
    key = b"tokenizer.chat_template"
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
    assert struct.unpack_from("<I", data, at)[0] == 8  # a string value
    (length,) = struct.unpack_from("<Q", data, at + 4)
    new = template.encode()
    assert len(new) <= length, "template too long to patch in place"
    data[at + 12:at + 12 + length] = new + b" " * (length - len(new))
    open(target, "wb").write(bytes(data))
