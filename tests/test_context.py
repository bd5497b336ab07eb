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
