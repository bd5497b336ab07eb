"""A corral server for a benchmark: started from a source tree on a free loopback port, its log in
a temporary folder, returned once it answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def start_corral(src: Path, models: Path, slots: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(src), "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(models),
           "OLLAMA_CONTEXT_LENGTH": "2048", "OLLAMA_NUM_PARALLEL": str(slots)}
    with open(Path(tempfile.mkdtemp()) / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "corral.cli", "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")
