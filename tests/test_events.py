"""GET /api/events on a live server: every request's steps arrive with its numbers, the page and
the stream obey the API key, and a subscriber that never reads holds nobody up."""

from __future__ import annotations

import json
import socket
import threading
from urllib.parse import urlparse

import httpx
from conftest import SMOL
from liveview import Load, view_server  # noqa: F401  (a fixture)


class Reader:
    """Reads /api/events in a thread: (kind, data) pairs, as they come."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: list[tuple[str, dict]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url, headers or {}), daemon=True)
        self.thread.start()

    def _read(self, url: str, headers: dict[str, str]) -> None:
        with httpx.stream("GET", url + "/api/events", headers=headers, timeout=60) as r:
            kind = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    self.events.append((kind, json.loads(line[6:])))
                if self.stop.is_set():
                    return

    def of(self, kind: str) -> list[dict]:
        return [data for k, data in self.events if k == kind]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def test_every_request_is_admitted_started_and_finished_with_its_numbers(view_server):
    reader = Reader(view_server.url)
    Load(view_server.url, SMOL, 4, num_predict=8).wait()
    deadline = threading.Event()
    for _ in range(100):  # the last events may still be on their way
        if len(reader.of("request_finished")) >= 4 and reader.of("snapshot")[-1]["tokens_total"] >= 32:
            break
        deadline.wait(0.1)
    reader.close()
    finished = reader.of("request_finished")
    assert len(reader.of("request_admitted")) == len(reader.of("request_started")) == len(finished) == 4
    assert all(f["model"] == SMOL and f["status"] == 200 and f["tokens"] == 8 and f["tenant"] == "default"
               and f["lane"] == "interactive" and 0 < f["ttft_s"] <= f["latency_s"] for f in finished)
    snapshots = reader.of("snapshot")
    assert snapshots[-1]["tokens_total"] == 32 and snapshots[-1]["dropped"] == 0
    runner = snapshots[-1]["runners"][0]
    assert runner["name"] == SMOL and runner["slots_total"] == 2 and runner["size_measured"] > 0


def test_a_subscriber_that_never_reads_does_not_block_requests(view_server):
    url = urlparse(view_server.url)
    stuck = socket.create_connection((url.hostname, url.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once: the server's writes block
    stuck.sendall(f"GET /api/events HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
    try:
        records = Load(view_server.url, SMOL, 6, num_predict=16).wait()
        assert sorted(r["status"] for r in records) == [200, 200, 200, 200, 503, 503]
        assert all(r["final"]["eval_count"] == 16 for r in records if r["status"] == 200)
        assert httpx.get(view_server.url + "/api/ps", timeout=10).status_code == 200
    finally:
        stuck.close()


def test_events_need_the_api_key_and_the_page_does_not(start_server):
    server = start_server(CORRAL_API_KEY="s3cret")
    assert httpx.get(server.url + "/api/events", timeout=10).status_code == 401
    with httpx.stream("GET", server.url + "/api/events", headers={"Authorization": "Bearer s3cret"},
                      timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines) == "event: snapshot" and json.loads(next(lines)[6:])["runners"] == []
    page = httpx.get(server.url + "/ui", timeout=10)  # the page has no data: it asks for the key itself
    assert page.status_code == 200 and "/api/events" in httpx.get(server.url + "/ui/app.js", timeout=10).text
    assert httpx.get(server.url + "/ui/../api/ps", timeout=10).status_code in (401, 404)
    assert httpx.get(server.url + "/ui/missing.js", timeout=10).status_code == 404


def test_a_pull_shows_its_steps(view_server):
    reader = Reader(view_server.url)
    r = httpx.post(view_server.url + "/api/pull", json={"model": SMOL, "stream": False}, timeout=120)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    for _ in range(50):
        if any(e["status"] == "success" for e in reader.of("pull_progress")):
            break
        threading.Event().wait(0.1)
    reader.close()
    steps = [e["status"] for e in reader.of("pull_progress")]
    assert steps[-1] == "success" and len(steps) == len(set(steps)) >= 2, steps  # each step once, not each byte
    assert all(e["model"] == SMOL for e in reader.of("pull_progress"))
