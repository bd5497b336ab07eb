"""A corral node: one Ray Serve replica per machine, hosting a whole corral in-process.

The replica runs corral's own app (store, scheduler, runners, memory budget, keep-alive) with the
Settings of its machine's environment, exactly as `corral serve` would, and answers raw HTTP
requests forwarded by the ingress (cluster/ingress.py): a reply's first parts answer `start`, the
rest go out multiplexed with the ingress's other streams by its `pump` (cluster/mux.py). Its routing
stats (what it has loaded, stored, free) feed the affinity router (cluster/router.py) and the
directory (cluster/directory.py) the ingress fans out with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, Collection
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any

import ray
from ray import serve
from ray.exceptions import RayError
from ray.serve.config import RequestRouterConfig

from corral.api.app import create_app
from corral.cluster import SERVE_ENV, directory
from corral.cluster.asgi_call import call_app
from corral.cluster.messages import Body, End, Head, Part, ProxyRequest, Started
from corral.cluster.mux import LEASE_S, Message, Mux
from corral.cluster.ranking import NodeStats
from corral.config import Autoscale, Settings

log = logging.getLogger("corral.cluster.node")

NODE_HEADER = b"x-corral-node"  # which node answered: the ingress excludes it on a retry
NODE_RESOURCE = "corral_node"  # one per machine: `ray start --resources='{"corral_node": 1}'`
DEPLOYMENT = "corral-node"
# corral admits or refuses every request itself (bounded queue, 503): Ray must not queue or cap.
UNBOUNDED = 1_000_000


def node_name() -> str:
    """The host and the Ray node: several nodes on one host (the tests) stay apart, and a replica
    that Serve replaces on the same machine keeps its name. The id's tail: Ray's fake autoscaling
    nodes share a head of f's (fff...f00001) and differ only there."""
    return f"{socket.gethostname()}-{ray.get_runtime_context().get_node_id()[-8:]}"


def refusal(status: int, message: str, node: str) -> list[Part]:
    """A reply decided by the node wrapper itself (not corral's app), in corral's JSON shape."""
    body = json.dumps({"error": message}).encode()
    return [Head(status, ((b"content-type", b"application/json"), (NODE_HEADER, node.encode()))),
            Body(body, False)]


def unnice() -> None:
    """Every thread of this replica back at niceness 0, `corral serve`'s, where the OS allows it
    (root, CAP_SYS_NICE). Ray starts its workers at 15 (RAY_worker_niceness) to keep its own
    daemons ahead of them; but here the worker is the machine's server, and its runners (forked
    from it, so at its niceness) are the machine's work. At 15 on a machine whose cores llama.cpp
    fills, every wake-up of Ray's daemons and of the driver preempts a decode thread, stalling its
    partner at the next barrier; a runner at 0 with its replica at 15 starves the replica
    instead (docs/PERFORMANCE.md, the Ray hop). On Linux a niceness is a thread's: all are set."""
    tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) > 0:
                os.setpriority(os.PRIO_PROCESS, tid, 0)
        except ProcessLookupError:
            continue  # a thread that ended meanwhile
        except PermissionError as exc:
            log.warning("corral node at niceness %d, its runners too (%s): start Ray with RAY_worker_niceness=0",
                        os.getpriority(os.PRIO_PROCESS, 0), exc)
            return


class NotThisNode(Exception):
    """A pump that reached another replica than the one asked for (the router sends a call whose
    target has no replica anywhere): the ingress's link fails, as for a node that died."""


class CorralNode:
    """The node deployment's class (deployment() below wraps it for Serve)."""

    # Serve awaits an async constructor: the app's lifespan starts before the first request.
    async def __init__(self, settings: Settings | None = None) -> None:  # type: ignore[misc]
        unnice()  # before any runner starts: they inherit it
        self.settings = settings or Settings.from_env()
        self.name = node_name()
        self.app = create_app(self.settings)
        self.scheduler = self.app.state.corral.scheduler
        self.store = self.app.state.corral.store
        self.draining = False
        self.instance = uuid.uuid4().hex
        self.mux = Mux(self.settings.cluster_interval)
        self._reported = -directory.REPORT_EVERY_S  # the first stats go to the directory at once
        self._report: asyncio.Task[None] | None = None
        self._expirer = asyncio.create_task(self._expire(), name="corral-mux-expire")
        # The app's lifespan (preload, and at the end the runners' shutdown) spans the replica's life.
        self._lifespan: AbstractAsyncContextManager[Any] = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        log.info("corral node %s: store %s", self.name, self.settings.models_dir)

    async def start(self, request: ProxyRequest, ingress: str, stream: str, model: str | None = None,
                    exclude: Collection[str] = (), target: str | None = None) -> Started:
        """One forwarded request: its reply's first items (the Head and what came with it; a
        refusal or a non-streamed reply is usually whole here). The rest goes out by the pump of
        `ingress`, under `stream` (an id the ingress chose).

        model/exclude/target are read by the router before the call; `target` is checked again
        here, because a router with no replica for the target sends the request anywhere
        rather than wait for ever."""
        if target is not None and target != self.name:
            return Started(self.instance, (*refusal(503, f"node {target} is not available", self.name), End()))
        outbox = self.mux.outbox(ingress, time.monotonic())
        items = await outbox.start(stream, self._reply(request))
        outbox.seen = time.monotonic()
        return Started(self.instance, tuple(items))

    async def _reply(self, request: ProxyRequest) -> AsyncGenerator[Head | Body, None]:
        """The app's reply, its Head naming this node (the ingress excludes it on a retry)."""
        async with aclosing(call_app(self.app, request)) as parts:
            async for part in parts:
                if isinstance(part, Head):
                    part = Head(part.status, (*part.headers, (NODE_HEADER, self.name.encode())))
                yield part

    async def pump(self, ingress: str, instance: str, target: str | None = None) -> AsyncGenerator[Message, None]:
        """The ingress's one stream from this node: each message, every item its streams produced
        since the last (one message per runner step, whatever the number of streams)."""
        if target != self.name or instance != self.instance:
            raise NotThisNode(f"{self.name} ({self.instance}) is not node {target} ({instance})")
        async for message in self.mux.outbox(ingress, time.monotonic()).pump():
            yield message

    async def cancel(self, ingress: str, stream: str, target: str | None = None) -> bool:
        """The ingress's client left: the request is cancelled and its slot freed."""
        outbox = self.mux.get(ingress) if target == self.name else None
        return outbox is not None and outbox.cancel(stream)

    async def _expire(self) -> None:
        """Cancel the streams of ingresses that went silent (a dead caller ends no Ray stream here).
        The directory unreachable: nothing expires (a lost directory must not cut every stream).
        Asked as often as the ingresses say they are alive, not more: a silent ingress's streams
        end within LEASE_S + INGRESS_EVERY_S, and a node with no pump attached asks nothing (each
        call wakes Ray's GCS and this replica's core worker on a machine llama.cpp fills)."""
        while True:
            await asyncio.sleep(directory.INGRESS_EVERY_S)
            if not self.mux.attached:
                self.mux.expire(time.monotonic())  # outboxes never pumped: ATTACH_S, no lease to renew
                continue
            try:
                alive = await directory.ingresses(LEASE_S)
            except RayError as exc:
                log.warning("the directory did not answer (%s): no ingress's streams expire now", exc)
                continue
            now = time.monotonic()
            for ingress in alive:
                self.mux.touch(ingress, now)
            for ingress in self.mux.expire(now):
                log.warning("ingress %s went silent: its streams on %s are cancelled", ingress, self.name)

    def stats(self) -> NodeStats:
        names = [str(m.name) for m in self.store.list()]
        return NodeStats.of(self.name, self.scheduler.snapshot(), names, draining=self.draining)

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve reads the node's requests in flight here for autoscaling (requests_policy)."""
        return {REQUESTS: float(self.mux.streams)}

    async def record_routing_stats(self) -> dict[str, Any]:
        """Called by Serve about once a second; the same stats go to the directory every
        REPORT_EVERY_S (it tells the ingress which nodes are alive, not how busy they are)."""
        stats = self.stats().to_dict()
        if (now := time.monotonic()) - self._reported >= directory.REPORT_EVERY_S and self._report is None:
            # Not awaited: Serve waits for these stats, and a slow GCS must not hold them.
            self._report = asyncio.create_task(self._send_report(stats), name="corral-directory-report")
            self._reported = now
        return stats

    async def _send_report(self, stats: dict[str, Any]) -> None:
        try:
            await directory.report(stats)
        except RayError as exc:  # the next report comes REPORT_EVERY_S later
            log.warning("the directory did not take node %s's report: %s", self.name, exc)
        finally:
            self._report = None

    async def __del__(self) -> None:
        """Serve stops the replica: refuse new work (503, so the ingress tries another node),
        let admitted requests finish (CORRAL_SHUTDOWN_TIMEOUT), then stop the runners."""
        self.draining = True
        self.scheduler.drain()
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while time.monotonic() < deadline:
            snap = self.scheduler.snapshot()
            if not any(m.running or m.waiting for m in snap.models.values()):
                break
            await asyncio.sleep(0.2)
        try:
            await directory.forget(self.name)
        except RayError as exc:  # its entry goes stale in STALE_S all the same
            log.warning("the directory did not forget node %s: %s", self.name, exc)
        await self._lifespan.__aexit__(None, None, None)


REQUESTS = "requests"  # the custom autoscaling metric: a node's requests in flight (its streams)


def requests_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Serve's default policy (replicas = requests in flight / target), counting each node's own
    requests in flight (record_autoscaling_stats): Serve's count of Ray calls in flight no longer
    is one, as a node's streams share one pump call per ingress. Serve's wrapper applies the
    delays, factors and bounds of the config."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    requests = sum(ctx.aggregated_metrics.get(REQUESTS, {}).values())
    return requests / ctx.config.get_target_ongoing_requests(), {}


def autoscaling(scale: Autoscale) -> dict[str, Any]:
    """Serve's autoscaling_config: replicas by requests in flight per node. Up fast (a new machine
    takes minutes anyway), down only after `downscale_delay` of low load; the removed replica
    drains (__del__), so its streams finish."""
    return {"min_replicas": scale.min_replicas, "max_replicas": scale.max_replicas,
            "policy": {"policy_function": f"{__name__}:requests_policy"},
            "initial_replicas": max(scale.min_replicas, 1),
            "target_ongoing_requests": scale.target_ongoing, "upscale_delay_s": 2.0,
            "downscale_delay_s": scale.downscale_delay, "metrics_interval_s": 1.0,
            "look_back_period_s": max(1.0, min(10.0, scale.downscale_delay / 2))}


def deployment(num_replicas: int, shutdown_timeout: float = 30.0, scale: Autoscale | None = None) -> serve.Deployment:
    """The node deployment: one replica per machine that offers the `corral_node` resource, a fixed
    count, or as many as the load asks for within `scale` (machines added by Ray's autoscaler)."""
    count: dict[str, Any] = {"num_replicas": num_replicas} if scale is None else \
        {"num_replicas": "auto", "autoscaling_config": autoscaling(scale)}
    # Ray's RequestRouterConfig is a pydantic model its stubs do not describe to mypy.
    router = RequestRouterConfig(request_router_class="corral.cluster.router:AffinityRouter",  # type: ignore[arg-type]
                                 request_routing_stats_period_s=1,  # type: ignore[arg-type]
                                 request_routing_stats_timeout_s=5)  # type: ignore[arg-type]
    return serve.deployment(
        name=DEPLOYMENT, **count,
        ray_actor_options={"num_cpus": 0, "resources": {NODE_RESOURCE: 1},
                           "runtime_env": {"env_vars": dict(SERVE_ENV)}},
        max_ongoing_requests=UNBOUNDED,
        request_router_config=router,
        graceful_shutdown_timeout_s=shutdown_timeout + 5, health_check_period_s=2,
    )(CorralNode)
