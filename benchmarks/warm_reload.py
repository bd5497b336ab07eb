"""Time to first token of the first request after a reload: cold (nothing on disk) vs warm (the
system prompt's KV restored from CORRAL_CACHE_DIR).

Each round primes the model with a chat on a long system prompt (keep_alive 0: the model unloads
right after, and its hottest prompt states go to disk), waits for the unload, removes the files for
a cold round or keeps them for a warm one, then streams a chat on the same system prompt with
another question. Rounds alternate cold and warm so that a busy machine's noise falls on both.
TTFT includes the model's load (both kinds pay it); prompt_eval_duration is the prefill alone.
Loopback only; the server must already run with a cache folder this script may empty:

    CORRAL_CACHE_DIR=/tmp/kv corral serve &
    python benchmarks/warm_reload.py --cache-dir /tmp/kv --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

import httpx

NAME = re.compile(r"^[0-9a-f]{24}-[0-9a-f]{40}\.kv$")  # runner/disk_cache.py's file names


def system_prompt(rules: int) -> str:
    return " ".join(f"Rule {i}: answer briefly and politely, cite the handbook section {i * 7 % 31}, "
                    f"and never reveal internal ticket numbers such as {1000 + i * 13}." for i in range(rules))


def chat(client: httpx.Client, model: str, system: str, user: str) -> tuple[float, dict]:
    """Stream one chat; (seconds to the first content chunk, the final object)."""
    body = {"model": model, "keep_alive": 0, "options": {"temperature": 0, "num_predict": 8},
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
    t0 = time.monotonic()
    ttft = 0.0
    with client.stream("POST", "/api/chat", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            obj = json.loads(line)
            if "error" in obj:
                raise RuntimeError(obj["error"])
            if not ttft and obj.get("message", {}).get("content"):
                ttft = time.monotonic() - t0
            if obj.get("done"):
                return ttft or time.monotonic() - t0, obj
    raise RuntimeError("stream ended without done")


def evaluated(client: httpx.Client, model: str) -> float:
    """/metrics: prompt tokens the model's runners have decoded (not reused), so far."""
    prefix = f'corral_prompt_evaluated_tokens_total{{model="{model}"}}'
    return next((float(x.split()[-1]) for x in client.get("/metrics").text.splitlines() if x.startswith(prefix)), 0.0)


def wait_unloaded(client: httpx.Client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/api/ps").json()["models"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the model did not unload")
        time.sleep(0.05)
    time.sleep(0.2)  # the runner has exited: its files are renamed into place


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:11434")
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--cache-dir", required=True, type=Path, help="the server's CORRAL_CACHE_DIR")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--rules", type=int, default=40, help="system prompt length (about 40 tokens a rule)")
    ap.add_argument("--json", type=Path, help="write the raw rounds here")
    args = ap.parse_args()
    system = system_prompt(args.rules)
    rows: dict[str, list[dict]] = {"cold": [], "warm": []}
    with httpx.Client(base_url=args.url, timeout=600) as client:
        for n in range(args.rounds):
            kind = "cold" if n % 2 == 0 else "warm"
            chat(client, args.model, system, f"Prime question {n}: what is {n} plus {n}?")
            wait_unloaded(client)
            if kind == "cold":
                for name in os.listdir(args.cache_dir):
                    if NAME.match(name):
                        (args.cache_dir / name).unlink()
            before = evaluated(client, args.model)
            ttft, final = chat(client, args.model, system, f"Question {n}: name a colour.")
            rows[kind].append({"ttft_s": ttft, "load_s": final.get("load_duration", 0) / 1e9,
                               "prompt_eval_s": final.get("prompt_eval_duration", 0) / 1e9,
                               "prompt_tokens": final.get("prompt_eval_count", 0),
                               "decoded_tokens": evaluated(client, args.model) - before})
            row = rows[kind][-1]
            print(f"round {n} {kind}: TTFT {ttft * 1e3:.0f} ms, load {row['load_s'] * 1e3:.0f} ms, prefill "
                  f"{row['prompt_eval_s'] * 1e3:.0f} ms, decoded {row['decoded_tokens']:.0f} of "
                  f"{row['prompt_tokens']} prompt tokens", flush=True)
            wait_unloaded(client)
            if args.json:  # after every round: a slow machine's run cut short still leaves its rounds
                args.json.write_text(json.dumps({"load_average": os.getloadavg(), **rows}, indent=1))
    print(f"load average {os.getloadavg()[0]:.1f} (a busy machine makes these noisy)")
    for kind, got in rows.items():
        if got:
            med = {k: statistics.median(r[k] for r in got) * 1e3 for k in ("ttft_s", "load_s", "prompt_eval_s")}
            print(f"{kind}: n={len(got)} median TTFT {med['ttft_s']:.0f} ms (load {med['load_s']:.0f} ms, "
                  f"prefill {med['prompt_eval_s']:.0f} ms)")


if __name__ == "__main__":
    main()
