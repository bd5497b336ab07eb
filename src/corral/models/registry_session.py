"""One conversation with a registry: where a name's registry is (mirrors, Hugging Face), the
timeouts, the Bearer challenge (a token fetched anonymously from the realm), and the errors a
registry's answers become."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import httpx

from corral.errors import UpstreamError
from corral.models.names import ModelName

CONNECT_TIMEOUT_S = 5.0
METADATA_READ_TIMEOUT_S = 15.0  # a manifest or a token: small answers
MAX_STREAMS = 4  # blobs downloading at once
HF_HOSTS = ("hf.co", "huggingface.co")
Progress = Callable[[str, int, int, str], None]  # status, completed, total, digest (pull and push)


class RegistryError(UpstreamError):
    """A registry answered wrongly or not at all (502)."""


class RegistryUnreachable(RegistryError):
    """The registry's host did not answer: refused, unresolvable, timed out, cut off, or a gateway
    in front of it said so (502/503/504)."""


class RegistryNotFound(RegistryError):
    """The registry has no such model (or will not say so without credentials)."""

    status = 404


class PullCancelled(RegistryError):
    """The client went away; what was downloaded stays in the partial files, for the next pull."""


# -- where a name's registry is ----------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    base: str  # scheme://host[:port][/prefix], without a trailing slash
    host: str  # the registry host the name names
    mirror: bool = False

    def describe(self) -> str:
        return f"{self.host} (mirror {self.base})" if self.mirror else self.host


def endpoint(name: ModelName, insecure: bool = False, mirrors: Mapping[str, str] | None = None) -> Endpoint:
    """The base URL for a name's registry: its mirror if one is set for the host (hf.co and
    huggingface.co are one registry), else https (http when insecure) to the host itself."""
    table = {host.lower(): url for host, url in (mirrors or {}).items()}
    host = name.host.lower()
    url = table.get(host)
    if url is None and host in HF_HOSTS:
        url = next((table[h] for h in HF_HOSTS if h in table), None)
    if url:
        return Endpoint(url.rstrip("/"), name.host, mirror=True)
    return Endpoint(f"{'http' if insecure else 'https'}://{name.host}", name.host)


# -- one conversation with a registry: timeouts, the Bearer challenge ------------------------------

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` → ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM.finditer(rest)}
    return scheme.lower(), params


class Session:
    """An httpx client plus the registry's token, shared by the threads of one pull or push."""

    def __init__(self, end: Endpoint, repository: str) -> None:
        self.end = end
        self.repository = repository
        self.client = httpx.Client(timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=METADATA_READ_TIMEOUT_S),
                                   follow_redirects=True, headers={"User-Agent": "corral"},
                                   limits=httpx.Limits(max_connections=MAX_STREAMS + 2))
        self._token: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def url(self, kind: str, reference: str) -> str:
        return f"{self.end.base}/v2/{self.repository}/{kind}/{reference}"

    def send(self, method: str, url: str, *, headers: dict | None = None,
             content: Callable[[], bytes | Iterator[bytes]] | None = None, stream: bool = False,
             read_timeout: float = METADATA_READ_TIMEOUT_S) -> httpx.Response:
        """One request; a Bearer challenge is answered once (a fresh token) and the request sent again.
        `content` makes the body anew for each try. A streamed response must be closed by the caller."""
        for attempt in range(2):
            token = self._token
            request = self.client.build_request(
                method, url, headers={**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})},
                content=content() if content else None,
                timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=read_timeout))
            response = self.client.send(request, stream=stream)
            if response.status_code != 401 or attempt:
                return response
            challenge = response.headers.get("www-authenticate", "")
            response.close()
            self._authenticate(challenge, token)
        raise AssertionError("unreachable")

    def _authenticate(self, challenge: str, failed: str | None) -> None:
        with self._lock:
            if self._token != failed:
                return  # another thread fetched a new token meanwhile
            scheme, params = parse_challenge(challenge)
            if scheme != "bearer" or not params.get("realm"):
                raise RegistryNotFound(f"registry {self.end.describe()} needs credentials "
                                       f"({challenge.split(' ')[0] or 'no challenge'}); corral pulls anonymously")
            realm = httpx.URL(params["realm"])
            if realm.scheme not in ("http", "https"):
                raise RegistryError(f"registry {self.end.describe()} names a token service that is not http(s)")
            query: list[tuple[str, str | int | float | bool | None]] = (
                [("service", params["service"])] if params.get("service") else [])
            query += [("scope", s) for s in params.get("scope", "").split(" ") if s]
            r = self.client.get(realm, params=query)  # anonymous: no credentials go anywhere
            if r.status_code != 200:
                raise RegistryError(f"the token service of {self.end.describe()} answered {r.status_code}: "
                                    f"{r.text[:200]}")
            try:
                body = r.json()
                token = body.get("token") or body.get("access_token")
            except (ValueError, AttributeError):
                token = None
            if not isinstance(token, str) or not token:
                raise RegistryError(f"the token service of {self.end.describe()} gave no token")
            self._token = token


def unreachable(end: Endpoint, exc: Exception) -> RegistryUnreachable:
    reason = str(exc) or type(exc).__name__
    return RegistryUnreachable(f"cannot reach registry {end.describe()}: {reason}")


def status_error(end: Endpoint, status: int, what: str, body: str = "") -> RegistryError:
    detail = f": {body[:200]}" if body else ""
    if status in (502, 503, 504):
        return RegistryUnreachable(f"cannot reach registry {end.describe()}: it answered {status} for {what}{detail}")
    return RegistryError(f"registry {end.describe()} answered {status} for {what}{detail}")
