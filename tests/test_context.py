"""Context like Ollama: num_ctx clamped to the training context, a full context shifted (or not)."""

from __future__ import annotations

import httpx
from conftest import SMOL
from helpers import warm

# Raw continuation that SmolLM2 keeps going with well past a 128-token context.
LONG = "The following is a list of numbers from 1 to 1000, separated by commas: 1, 2, 3, 4, 5, 6, 7, 8,"


def _generate(url: str, **body) -> dict:
    r = httpx.post(url + "/api/generate", json={"model": SMOL, "prompt": LONG, "raw": True, "stream": False, **body},
                   timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_num_ctx_above_training_context_is_clamped(server):
    # Continue sends 32768 to every model; SmolLM2 was trained at 8192.
    r = _generate(server.url, options={"num_ctx": 32768, "temperature": 0, "num_predict": 4})
    assert r["done"] and r["eval_count"] >= 1


def test_a_full_context_is_shifted_and_generation_goes_on(server):
    warm(server.url, SMOL)
    opts = {"num_ctx": 128, "temperature": 0, "num_predict": 300}
    shifted = _generate(server.url, options=opts)
    assert shifted["done_reason"] == "length" and shifted["eval_count"] == 300, shifted
    stopped = _generate(server.url, options=opts, shift=False)
    assert stopped["done_reason"] == "length"
    # The last sampled token is counted, never decoded: the context holds 128.
    assert stopped["prompt_eval_count"] + stopped["eval_count"] == 129
    # The same request again after a shifted one: the shifted sequence was not kept as a prefix,
    # so greedy output is what it was.
    again = _generate(server.url, options=opts, shift=False)
    assert again["response"] == stopped["response"]


def test_a_long_chat_keeps_its_system_prompt(server):
    warm(server.url, SMOL)
    system = {"role": "system", "content": "Your name is Zorblax. When asked your name, answer only: Zorblax."}
    filler = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}: the weather is mild today."}
              for i in range(600)]  # ~9,000 tokens, far more than the 2,048 of a slot
    question = {"role": "user", "content": "What is your name?"}
    r = httpx.post(server.url + "/api/chat", timeout=300, json={
        "model": SMOL, "stream": False, "messages": [system, *filler, question],
        "options": {"temperature": 0, "num_predict": 8}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "Zorblax" in body["message"]["content"], body
    # Whole turns were dropped to fit, not tokens cut: less than the context, more than a turn.
    assert 100 < body["prompt_eval_count"] < 2048


def test_fit_chat_drops_whole_turns_and_keeps_system_messages():
    import asyncio

    from corral.models.prompt_fit import fit_chat

    messages = [{"role": "system", "content": "S"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(20)]
    messages[12] = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]}
    messages[13] = {"role": "tool", "content": "result"}

    async def render(ms):
        return "|".join(m["content"] for m in ms)

    async def fits_in(n):
        async def fits(text):
            return len(text.split("|")) <= n
        return fits

    async def run(n):
        return await fit_chat(messages, render, await fits_in(n))

    assert asyncio.run(run(100)) == "|".join(m["content"] for m in messages)
    assert asyncio.run(run(4)) == "S|m17|m18|m19"
    # A cut that would orphan the tool result keeps the assistant turn that called the tool.
    assert asyncio.run(run(10)).startswith("S||result|m13")
    assert asyncio.run(run(9)).startswith("S|m13")  # with its caller it does not fit: both go
    assert asyncio.run(run(1)) == "S|m19"  # nothing fits: the system and the latest message
