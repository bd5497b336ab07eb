"""Hardening of the model store: temporaries no model name can collide with, garbage collection
that reads every manifest, server-side FROM paths off by default, file work off the event loop,
a full disk (507, nothing left behind), deleted models unloaded, ports checked, an unreachable
registry a 502. Server tests run `corral serve` on a private store whose blobs are hard links to
the cached real models (a delete there unlinks only the link)."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import GEMMA, SMOL, free_port
from helpers import ps, wait_until

from corral.models.store import (
    MEDIA_MODEL,
    STALE_AFTER_S,
    TEMP_PREFIX,
    InvalidName,
    Layer,
    ModelName,
    StorageFull,
    Store,
)


def greedy(n: int) -> dict:
    return {"temperature": 0, "num_predict": n}


def link(source: Path, target: Path) -> None:
    """A hard link where the filesystem allows one (cheap), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def fill_store(root: Path, model_store: Path, names: tuple[str, ...], share: bool = True) -> Store:
    """A store of its own holding `names`: blobs hard-linked (or copied) from the shared cache."""
    source, store = Store(model_store), Store(root)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for text in names:
        name = ModelName.parse(text)
        manifest = source.manifest(name)
        for layer in [manifest.config, *manifest.layers]:
            target = store.blob_path(layer.digest)
            if not target.exists():
                (link if share else shutil.copyfile)(source.blob_path(layer.digest), target)
        store.write_manifest_bytes(name, source.manifest_bytes(name))
    return store


def leftovers(root: Path) -> list[str]:
    """Temporaries: in blobs/ anything but a blob, anywhere a dot-prefixed temporary, beside
    blobs/ and manifests/ anything at all."""
    found = [e for e in os.listdir(root) if e not in ("blobs", "manifests")]
    found += [f"blobs/{e}" for e in os.listdir(root / "blobs") if not re.fullmatch(r"sha256-[0-9a-f]{64}", e)]
    for folder, dirs, files in os.walk(root / "manifests"):
        found += [str(Path(folder, e).relative_to(root)) for e in dirs + files if e.startswith(TEMP_PREFIX)]
    return found


def blob_names(root: Path) -> set[str]:
    return set(os.listdir(root / "blobs"))


def generate(url: str, model: str, n: int = 3, **body) -> dict:
    r = httpx.post(url + "/api/generate", json={"model": model, "prompt": "Hi", "stream": False,
                                                "options": greedy(n), **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def allowed(tmp_path_factory) -> Path:
    """The one directory the private server lets FROM read."""
    return tmp_path_factory.mktemp("allowed").resolve()


@pytest.fixture(scope="module")
def private(tmp_path_factory, model_store, start_server, allowed):
    """(server, store root): both real models, server-side FROM allowed in `allowed` only."""
    root = tmp_path_factory.mktemp("store") / "models"
    fill_store(root, model_store, (SMOL, GEMMA))
    # One CPU thread per runner: the copy of the stall test then has a core of its own on a 2-core
    # machine rather than preempting a decode thread that its partner spins waiting for.
    server = start_server(OLLAMA_MODELS=str(root), CORRAL_ALLOW_LOCAL_FROM=str(allowed), OLLAMA_NUM_PARALLEL="2",
                          OLLAMA_NUM_THREADS="1")
    return server, root


# -- item 2: temporaries vs model names; garbage collection counts every manifest -------------------

def test_a_partial_tag_is_a_model_like_any_other(private, model_store):
    """`cp a foo:latest.partial` then `cp b foo:latest` once overwrote the first, and a `.partial`
    manifest was skipped by the collector, so deleting another model removed its blob."""
    server, root = private
    url = server.url
    assert httpx.post(url + "/api/copy", json={"source": SMOL, "destination": "foo:latest.partial"}).status_code == 200
    assert httpx.post(url + "/api/copy", json={"source": GEMMA, "destination": "foo:latest"}).status_code == 200
    try:
        shown = {m: httpx.post(url + "/api/show", json={"model": m}).json()["details"]["family"]
                 for m in ("foo:latest.partial", "foo:latest")}
        assert shown == {"foo:latest.partial": "llama", "foo:latest": "gemma3"}
        listed = {m["name"] for m in httpx.get(url + "/api/tags").json()["models"]}
        assert {"foo:latest.partial", "foo:latest"} <= listed
        # SmolLM2's weights are now named by smollm2:135m and foo:latest.partial only: deleting the
        # first must keep them for the second.
        smol_blob = Store(root, sweep=False).model_file(ModelName.parse(SMOL))
        assert httpx.request("DELETE", url + "/api/delete", json={"model": SMOL}).status_code == 200
        assert smol_blob.exists()
        assert generate(url, "foo:latest.partial")["eval_count"] == 3
        assert generate(url, "foo:latest")["eval_count"] == 3
        assert not leftovers(root)
    finally:
        fill_store(root, model_store, (SMOL,))
        for m in ("foo:latest.partial", "foo:latest"):
            httpx.request("DELETE", url + "/api/delete", json={"model": m})


def test_collector_reads_manifests_whatever_their_name(tmp_path):
    store = Store(tmp_path)
    digest = store.add_blob_bytes(b"GGUF shared weights")
    layer = Layer(MEDIA_MODEL, digest, 19)
    for name in ("a:1", "b:latest.partial", "c:tmp"):
        store.write_manifest(ModelName.parse(name), [layer])
    # A file that is no model name at all (a foreign tool's) still counts: nothing is collected
    # that any file under manifests/ names.
    foreign = tmp_path / "manifests" / "x" / ".hidden"
    foreign.parent.mkdir(parents=True)
    foreign.write_text(json.dumps({"layers": [{"digest": digest}]}))
    store.delete(ModelName.parse("a:1"))
    store.delete(ModelName.parse("b:latest.partial"))
    assert store.has_blob(digest)
    foreign.unlink()
    store.delete(ModelName.parse("c:tmp"))
    assert not store.has_blob(digest)
    # Empty manifest folders go with the last model in them (item 10).
    assert os.listdir(tmp_path / "manifests") == ["x"]


def test_temporary_names_are_no_model_names():
    with pytest.raises(InvalidName):
        ModelName.parse(f"{TEMP_PREFIX}abc")
    with pytest.raises(InvalidName):
        ModelName.parse(f"foo:{TEMP_PREFIX}abc")
    with pytest.raises(InvalidName):
        ModelName.parse(f"ns/{TEMP_PREFIX}abc:1")


# -- item 4: server-side FROM, GGUF check before copying, nothing kept from a failed create, modes --

def create(url: str, **body) -> httpx.Response:
    return httpx.post(url + "/api/create", json={"stream": False, **body}, timeout=120)


def test_server_side_from_is_off_by_default(start_server, tmp_path, model_store):
    root = tmp_path / "models"
    fill_store(root, model_store, (SMOL,))
    server = start_server(OLLAMA_MODELS=str(root))
    before = blob_names(root)
    smol_path = str(Store(model_store).model_file(ModelName.parse(SMOL)))
    for source in ("/etc/shadow", "/proc/self/environ", "/etc/hostname", smol_path, "./x.gguf", "~/.bashrc"):
        r = create(server.url, model="bad:1", **{"from": source})
        assert r.status_code == 403, (source, r.text)
        assert "CORRAL_ALLOW_LOCAL_FROM" in r.json()["error"] and "/api/blobs" in r.json()["error"]
    r = create(server.url, model="bad:1", modelfile="FROM /etc/shadow\n")
    assert r.status_code == 403
    assert blob_names(root) == before and not leftovers(root)
    guessed = "sha256:" + hashlib.sha256(Path("/etc/hostname").read_bytes()).hexdigest()
    assert httpx.head(f"{server.url}/api/blobs/{guessed}").status_code == 404
    # The CLI uploads a local FROM file as a blob, whatever its name (here a blob path, no .gguf),
    # and the server has never seen it (its only model, and with it the blob, deleted first).
    assert httpx.request("DELETE", server.url + "/api/delete", json={"model": SMOL}).status_code == 200
    assert blob_names(root) == set()
    (tmp_path / "Modelfile").write_text(f"FROM {smol_path}\nPARAMETER num_predict 2\n")
    env = {**os.environ, "OLLAMA_HOST": server.url.removeprefix("http://")}
    cli = subprocess.run([sys.executable, "-m", "corral.cli", "create", "up:1", "-f", str(tmp_path / "Modelfile")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert cli.returncode == 0, cli.stderr
    r = httpx.post(server.url + "/api/generate", json={"model": "up:1", "prompt": "Hi", "stream": False}, timeout=120)
    assert r.json()["eval_count"] == 2  # its PARAMETER came along with the uploaded weights


def test_allowed_directory_is_checked_on_the_opened_file(private, allowed, tmp_path, model_store):
    server, root = private
    smol = Store(model_store).model_file(ModelName.parse(SMOL))
    before = blob_names(root)
    (allowed / "notes.txt").write_text("root:x:0:0:secret\n")
    (allowed / "passwd.gguf").symlink_to("/etc/passwd")
    (allowed / "escape").symlink_to(smol.parent)  # a directory outside, through a link inside
    os.mkfifo(allowed / "fifo.gguf")
    header_only = allowed / "header.gguf"  # GGUF magic and version, then garbage
    header_only.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + os.urandom(4096))
    outside = tmp_path / "smol.gguf"
    link(smol, outside)
    cases = {
        str(allowed / "notes.txt"): (400, "not a GGUF"),
        str(allowed / "passwd.gguf"): (403, "not inside"),
        f"{allowed}/escape/{smol.name}": (403, "not inside"),
        f"{allowed}/../{allowed.name}/../{outside.parent.name}/smol.gguf": (403, "not inside"),
        str(outside): (403, "not inside"),
        str(allowed / "fifo.gguf"): (400, "not a regular file"),
        str(allowed / "header.gguf"): (400, "GGUF"),  # passes the magic check, fails the header
        str(allowed / "missing.gguf"): (400, "no such file"),
    }
    for source, (status, message) in cases.items():
        r = create(server.url, model="bad:1", **{"from": source})
        assert r.status_code == status and message in r.json()["error"], (source, r.text)
    # A valid GGUF with a template the server refuses: refused before a byte is copied.
    link(smol, allowed / "smol.gguf")
    r = create(server.url, model="bad:1", **{"from": str(allowed / "smol.gguf"), "template": "{{ .Prompt "})
    assert r.status_code == 400
    assert blob_names(root) == before and not leftovers(root)
    assert "bad:1" not in {m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]}
    # And the allowed way works.
    r = create(server.url, model="local:1", **{"from": str(allowed / "smol.gguf")})
    assert r.status_code == 200, r.text
    assert generate(server.url, "local:1", 2)["eval_count"] == 2
    httpx.request("DELETE", server.url + "/api/delete", json={"model": "local:1"})


def test_a_failed_create_keeps_no_blob_it_wrote(private, allowed):
    """A file that passes the magic check but not the header parse is copied, then removed."""
    server, root = private
    bad = allowed / "copied-then-refused.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (1 << 40).to_bytes(8, "little") + os.urandom(1 << 20))
    before = blob_names(root)
    r = create(server.url, model="bad:2", **{"from": str(bad)})
    assert r.status_code == 400, r.text
    assert blob_names(root) == before and not leftovers(root)
    digest = "sha256:" + hashlib.sha256(bad.read_bytes()).hexdigest()
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 404


@pytest.mark.parametrize("dir_mode, file_mode", [(0o700, 0o600), (0o755, 0o644), (0o750, 0o640)])
def test_blob_modes_follow_the_store(tmp_path, dir_mode, file_mode):
    root = tmp_path / "models"
    root.mkdir()
    root.chmod(dir_mode)
    old = os.umask(0o022)
    try:
        store = Store(root)
        digest = store.add_blob_bytes(b"any bytes at all")
        manifest = store.write_manifest(ModelName.parse("m:1"), [Layer(MEDIA_MODEL, digest, 16)])
    finally:
        os.umask(old)
    for path in (store.blob_path(digest), store.manifest_path(manifest.name)):
        assert stat.S_IMODE(path.stat().st_mode) == file_mode & ~0o022, path
    assert stat.S_IMODE((root / "blobs").stat().st_mode) == dir_mode & ~0o022


def test_uploaded_blobs_take_the_store_mode(start_server, tmp_path):
    root = tmp_path / "models"
    root.mkdir(mode=0o700)
    server = start_server(OLLAMA_MODELS=str(root))
    data = b"not a GGUF, and kept all the same (Ollama keeps any blob)" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.post(f"{server.url}/api/blobs/{digest}", content=data).status_code == 201
    blob = Store(root, sweep=False).blob_path(digest)
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600 and blob.read_bytes() == data
    r = create(server.url, model="bad:1", files={"x.gguf": digest})
    assert r.status_code == 400 and blob.exists()  # the client's blob stays, as in Ollama


def test_a_cut_off_upload_leaves_nothing(private):
    server, root = private
    data = os.urandom(8 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    seen: list[str] = []

    def body():
        yield data[: 4 << 20]
        time.sleep(0.5)  # the server has written what came so far
        seen.extend(leftovers(root))
        raise ConnectionAbortedError("the client goes away mid-upload")

    with pytest.raises(ConnectionAbortedError):
        httpx.post(f"{server.url}/api/blobs/{digest}", content=body(), timeout=30)
    assert seen and all(e.startswith(f"blobs/{TEMP_PREFIX}") for e in seen)  # it was being written
    assert wait_until(lambda: not leftovers(root), timeout=10), leftovers(root)
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 404


# -- item 7: file work off the event loop ----------------------------------------------------------

async def _stream_during_create(url: str, source: str) -> dict:
    """Token arrival times of a greedy stream, and the latency of a tiny request sent every 10 ms,
    while a create copies `source`."""
    times: list[float] = []
    pings: list[float] = []
    creating = True

    async def stream() -> None:
        body = {"model": SMOL, "prompt": "Write a very long story about a lighthouse keeper and a storm.",
                "options": greedy(200), "keep_alive": "5m"}
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            async with client.stream("POST", "/api/generate", json=body) as r:
                async for line in r.aiter_lines():
                    if json.loads(line).get("response"):
                        times.append(time.monotonic())

    async def ping() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            while creating:
                sent = time.monotonic()
                await client.get("/api/version")
                pings.append(time.monotonic() - sent)
                await asyncio.sleep(0.01)

    task = asyncio.create_task(stream())
    while len(times) < 20:
        await asyncio.sleep(0.005)
    pinger = asyncio.create_task(ping())
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        r = await client.post("/api/create", json={"model": "big:1", "from": source, "stream": False})
    end = time.monotonic()
    creating = False
    await asyncio.gather(task, pinger)
    return {"times": times, "pings": pings, "start": start, "end": end, "status": r.status_code, "body": r.text}


def test_create_from_a_large_file_does_not_stall_streams(private, allowed, model_store, record_property):
    """The 253 MB gemma3 GGUF is hashed and copied into the store while SmolLM2 streams; before,
    that ran on the event loop and stopped every stream, and every other request, for the whole
    copy (0.58 s measured for this file), so the longest gap was as long as the create."""
    server, root = private
    gemma = allowed / "gemma.gguf"
    if not gemma.exists():
        link(Store(model_store).model_file(ModelName.parse(GEMMA)), gemma)
    generate(server.url, SMOL, 1)  # loaded, so the stream below is all decoding
    store = Store(root, sweep=False)
    gemma_blob = store.blob_path(store.manifest(ModelName.parse(GEMMA)).layer(MEDIA_MODEL).digest)
    gemma_blob.unlink()  # so the create really copies 253 MB (the manifest is restored below)
    try:
        run = asyncio.run(_stream_during_create(server.url, str(gemma)))
        assert run["status"] == 200, run
        assert gemma_blob.exists() and gemma_blob.stat().st_size == gemma.stat().st_size
        start, end, times = run["start"], run["end"], run["times"]
        gaps = [b - a for a, b in zip(times, times[1:])]
        during = [b - a for a, b in zip(times, times[1:]) if b > start and a < end]
        assert len(during) >= 3, "the stream must run through the create"
        median, longest, ping = statistics.median(gaps), max(during), max(run["pings"])
        for key, value in (("create_s", end - start), ("median_gap_s", median), ("max_gap_during_create_s", longest),
                           ("max_ping_during_create_s", ping)):
            record_property(key, round(value, 4))
        print(f"create {end - start:.3f} s, median gap {median * 1000:.1f} ms, longest gap during the create "
              f"{longest * 1000:.1f} ms ({len(during)} gaps), longest /api/version reply {ping * 1000:.1f} ms "
              f"({len(run['pings'])} sent)")
        # The event loop answered all along (blocked, one reply would have waited the whole copy) ...
        assert ping < 0.25 and ping < (end - start) / 2, (ping, end - start)
        # ... and the stream went on: no gap near the length of the create. (Gaps do grow from the
        # median: the copy takes CPU from the runner on this 2-core machine.)
        assert longest < 0.4 and longest < 0.75 * (end - start), (longest, end - start)
    finally:
        httpx.request("DELETE", server.url + "/api/delete", json={"model": "big:1"})
        if not gemma_blob.exists():
            link(gemma, gemma_blob)


# -- item 8: a full disk -------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """A small filesystem of its own, so that the disk can be filled for real (needs root)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=112m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_is_507_and_leaves_nothing(tmpfs, start_server, model_store, allowed):
    root = tmpfs / "models"
    fill_store(root, model_store, (SMOL,), share=False)  # 98 MB of 112 MB
    free = shutil.disk_usage(tmpfs).free
    server = start_server(OLLAMA_MODELS=str(root), CORRAL_ALLOW_LOCAL_FROM=str(allowed))
    before = blob_names(root)
    data = os.urandom(free + (4 << 20))
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = httpx.post(f"{server.url}/api/blobs/{digest}", content=data, timeout=120)
    assert r.status_code == 507, r.text
    assert r.json()["error"].startswith("no space left on device") and str(root) in r.json()["error"]
    assert blob_names(root) == before and not leftovers(root)
    assert shutil.disk_usage(tmpfs).free >= free - (1 << 20)  # the space came back
    # A create that copies a file bigger than the space left: 507, the temporary removed.
    gemma = allowed / "gemma.gguf"
    if not gemma.exists():
        link(Store(model_store).model_file(ModelName.parse(GEMMA)), gemma)
    r = create(server.url, model="big:1", **{"from": str(gemma)})
    assert r.status_code == 507 and "no space left on device" in r.json()["error"], r.text
    assert blob_names(root) == before and not leftovers(root)
    # What was there still works.
    assert generate(server.url, SMOL, 3)["eval_count"] == 3
    assert httpx.post(server.url + "/api/copy", json={"source": SMOL, "destination": "still:1"}).status_code == 200


def test_enospc_at_the_lowest_level_is_storage_full(tmp_path, monkeypatch):
    """Without a tmpfs to fill: the file write itself fails with ENOSPC."""
    store = Store(tmp_path)
    writer = store.blob_writer()
    real = writer._tmp.file

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(real, name)

    writer._tmp.file = Full()
    with pytest.raises(StorageFull, match="no space left on device"):
        writer.write(b"x" * 100)
    assert not leftovers(tmp_path)
    real.close()


def test_stale_temporaries_are_swept_when_the_store_opens(tmp_path, model_store, start_server):
    store = fill_store(tmp_path, model_store, (SMOL,))
    old = time.time() - STALE_AFTER_S - 5
    blobs = tmp_path / "blobs"
    stale = [blobs / f"{TEMP_PREFIX}dead", blobs / ("sha256-" + "0" * 64 + "-partial"), blobs / "tmpab12.partial",
             tmp_path / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / f"{TEMP_PREFIX}x",
             tmp_path / "corral-pull-old"]
    for path in stale[:-1]:
        path.write_bytes(b"half")
    stale[-1].mkdir()
    (stale[-1] / "wheel.whl").write_bytes(b"half")
    held = blobs / f"{TEMP_PREFIX}alive"  # a writer in another process still holds it
    fresh = blobs / f"{TEMP_PREFIX}new"  # created a moment ago, not yet locked by its writer
    held.write_bytes(b"in use")
    fresh.write_bytes(b"in use")
    model = tmp_path / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m.partial"
    shutil.copyfile(tmp_path / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m", model)
    for path in [*stale, held, model]:
        os.utime(path, (old, old))
    soon = time.time() + 600  # "a moment ago" however slowly the server below starts
    os.utime(fresh, (soon, soon))
    with open(held, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        server = start_server(OLLAMA_MODELS=str(tmp_path))
        assert not any(p.exists() for p in stale)
        assert held.exists() and fresh.exists() and model.exists()
    assert generate(server.url, "smollm2:135m.partial", 2)["eval_count"] == 2
    assert store.has_blob(store.manifest(ModelName.parse(SMOL)).layer(MEDIA_MODEL).digest)
    assert store.sweep() == 1 and not held.exists() and fresh.exists()  # its writer is gone now


# -- item 10: delete unloads and tidies; ports; an unreachable registry ------------------------------

def test_delete_unloads_and_removes_empty_folders(private):
    server, root = private
    for name in ("gone:1", "ns1/gone2:1"):
        assert httpx.post(server.url + "/api/copy", json={"source": SMOL, "destination": name}).status_code == 200
        generate(server.url, name, 1, keep_alive="10m")
        assert ModelName.parse(name).short in ps(server.url)
        assert httpx.request("DELETE", server.url + "/api/delete", json={"model": name}).status_code == 200
        short = ModelName.parse(name).short
        assert wait_until(lambda short=short: short not in ps(server.url), timeout=10), ps(server.url)
    manifests = root / "manifests" / "registry.ollama.ai"
    assert not (manifests / "library" / "gone").exists() and not (manifests / "ns1").exists()
    assert (manifests / "library" / "smollm2").is_dir()
    assert SMOL in {m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]}


@pytest.mark.parametrize("name, ok", [("h:1/a/b", True), ("h:65535/a/b:c", True), ("h:65536/a/b", False),
                                      ("h:0/a/b", False), ("h:99999/a/b", False), ("h:00080/a/b", True)])
def test_ports_in_names(name, ok):
    if ok:
        assert ModelName.parse(name).host.startswith("h:")
    else:
        with pytest.raises(InvalidName, match="port"):
            ModelName.parse(name)


def test_unreachable_registry_is_502_naming_the_host(private):
    server, _ = private
    port = free_port()  # bound a moment ago and closed: nothing listens there
    host = f"127.0.0.1:{port}"
    started = time.monotonic()
    r = httpx.post(server.url + "/api/pull", json={"model": f"{host}/x/y:z", "insecure": True, "stream": False},
                   timeout=60)
    assert r.status_code == 502 and host in r.json()["error"], r.text
    assert time.monotonic() - started < 5
    with httpx.stream("POST", server.url + "/api/pull", json={"model": f"{host}/x/y:z", "insecure": True},
                      timeout=60) as streamed:
        lines = [json.loads(line) for line in streamed.iter_lines() if line]
    assert host in lines[-1]["error"]
    assert httpx.post(server.url + "/api/pull", json={"model": "127.0.0.1:70000/x/y:z"}).status_code == 400
    r = httpx.post(server.url + "/api/copy", json={"source": SMOL, "destination": f"{host}/x/y:z"})
    assert r.status_code == 200
    try:
        r = httpx.post(server.url + "/api/push", json={"model": f"{host}/x/y:z", "insecure": True, "stream": False},
                       timeout=60)
        assert r.status_code == 502 and host in r.json()["error"], r.text
    finally:
        httpx.request("DELETE", server.url + "/api/delete", json={"model": f"{host}/x/y:z"})
