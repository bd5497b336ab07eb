"""The CLI verbs end to end against a live server, the interactive session through a pty, and
the formatting rules (Go durations, Ollama's sizes and times) without one."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import GEMMA, SMOL, free_port

from corral.cli.output import go_duration, human_bytes, human_time, summary, table
from corral.cli.run import bare_think


def corral(server, *args: str, input: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """`corral ARGS` with stdin and stdout pipes (stdin empty unless `input`): never interactive."""
    host = server if isinstance(server, str) else server.url.removeprefix("http://")
    full_env = {**os.environ, "OLLAMA_HOST": host, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "corral.cli", *args], capture_output=True, text=True,
                          env=full_env, input=input, timeout=180)


class Pty:
    """`corral ARGS` on a pseudo-terminal (stdin, stdout and stderr), as a person at a terminal runs it."""

    def __init__(self, server, *args: str) -> None:
        env = {**os.environ, "OLLAMA_HOST": server.url.removeprefix("http://"), "TERM": "dumb"}
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "corral.cli", *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.pending = ""

    def until(self, marker: str, timeout: float = 180) -> str:
        """Everything written up to and including `marker` (e.g. the next ">>> " prompt)."""
        deadline = time.monotonic() + timeout
        while marker not in self.pending:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {marker!r} in {self.pending[-2000:]!r}")
            try:
                self.pending += os.read(self.master, 4096).decode(errors="replace")
            except OSError:  # the child closed the terminal
                raise AssertionError(f"exited before {marker!r}: {self.pending[-2000:]!r}") from None
        at = self.pending.index(marker) + len(marker)
        out, self.pending = self.pending[:at], self.pending[at:]
        return out.replace("\r\n", "\n")

    def send(self, line: str, prompt: str = ">>> ") -> str:
        """Type a line; what the session answered before its next prompt (the echo left out)."""
        os.write(self.master, (line + "\n").encode())
        return self.until(prompt).split("\n", 1)[-1].removesuffix(prompt)

    def close(self) -> int:
        os.write(self.master, b"/bye\n")
        code = self.proc.wait(30)
        os.close(self.master)
        return code


@pytest.fixture(scope="module")
def srv(start_server):
    return start_server(OLLAMA_NUM_PARALLEL="2")


GO_DURATION = r"(\d+h)?(\d+m)?\d+(\.\d+)?(ns|µs|ms|s)"


def test_run_one_prompt_verbose(srv, tmp_path):
    """--verbose: api.Metrics.Summary()'s lines on stderr, each with its number, after the answer."""
    # Bounded by the model's PARAMETER: a sampled, open-ended answer can go on for ten contexts.
    (tmp_path / "Modelfile").write_text(f"FROM {SMOL}\nPARAMETER num_predict 32\n")
    assert corral(srv, "create", "cli-verbose:v1", "-f", str(tmp_path / "Modelfile")).returncode == 0
    r = corral(srv, "run", "cli-verbose:v1", "Say", "--verbose", "hi", "--context-size", "1024")  # flags among the words
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stdout.endswith("\n\n")  # Ollama's two line breaks after an answer
    lines = r.stderr.splitlines()
    patterns = [rf"total duration:       {GO_DURATION}", rf"load duration:        {GO_DURATION}",
                r"prompt eval count:    \d+ token\(s\)", rf"prompt eval duration: {GO_DURATION}",
                r"prompt eval rate:     \d+\.\d\d tokens/s", r"eval count:           \d+ token\(s\)",
                rf"eval duration:        {GO_DURATION}", r"eval rate:            \d+\.\d\d tokens/s"]
    found = [p for p in patterns if any(re.fullmatch(p, line) for line in lines)]
    # load duration is left out when the model was already loaded, as Ollama leaves a zero out
    assert set(patterns) - set(found) <= {patterns[1]}, r.stderr
    assert float(re.search(r"eval rate: +([\d.]+)", r.stderr).group(1)) > 0
    corral(srv, "rm", "cli-verbose:v1")


def test_piped_stdin_is_one_prompt(srv, tmp_path):
    """Piped stdin is one prompt, commands and all, answered once; an argument goes after it
    (Ollama prepends stdin): the greedy answer equals the one to the joined prompt."""
    (tmp_path / "Modelfile").write_text(f"FROM {SMOL}\nPARAMETER temperature 0\nPARAMETER num_predict 12\n")
    assert corral(srv, "create", "cli-greedy:v1", "-f", str(tmp_path / "Modelfile")).returncode == 0
    r = corral(srv, "run", "cli-greedy:v1", input="/set parameter num_predict 1\nSay hi\n/bye\n")
    assert r.returncode == 0, r.stderr
    assert "Set parameter" not in r.stdout and r.stdout.strip() and r.stdout.count(">>>") == 0
    piped = corral(srv, "run", "cli-greedy:v1", "Answer", "briefly.", input="Name three colors.")
    joined = corral(srv, "run", "cli-greedy:v1", "Name three colors. Answer briefly.")
    assert piped.returncode == joined.returncode == 0, piped.stderr + joined.stderr
    assert piped.stdout == joined.stdout and piped.stdout.strip()
    corral(srv, "rm", "cli-greedy:v1")


def test_repl_commands_as_ollama_words_them(srv):
    """The commands that need no answer from the model: Ollama's texts, word for word."""
    s = Pty(srv, "run", SMOL, "--nowordwrap")
    s.until(">>> ")
    assert s.send("/foo") == "Unknown command '/foo'. Type /? for help\n"
    assert s.send("/set bogus") == "Unknown command '/set bogus'. Type /? for help\n"
    assert s.send("/show bogus") == "Unknown command '/show bogus'. Type /? for help\n"
    assert s.send("/?").startswith("Available Commands:\n  /set            Set session variables\n")
    assert "  /set parameter ...     Set a parameter\n" in s.send("/? set")
    assert "  /show modelfile    Show Modelfile for this model\n" in s.send("/help show")
    assert "Available keyboard shortcuts:" in s.send("/? shortcuts")
    assert "  /set parameter num_predict <int>      Max number of tokens to predict" in s.send("/set parameter")
    assert s.send("/set parameter bogus 1").startswith("Couldn't set parameter: ")
    assert s.send("/set parameter temperature 0.5") == "Set parameter 'temperature' to '0.5'\n"
    assert s.send("/set parameter stop a b") == "Set parameter 'stop' to 'a, b'\n"
    shown = s.send("/show parameters")
    assert shown.endswith(f"User defined parameters:\n  {'temperature':<30} 0.5\n  {'stop':<30} [a b]\n\n")
    assert s.send("/set format json") == "Set format to 'json' mode.\n"
    assert s.send("/set format xml") == "Invalid or missing format. For 'json' mode use '/set format json'\n"
    assert s.send("/set noformat") == "Disabled format.\n"
    assert s.send("/set verbose") == "Set 'verbose' mode.\n" and s.send("/set quiet") == "Set 'quiet' mode.\n"
    assert s.send("/set nowordwrap") == "Set 'nowordwrap' mode.\n"
    assert s.send("/set nohistory") == "" and s.send("/set history") == ""
    assert "does not support thinking output" in s.send("/set think") + s.send("/set nothink")
    assert s.send("/show license") == "No license was specified for this model.\n"
    assert s.send("/show system") == "No system message was specified for this model.\n"
    assert "<|im_start|>" in s.send("/show template")
    info = s.send("/show info")
    assert "  Model\n" in info and re.search(r"    architecture {4,}llama\n", info)
    assert "FROM " in s.send("/show modelfile")
    assert s.send("/set system Talk like a pirate.") == "Set system message.\n"
    assert s.send("/show system") == "Talk like a pirate.\n\n"
    assert s.send("/clear") == "Cleared session context\n"
    assert s.send("/load") == "Usage:\n  /load <modelname>\n"
    assert s.send("/save") == "Usage:\n  /save <modelname>\n"
    assert s.send("/load nosuch:1") == "Loading model 'nosuch:1'\nCouldn't find model 'nosuch:1'\n"
    assert s.send("/save bad:name:x") == "error: The model name 'bad:name:x' is invalid\n"
    assert s.close() == 0


def test_repl_session_parameters_multiline_save(srv):
    """num_predict set in the session limits the answer; \"\"\" spans lines; /save makes a model of
    the session (system, parameters, messages) through /api/create, which `corral show` reads back."""
    s = Pty(srv, "run", SMOL, "--nowordwrap")
    s.until(">>> ")
    assert s.send("/set parameter num_predict 5") == "Set parameter 'num_predict' to '5'\n"
    assert s.send("/set verbose") == "Set 'verbose' mode.\n"
    answer = s.send("Tell me a very long story about a dragon.")
    assert int(re.search(r"^eval count: +(\d+) token", answer, re.M).group(1)) <= 5
    assert re.search(r"total duration: +" + GO_DURATION, answer)
    assert s.send("/set quiet") == "Set 'quiet' mode.\n"
    assert s.send('"""First line', prompt="... ") == ""
    assert s.send("second line", prompt="... ") == ""
    answer = s.send('third line"""')
    assert answer.strip() and "eval count" not in answer
    assert s.send('/set system """Be', prompt="... ") == ""
    assert s.send('brief."""') == "Set system message.\n"
    assert s.send("/save cli-session:v1") == "Created new model 'cli-session:v1'\n"
    assert s.close() == 0
    modelfile = corral(srv, "show", "cli-session:v1", "--modelfile").stdout
    assert re.search(r"PARAMETER num_predict +5\n", modelfile)
    assert 'SYSTEM """Be\nbrief."""' in modelfile
    assert 'MESSAGE user """Tell me a very long story about a dragon."""' in modelfile
    assert 'MESSAGE user """First line\nsecond line\nthird line"""' in modelfile
    assert modelfile.count("MESSAGE assistant") == 2
    assert corral(srv, "show", "cli-session:v1", "--parameters").stdout.split() == ["num_predict", "5"]
    # The saved conversation is replayed when the model is run again, and /clear forgets it.
    s = Pty(srv, "run", "cli-session:v1", "--nowordwrap")
    assert ">>> Tell me a very long story about a dragon.\n" in s.until(">>> First line")
    s.until(">>> ")
    assert s.send("/clear") == "Cleared session context\n"
    assert s.send("/save cli-session:v2") == "Created new model 'cli-session:v2'\n"
    assert s.close() == 0
    cleared = corral(srv, "show", "cli-session:v2", "--modelfile").stdout
    # /clear empties the session's messages; the model's own (its MESSAGE layer) are still saved
    assert cleared.count("MESSAGE user") == modelfile.count("MESSAGE user")
    corral(srv, "rm", "cli-session:v1", "cli-session:v2")


def test_repl_load_switches_model(srv):
    s = Pty(srv, "run", SMOL, "--nowordwrap")
    s.until(">>> ")
    assert s.send(f"/load {GEMMA}") == f"Loading model '{GEMMA}'\n"
    assert re.search(r"    architecture {4,}gemma3\n", s.send("/show info"))
    assert s.send("/set parameter num_predict 3") == "Set parameter 'num_predict' to '3'\n"
    assert s.send("Hello").strip()
    assert s.close() == 0


def test_run_format_json(srv, tmp_path):
    import json
    # Greedy, so the answer cannot ramble on until the context is full and end mid-string.
    (tmp_path / "Modelfile").write_text(f"FROM {SMOL}\nPARAMETER temperature 0\n")
    assert corral(srv, "create", "smol-greedy:latest", "-f", str(tmp_path / "Modelfile")).returncode == 0
    r = corral(srv, "run", "smol-greedy:latest", "Give a JSON object with a key named color and a color as its value.",
               "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "color" in r.stdout and isinstance(json.loads(r.stdout), dict)
    # A bounded string: a greedy SmolLM2 asked for a color wants to go on writing inside it.
    schema = '{"type": "object", "properties": {"color": {"type": "string", "maxLength": 20}}, "required": ["color"]}'
    r = corral(srv, "run", "smol-greedy:latest", "Name a color.", "--format", schema)
    assert r.returncode == 0, r.stderr
    # A JSON schema goes as the request's format: the object has the key it requires, and it is
    # JSON (strictly: this answer once held a raw line break inside a string; see runner/grammar.py).
    assert isinstance(json.loads(r.stdout)["color"], str)
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
    # Loaded through the API with a bound: `corral run` samples with no num_predict, and a sampled
    # SmolLM2 answer can ramble to the open-ended cap (ten contexts) for minutes. `run` itself is
    # tested above (with a bounded, greedy model).
    r = httpx.post(srv.url + "/api/generate", json={"model": SMOL, "prompt": "hi", "stream": False,
                                                     "options": {"num_predict": 4}}, timeout=120)
    assert r.status_code == 200, r.text
    ps = corral(srv, "ps")
    header, *rows = ps.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    (row,) = [r for r in rows if r.startswith(SMOL + " ")]
    assert "100% " in row and re.search(r"(minutes|seconds) from now$", row)
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


def test_list_columns_untruncated_when_piped(srv):
    """`list` into a pipe: Ollama's columns, every name whole however narrow the terminal says it is,
    each column starting where its header does."""
    long = "a-model-name-far-longer-than-any-narrow-terminal-column-would-hold:and-a-long-tag-too"
    assert corral(srv, "cp", SMOL, long).returncode == 0
    out = corral(srv, "list", env={"COLUMNS": "30"}).stdout
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    (row,) = [r for r in rows if r.startswith(long + " ")]
    for column in ("ID", "SIZE", "MODIFIED"):
        at = header.index(column)
        assert row[at - 1] == " " and row[at] != " ", (column, header, row)
    assert re.search(r" \d+(\.\d)? MB +", row) and row.endswith(" ago")
    assert [r.split()[0] for r in rows if r.split()[0] == long] == [long]
    filtered = corral(srv, "list", long[:20]).stdout.splitlines()[1:]  # the prefix filter
    assert [r.split()[:4] for r in filtered] == [row.split()[:4]]
    corral(srv, "rm", long)


def test_errors_are_one_line_without_a_server(tmp_path):
    """No server on the port: every verb says so in one `Error:` line and exits 1."""
    host = f"127.0.0.1:{free_port()}"
    (tmp_path / "Modelfile").write_text(f"FROM {SMOL}\n")
    for args in (["show", SMOL], ["ps"], ["rm", "x:1"], ["cp", "a:1", "b:1"], ["stop", SMOL],
                 ["create", "x:1", "-f", str(tmp_path / "Modelfile")], ["run", SMOL, "hi"]):
        r = corral(host, *args)
        assert r.returncode == 1, (args, r.stderr)
        assert r.stderr == f"Error: could not connect to corral server at http://{host}, run 'corral serve' to start it\n"
        assert "Traceback" not in r.stdout + r.stderr


def test_serve_refuses_a_ray_client_address():
    """--cluster joins the cluster as a driver (the directory lives in its GCS): a Ray Client
    ray:// address is refused in one line, before Ray is started."""
    r = corral(f"127.0.0.1:{free_port()}", "serve", "--cluster", "ray://127.0.0.1:10001")
    assert r.returncode == 1
    assert r.stderr.startswith("Error: --cluster takes the cluster's address") and "ray://" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_errors_are_one_line_from_the_server(srv, tmp_path):
    """Server errors print the server's `error` text; bad flags and bad Modelfiles fail before any request."""
    def one_error(*args: str) -> str:
        r = corral(srv, *args)
        assert r.returncode == 1 and "Traceback" not in r.stderr, (args, r.stderr)
        (line,) = r.stderr.splitlines()
        assert line.startswith("Error: ")
        return line

    assert one_error("show", "nosuch:1") == "Error: model 'nosuch:1' not found"
    assert "not found" in one_error("cp", "nosuch:1", "other:1")
    assert "invalid model name" in one_error("show", "bad:name:x")
    assert one_error("stop", "nosuch:1") == 'Error: couldn\'t find model "nosuch:1" to stop'
    assert one_error("run", SMOL, "hi", "--think=bogus").startswith('Error: invalid value for --think: "bogus"')
    assert one_error("run", SMOL, "hi", "--keepalive", "soon") == 'Error: time: invalid duration "soon"'
    assert one_error("run", SMOL, "--bogus").startswith("Error: ")
    assert one_error("run", SMOL, "hi", "--format", "xml").startswith("Error: invalid --format 'xml'")
    assert one_error("show", SMOL, "--license", "--system").startswith("Error: only one of")
    assert one_error("create", "x:1", "-f", str(tmp_path / "absent")) == "Error: specified Modelfile wasn't found"
    (tmp_path / "Bad").write_text("FROM smollm2:135m\nPARAMETER temperature hot\n")
    assert "temperature" in one_error("create", "x:1", "-f", str(tmp_path / "Bad"))
    (tmp_path / "Bad2").write_text("FROM smollm2:135m\nBOGUS x\n")
    assert "BOGUS" in one_error("create", "x:1", "-f", str(tmp_path / "Bad2"))


def test_run_flags_reach_the_request(srv, tmp_path):
    """--keepalive sets the loaded model's expiry; --format json answers JSON; --think is sent."""
    # Answers bounded by the model's PARAMETER: an open-ended "hi" could go on for ten contexts.
    (tmp_path / "Modelfile").write_text(f"FROM {SMOL}\nPARAMETER num_predict 16\n")
    short = "cli-short:v1"
    assert corral(srv, "create", short, "-f", str(tmp_path / "Modelfile")).returncode == 0
    r = corral(srv, "run", short, "hi", "--keepalive", "1h")
    assert r.returncode == 0, r.stderr
    (row,) = [line for line in corral(srv, "ps").stdout.splitlines() if line.startswith(short + " ")]
    assert re.search(r"(About an hour|59 minutes) from now$", row), row
    r = corral(srv, "run", short, "hi", "--keepalive", "-1")
    (row,) = [line for line in corral(srv, "ps").stdout.splitlines() if line.startswith(short + " ")]
    assert row.endswith("Forever"), row
    # A model that cannot think: Ollama's server refuses think=true; corral's answers without thinking.
    r = corral(srv, "run", short, "hi", "--think=false", "--hidethinking")
    assert r.returncode == 0 and "Thinking..." not in r.stdout, r.stderr
    assert corral(srv, "stop", short).returncode == 0
    corral(srv, "rm", short)


# Pure: the formatting rules, checked against what Go and Ollama's format package print.

def test_go_duration_as_go_prints_it():
    assert [go_duration(ns) for ns in (0, 999, 1_234, 1_500_000, 12_345_678, 1_000_000_000, 1_503_000_000,
                                       61_000_000_000, 3_600_000_000_000, 3_723_000_000_001, -1_500_000)] == \
        ["0s", "999ns", "1.234µs", "1.5ms", "12.345678ms", "1s", "1.503s", "1m1s", "1h0m0s", "1h2m3.000000001s",
         "-1.5ms"]


def test_summary_leaves_out_zeros():
    text = summary({"total_duration": 2_000_000_000, "load_duration": 0, "prompt_eval_count": 10,
                    "prompt_eval_duration": 500_000_000, "eval_count": 4, "eval_duration": 1_000_000_000})
    assert text == ("total duration:       2s\nprompt eval count:    10 token(s)\nprompt eval duration: 500ms\n"
                    "prompt eval rate:     20.00 tokens/s\neval count:           4 token(s)\n"
                    "eval duration:        1s\neval rate:            4.00 tokens/s\n")


def test_sizes_times_and_tables_as_ollama_prints_them():
    assert [human_bytes(b) for b in (999, 1_000, 1_500_000, 2_000_000, 98_765_432, 12_300_000_000)] == \
        ["999 B", "1 KB", "1.5 MB", "2 MB", "98 MB", "12 GB"]
    now = datetime(2025, 1, 1, tzinfo=UTC)
    ago = lambda **kw: human_time((now - timedelta(**kw)).isoformat(), now=now)
    assert [ago(seconds=0.5), ago(seconds=1), ago(seconds=30), ago(seconds=90), ago(minutes=59), ago(minutes=70),
            ago(hours=30), ago(days=5), ago(days=20), ago(days=90), ago(days=800)] == \
        ["Less than a second ago", "1 second ago", "30 seconds ago", "About a minute ago", "59 minutes ago",
         "About an hour ago", "30 hours ago", "5 days ago", "2 weeks ago", "3 months ago", "2 years ago"]
    assert human_time("2318-11-26T00:00:00Z", now=now) == "Forever"
    assert human_time((now + timedelta(minutes=4, seconds=30)).isoformat(), now=now) == "4 minutes from now"
    assert table([["a-long-name", "x"], ["b", "yy"]], ["NAME", "ID"]) == \
        "NAME           ID\na-long-name    x\nb              yy\n"


def test_bare_think_means_true_and_takes_no_word():
    assert bare_think(["run", "m", "--think", "why?"]) == ["run", "m", "--think=true", "why?"]
    assert bare_think(["run", "m", "--think=low"]) == ["run", "m", "--think=low"]
    assert bare_think(["run", "m", "--", "--think"]) == ["run", "m", "--", "--think"]
