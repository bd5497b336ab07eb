"""The CLI verbs end to end against a live server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import SMOL


def corral(server, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OLLAMA_HOST": server.url.removeprefix("http://"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "corral.cli", *args], capture_output=True, text=True,
                          env=env, input=input, timeout=180)


@pytest.fixture(scope="module")
def srv(start_server):
    return start_server(OLLAMA_NUM_PARALLEL="2")


def test_run_one_prompt_verbose(srv):
    r = corral(srv, "run", SMOL, "Say", "hi", "--verbose", "--context-size", "1024")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "eval rate:" in r.stderr and "prompt eval count:" in r.stderr


def test_run_interactive_keeps_history_until_bye(srv):
    r = corral(srv, "run", SMOL, input="My name is Zanzibar.\nWhat is my name?\n/bye\n")
    assert r.returncode == 0, r.stderr
    assert "Zanzibar" in r.stdout.split("What is my name?")[-1] or "Zanzibar" in r.stdout


def test_run_format_json(srv, tmp_path):
    import json
    # Greedy, so the answer cannot ramble on until the context is full and end mid-string.
    (tmp_path / "Modelfile").write_text(f"FROM {SMOL}\nPARAMETER temperature 0\n")
    assert corral(srv, "create", "smol-greedy:latest", "-f", str(tmp_path / "Modelfile")).returncode == 0
    r = corral(srv, "run", "smol-greedy:latest", "Give a JSON object with a key named color.", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "color" in r.stdout and isinstance(json.loads(r.stdout), dict)
    corral(srv, "rm", "smol-greedy:latest")


def test_list_show_cp_rm_ps_stop(srv):
    assert SMOL in corral(srv, "list").stdout
    shown = corral(srv, "show", SMOL)
    assert shown.returncode == 0 and "llama" in shown.stdout and "Q4_1" in shown.stdout
    assert "FROM" in corral(srv, "show", SMOL, "--modelfile").stdout
    assert "<|im_start|>" in corral(srv, "show", SMOL, "--template").stdout
    assert corral(srv, "cp", SMOL, "cli-copy:v1").returncode == 0
    assert "cli-copy:v1" in corral(srv, "list").stdout
    assert corral(srv, "rm", "cli-copy:v1").returncode == 0
    assert "cli-copy:v1" not in corral(srv, "list").stdout
    corral(srv, "run", SMOL, "hi")
    ps = corral(srv, "ps")
    assert SMOL in ps.stdout and "/2" in ps.stdout
    assert corral(srv, "stop", SMOL).returncode == 0
    missing = corral(srv, "show", "nosuch:1")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_bench_json(srv, tmp_path):
    out = tmp_path / "bench.json"
    r = corral(srv, "bench", "--base-url", srv.url, "--model", SMOL, "--concurrency", "2", "--num-prompts", "4",
               "--max-tokens", "8", "--json", str(out), "--server-stats", "--api", "ollama")
    assert r.returncode == 0, r.stderr
    import json
    (summary,) = json.loads(out.read_text())
    assert summary["completed"] == 4 and summary["output_tokens"] > 0 and summary["ttft_s"]["p50"] > 0
    assert 0 <= summary["server"]["python_share"] < 1


def test_create_from_local_gguf_and_from_model(srv, tmp_path, model_store):
    from corral.models.store import ModelName, Store
    gguf = tmp_path / "smol.gguf"
    gguf.symlink_to(Store(model_store).model_file(ModelName.parse(SMOL)))
    (tmp_path / "Modelfile").write_text('FROM ./smol.gguf\nPARAMETER num_predict 2\nSYSTEM """Be terse."""\n')
    r = corral(srv, "create", "cli-created:v1", "-f", str(tmp_path / "Modelfile"))
    assert r.returncode == 0, r.stderr
    out = corral(srv, "run", "cli-created:v1", "hi", "--verbose")
    assert out.returncode == 0 and "eval count:           2 token(s)" in out.stderr
    (tmp_path / "Modelfile2").write_text("FROM cli-created:v1\nPARAMETER num_predict 1\n")
    assert corral(srv, "create", "cli-created:v2", "-f", str(tmp_path / "Modelfile2")).returncode == 0
    assert "eval count:           1 token(s)" in corral(srv, "run", "cli-created:v2", "hi", "--verbose").stderr
    bad = tmp_path / "Bad"
    bad.write_text("PARAMETER temperature 1\n")
    assert corral(srv, "create", "x:1", "-f", str(bad)).returncode == 1
    corral(srv, "rm", "cli-created:v1", "cli-created:v2")
