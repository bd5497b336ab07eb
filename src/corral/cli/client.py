"""The CLI's HTTP side: one client per command, replies read as Ollama's Go client reads them.

Every failure becomes a CliError whose text is what `Error: ...` shows: the server's `error`
field for an HTTP error, one sentence for a server that cannot be reached."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from corral.config import Settings


class CliError(Exception):
    """A command failed; the message is the one line the user sees after `Error: `."""


class ServerError(CliError):
    """The server answered with an error status (or an error line in a stream)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NoServer(CliError):
    pass


def no_server(settings: Settings) -> NoServer:
    return NoServer(f"could not connect to corral server at {settings.base_url}, run 'corral serve' to start it")


class Api:
    """A thin client for the Ollama API the verbs use; connection failures become NoServer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = httpx.Client(base_url=settings.base_url, timeout=httpx.Timeout(10.0, read=None))

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.ConnectError:
            raise no_server(self.settings) from None
        return check_reply(response)

    def show(self, model: str) -> dict[str, Any]:
        return self.request("POST", "/api/show", {"model": model})

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The NDJSON objects of a streamed reply; an `error` line ends it with ServerError."""
        try:
            with self.http.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    check_reply(response)
                for line in response.iter_lines():
                    if not line:
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        raise ServerError(line, response.status_code) from None
                    if isinstance(obj, dict) and obj.get("error"):
                        raise ServerError(str(obj["error"]), response.status_code)
                    yield obj
        except httpx.ConnectError:
            raise no_server(self.settings) from None

    def wait_until_up(self, seconds: float) -> None:
        """A server started just before `run` (as in the README) may still be binding its port."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.http.get("/")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise no_server(self.settings) from None
                time.sleep(0.2)


def check_reply(response: httpx.Response) -> dict[str, Any]:
    """A successful reply's body; ServerError with the server's own message otherwise."""
    if response.status_code >= 400:
        try:
            body = response.json()
            message = body.get("error") if isinstance(body, dict) else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            message = None
        raise ServerError(str(message or response.text.strip() or response.reason_phrase), response.status_code)
    if not response.content:
        return {}
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ServerError(f"unexpected reply from the server: {response.text[:200]}", response.status_code) from None
    return body if isinstance(body, dict) else {}
