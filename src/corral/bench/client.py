"""One streamed request against an OpenAI- or Ollama-API server, timed token by token."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Result:
    ok: bool
    status: int = 0
    error: str = ""
    start: float = 0.0
    token_times: list[float] = field(default_factory=list)  # arrival of each streamed chunk with text
    end: float = 0.0
    output_tokens: int = 0  # from the server's usage figures, else chunks with text

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.start if self.token_times else None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def tpot(self) -> float | None:
        if self.output_tokens < 2 or self.ttft is None:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:])]


async def send(client: httpx.AsyncClient, api: str, model: str, prompt: str, max_tokens: int,
               temperature: float) -> Result:
    if api == "openai":
        path = "/v1/chat/completions"
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
                "temperature": temperature, "max_tokens": max_tokens, "stream_options": {"include_usage": True}}
    else:
        path = "/api/chat"
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
                "options": {"temperature": temperature, "num_predict": max_tokens}}
    result = Result(ok=False, start=time.perf_counter())
    try:
        async with client.stream("POST", path, json=body) as r:
            result.status = r.status_code
            if r.status_code != 200:
                result.error = (await r.aread()).decode(errors="replace")[:200]
                return result
            chunks = 0
            async for line in r.aiter_lines():
                if api == "openai":
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    obj = json.loads(line[6:])
                    if obj.get("usage"):
                        result.output_tokens = obj["usage"].get("completion_tokens", 0)
                    text = "".join((c.get("delta") or {}).get("content") or "" for c in obj.get("choices", []))
                else:
                    obj = json.loads(line)
                    if obj.get("done"):
                        result.output_tokens = obj.get("eval_count", 0)
                    text = (obj.get("message") or {}).get("content", "")
                if "error" in obj:
                    result.error = str(obj["error"])[:200]
                    return result
                if text:
                    chunks += 1
                    result.token_times.append(time.perf_counter())
            result.output_tokens = result.output_tokens or chunks
            result.ok = True
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.end = time.perf_counter()
    return result
