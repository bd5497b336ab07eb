"""What the live-view tests share (test_ui_browser.py, test_top_tmux.py, test_events.py): a server
on the real models with two slots each, a budget that holds one model but not both, and a small
queue; and load sent from a background thread while a viewer watches."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from conftest import GEMMA, SMOL, Server
from helpers import run_all
from test_scheduler_live import est

MiB = 2**20
LONG = "Write a very long story about a dragon and a knight."


def live_server(start_server, model_store: Path, **env: str) -> Server:
    """Two slots per model, a queue of two, memory for one model at a time (either one)."""
    budget = max(est(model_store, SMOL, 2), est(model_store, GEMMA, 2)) + 8 * MiB
    return start_server(OLLAMA_NUM_PARALLEL="2", OLLAMA_MAX_QUEUE="2", CORRAL_MEMORY_LIMIT=str(budget), **env)


@pytest.fixture(scope="module")
def view_server(start_server, model_store) -> Server:
    return live_server(start_server, model_store)


class Load:
    """`n` streamed generate requests in a thread of their own; `wait()` gives their records."""

    def __init__(self, url: str, model: str, n: int, num_predict: int) -> None:
        self.records: list[dict] = []
        options = {"temperature": 0, "num_predict": num_predict}
        self.thread = threading.Thread(target=lambda: self.records.extend(
            asyncio.run(run_all(url, model, [LONG] * n, options))), daemon=True)
        self.thread.start()

    def wait(self, timeout: float = 600) -> list[dict]:  # a shared 2-core machine can be very slow
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "requests did not finish"
        return self.records
