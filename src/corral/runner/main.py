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

from corral.runner import protocol as p


# A busy runner that has written nothing for this long writes a heartbeat, so that the server's
# watchdog can tell a long prompt (many silent steps) from a stalled runner.
BEAT_NS = 1_000_000_000


def _read_stdin(inbox: queue.Queue, engine, send) -> None:
    """Reads messages and tokenizes prompts here, beside the engine loop: llama_tokenize runs
    without the GIL, so a huge prompt does not stop the other slots' generation. Questions that
    need only the tokenizer (does a prompt fit?) are answered here at once."""
    for line in sys.stdin.buffer:
        try:
            msg = p.decode(line)
        except ValueError:
            continue
        if msg.get("op") == p.OP_FITS:
            try:
                fits = engine.prompt_fits(str(msg.get("text", "")), int(msg.get("num_ctx") or 0))
            except Exception:  # noqa: BLE001 - an unreadable question gets a "no"
                fits = False
            send([{"ev": p.EV_FITS, "id": msg.get("id", ""), "fits": fits}])
            continue
        try:
            if msg.get("op") == p.OP_SUBMIT:
                msg["tokens"] = engine.prompt_tokens(msg.pop("prompt", ""), int(msg.get("num_ctx") or 0))
            elif msg.get("op") == p.OP_EMBED:
                msg["tokens"] = engine.embed_tokens(msg.pop("inputs", []), bool(msg.get("truncate", True)))
        except Exception as exc:  # noqa: BLE001 - a bad prompt fails its request alone
            msg["error"] = str(exc) or type(exc).__name__
            msg["status"] = 400 if isinstance(exc, ValueError) else 500
        inbox.put(msg)
    inbox.put({"op": p.OP_SHUTDOWN})


def _drain(inbox: queue.Queue, block: bool) -> list[dict]:
    messages = [inbox.get()] if block else []
    while True:
        try:
            messages.append(inbox.get_nowait())
        except queue.Empty:
            return messages


def main() -> int:
    cfg = p.LoadConfig.from_json(sys.argv[1])
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever the C library prints goes to stderr, never into the channel

    write_lock = threading.Lock()  # the stdin thread answers some questions itself

    def send(events: list[dict]) -> None:
        if events:
            data = b"".join(p.encode(e) for e in events)
            with write_lock:
                out.write(data)

    try:
        from corral.runner.engine import Engine  # imports llama_cpp: keep it in the child

        engine = Engine(cfg)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
        send([{"ev": p.EV_FATAL, "message": str(exc) or type(exc).__name__}])
        return 1
    send([{"ev": p.EV_READY, "n_ctx_slot": engine.n_ctx_slot, "n_slots": cfg.n_slots, "pid": os.getpid()}])

    inbox: queue.Queue = queue.Queue()
    threading.Thread(target=_read_stdin, args=(inbox, engine, send), daemon=True).start()
    busy_ns = 0  # wall time of loop iterations with work: the denominator of the decode share
    last_write = time.perf_counter_ns()
    while True:
        events: list[dict] = []
        messages = _drain(inbox, block=not engine.busy)
        t0 = time.perf_counter_ns()
        for msg in messages:
            op = msg.get("op")
            if op == p.OP_SHUTDOWN:
                engine.close()
                return 0
            if op == p.OP_CANCEL:
                events += engine.cancel(msg["id"])
            elif op == p.OP_THREADS:
                engine.set_threads(int(msg["n"]))
            elif op in (p.OP_SUBMIT, p.OP_EMBED):
                try:
                    if "error" in msg:
                        events.append({"ev": p.EV_ERROR, "id": msg.get("id", ""), "message": msg["error"],
                                       "status": msg["status"]})
                        continue
                    if op == p.OP_EMBED:
                        events += engine.embed(msg["id"], msg["tokens"])
                        continue
                    opts = p.GenerationOptions(**msg.get("options", {}))
                    events += engine.submit(msg["id"], msg["tokens"], opts, int(msg.get("num_ctx") or 0))
                except Exception as exc:  # noqa: BLE001 - a bad request fails alone
                    status = 400 if isinstance(exc, (ValueError, TypeError)) else 500
                    events.append({"ev": p.EV_ERROR, "id": msg.get("id", ""), "message": str(exc), "status": status})
        try:
            events += engine.step()
        except Exception:  # noqa: BLE001
            send(events + [{"ev": p.EV_FATAL, "message": traceback.format_exc(limit=3)}])
            return 1
        # Counted up to now, so that busy time always includes the decodes reported with it.
        busy_ns += time.perf_counter_ns() - t0
        for event in events:
            if event["ev"] == p.EV_DONE:
                event["engine"] = {"decode_ns": engine.decode_ns, "busy_ns": busy_ns}
        t0 = time.perf_counter_ns()
        if not events and engine.busy and t0 - last_write > BEAT_NS:
            events.append({"ev": p.EV_BEAT})
        if events:
            send(events)
            last_write = t0
        busy_ns += time.perf_counter_ns() - t0


if __name__ == "__main__":
    sys.exit(main())
