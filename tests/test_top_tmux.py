"""`corral top` in a real terminal: tmux runs it, send-keys and capture-pane read the screen
while a real server works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import SMOL
from liveview import Load, view_server  # noqa: F401  (a fixture)

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


class Terminal:
    """One tmux server of our own (its own socket), one 120x40 window running a command."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.socket = f"corral-top-{os.getpid()}-{time.monotonic_ns()}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        self.tmux("new-session", "-d", "-s", "top", "-x", "120", "-y", "40",
                  f"env {exports} {' '.join(command)}; sleep 30")

    def tmux(self, *args: str) -> str:
        return subprocess.run([TMUX or "tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=10).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def wait_for(self, check, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(screen := self.screen()):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"not on screen in {timeout}s:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def top(view_server):
    host = view_server.url.removeprefix("http://")
    term = Terminal([sys.executable, "-m", "corral.cli", "top"],
                    {"OLLAMA_HOST": host, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "TERM": "xterm-256color"})
    yield term
    term.close()


def model_line(screen: str) -> str:
    return next((line for line in screen.splitlines() if line.strip().startswith(SMOL) and "cpu" in line), "")


def test_top_shows_the_model_its_slots_and_the_events(view_server, top):
    top.wait_for(lambda s: "corral top" in s and "live" in s)
    load = Load(view_server.url, SMOL, 4, num_predict=16)
    # Both slots taken (■■), two requests queued behind them.
    busy = top.wait_for(lambda s: "■■" in model_line(s) and "2/2" in model_line(s))
    assert "cpu" in model_line(busy)
    assert f"{SMOL} loading on cpu" in busy and f"{SMOL} loaded in" in busy
    records = load.wait()
    assert [r["status"] for r in records] == [200] * 4
    # Both slots free again, and the finished requests in its table.
    done = top.wait_for(lambda s: "□□" in model_line(s) and "0/2" in model_line(s) and " 200 " in s)
    assert "tokens/s" in done and "recent requests" in done

    top.tmux("send-keys", "-t", "top", "C-c")  # quits cleanly: the shell's `sleep` follows, no traceback
    after = top.wait_for(lambda s: "corral top" not in s or "Traceback" in s, timeout=20)
    assert "Traceback" not in after and "Error" not in after
