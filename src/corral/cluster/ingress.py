"""The ingress app: every request goes to a node (cluster/forward.py) and its reply streams back.

Routes that describe the whole cluster merge every live node's reply (cluster/merge.py): /api/ps
(rows carry `node`), /api/tags, /v1/models, /metrics (a `node` label), /api/version. Routes that
change a store (pull, create, copy, delete, blobs) go to every node, so any node can serve the model
afterwards: one node's progress streams, and the reply is an error if any node failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from corral import __version__
from corral.api.app import add_error_handlers, add_guards
from corral.api.keys import Keys
from corral.cluster.forward import Collected, Forwarder, NoNodes, Opened, error_line
from corral.cluster.merge import merge_metrics, merge_openai_models, merge_ps, merge_tags, merge_versions
from corral.cluster.messages import ProxyRequest
from corral.config import Settings

log = logging.getLogger("corral.cluster")

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# Ollama routes that change the store: every node must apply them.
STORE_CHANGES = ("/api/pull", "/api/create", "/api/copy", "/api/delete", "/api/blobs/")
MERGED: dict[str, Callable[[dict[str, Any]], dict]] = {
    "/api/ps": merge_ps, "/api/tags": merge_tags, "/v1/models": merge_openai_models, "/api/version": merge_versions,
}


class Draining(NoNodes):
    """The ingress is shutting down: new requests are refused (503), admitted ones finish."""


async def proxy_request(request: Request) -> ProxyRequest:
    # Host and Origin were checked here (the guards); a node checks its own loopback rule, and
    # CORS is answered here once.
    headers = tuple((k, v) for k, v in request.headers.raw if k.lower() not in (b"host", b"origin"))
    client = request.client.host if request.client else "127.0.0.1"
    return ProxyRequest(request.method, request.url.path, request.scope.get("query_string", b""),
                        ((b"host", b"127.0.0.1"), *headers), await request.body(), client)


def _response(status: int, headers: tuple[tuple[bytes, bytes], ...], body: AsyncIterator[bytes]) -> Response:
    response = StreamingResponse(body, status_code=status)
    response.raw_headers = list(headers)  # the node's headers, as they were (no content-type rewrite)
    return response


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _collected(reply: Collected) -> Response:
    return _response(reply.status, reply.headers, _once(reply.body))


class Ingress:
    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.draining = False

    async def forward(self, request: Request) -> Response:
        if self.draining:
            raise Draining("server is shutting down")
        req = await proxy_request(request)
        if request.method != "GET" and req.path.startswith(STORE_CHANGES):
            return await self.everywhere(req)
        if request.method == "GET" and req.path in MERGED:
            return await self.merged(req, MERGED[req.path])
        opened = await self.forwarder.open(req)
        return _response(opened.head.status, opened.head.headers, self.forwarder.body(opened, req))

    async def replies(self, req: ProxyRequest) -> list[Collected]:
        nodes = await self.forwarder.live_nodes()
        if not nodes:
            raise NoNodes("no corral node is available in the cluster")
        results = await asyncio.gather(*(self.forwarder.collect(req, node) for node in nodes), return_exceptions=True)
        replies = []
        for node, result in zip(nodes, results):
            if isinstance(result, BaseException):
                log.warning("node %s did not answer %s: %s", node, req.path, result)
            else:
                replies.append(result)
        return replies

    async def merged(self, req: ProxyRequest, merge: Callable[[dict[str, Any]], dict]) -> Response:
        replies = [r for r in await self.replies(req) if r.status == 200]
        if not replies:
            raise NoNodes("no corral node answered")
        return JSONResponse(merge({r.node: r.json() for r in replies}))

    async def metrics(self, request: Request) -> Response:
        replies = [r for r in await self.replies(await proxy_request(request)) if r.status == 200]
        text = merge_metrics({r.node: r.body.decode() for r in replies}) + self.hop_metrics()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def hop_metrics(self) -> str:
        """The hop's own counters: Ray messages read from the nodes' pumps (one per runner step
        and node, whatever the number of streams), and the streams open now."""
        return ("# HELP corral_cluster_hop_messages_total Ray messages read from the nodes' pumps.\n"
                "# TYPE corral_cluster_hop_messages_total counter\n"
                f"corral_cluster_hop_messages_total {self.forwarder.hop_messages}\n"
                "# HELP corral_cluster_hop_streams Replies streaming through the hop now.\n"
                "# TYPE corral_cluster_hop_streams gauge\n"
                f"corral_cluster_hop_streams {len(self.forwarder.streams)}\n")

    async def everywhere(self, req: ProxyRequest) -> Response:
        """A store change on every live node. A node's refusal (an error status) is the answer
        (the others are stopped); else the first node's reply streams (pull progress) while the
        others run, and a failure on any of them ends the stream with an error line."""
        nodes = await self.forwarder.live_nodes()
        if not nodes:
            raise NoNodes("no corral node is available in the cluster")
        results = await asyncio.gather(*(self.forwarder.call(req, target=n) for n in nodes), return_exceptions=True)
        opened = [r for r in results if isinstance(r, Opened)]
        lost = [n for n, r in zip(nodes, results) if not isinstance(r, Opened)]
        refused = next((o for o in opened if o.head.status >= 300), None)
        if lost or refused is not None:
            for o in opened:
                if o is not refused:
                    o.cancel()
            if refused is None:
                raise NoNodes(f"node {lost[0]} did not answer; the change may be partial")
            return _collected(await self.forwarder.read(refused))
        first, others = opened[0], [asyncio.create_task(self.forwarder.read(o)) for o in opened[1:]]

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in self.forwarder.chunks(first):
                    yield chunk
                failed = next((r for r in await asyncio.gather(*others) if r.failed), None)
                if failed is not None:
                    yield error_line(first.content_type, f"node {failed.node}: {failed.failed}")
            finally:
                for task in others:
                    task.cancel()

        if b"ndjson" in first.content_type:
            return _response(first.head.status, first.head.headers, body())
        reply = await self.forwarder.read(first)  # one JSON reply (stream: false): all must succeed
        failed = next((r for r in [reply, *await asyncio.gather(*others)] if r.failed), None)
        return _collected(failed or reply)


def ingress_app(settings: Settings, ingress: Callable[[], Ingress]) -> FastAPI:
    """The ingress's FastAPI app, behind corral's own guards (Origin/Host, CORS, body cap and
    deadline, API keys). `ingress` gives the Ingress at request time (a Serve ingress deployment
    creates its own after the app is built)."""
    app = FastAPI(title="corral cluster", version=__version__)

    @app.get("/")
    async def root() -> Response:
        return Response("Ollama is running", media_type="text/plain")

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return await ingress().metrics(request)

    @app.api_route("/{path:path}", methods=METHODS)
    async def forward(request: Request, path: str) -> Response:
        return await ingress().forward(request)

    add_error_handlers(app)
    add_guards(app, settings, Keys(settings.keys_file, settings.api_key))
    return app
