"""The directory of live nodes: each node reports its NodeStats about once a second (with its
routing stats); the ingress reads who is alive for the fan-outs (/api/ps, /api/tags, /metrics,
pull, delete, ...). A detached, named Ray actor, so every process of the cluster finds the same one;
a node that stops reporting is dropped after STALE_S.

Ingress processes report here that they are alive (every INGRESS_EVERY_S): a node cancels the
streams of an ingress that stopped (cluster/mux.py's lease), as a Ray stream whose caller died
does not end on the replica's side. Not a call to the node: Serve's router no longer reaches a
replica that is draining, whose streams must still run to their end."""

from __future__ import annotations

import time
from typing import Any

import ray

NAME = "corral-directory"
NAMESPACE = "corral"
STALE_S = 5.0  # a node silent this long (dead, or its replica gone) is no longer listed
REPORT_EVERY_S = 2.0  # a node reports this often (well under STALE_S): the ingress reads who is alive
INGRESS_EVERY_S = 3.0  # an ingress says it is alive this often (well under mux.LEASE_S)


@ray.remote(num_cpus=0)
class Directory:
    def __init__(self) -> None:
        self._nodes: dict[str, tuple[float, dict[str, Any]]] = {}
        self._ingresses: dict[str, float] = {}

    def report(self, stats: dict[str, Any]) -> None:
        self._nodes[stats["node"]] = (time.monotonic(), stats)

    def forget(self, node: str) -> None:
        self._nodes.pop(node, None)

    def ingress_alive(self, ingress: str) -> None:
        self._ingresses[ingress] = time.monotonic()

    def ingresses(self, within: float) -> list[str]:
        """The ingresses that said they were alive in the last `within` seconds."""
        now = time.monotonic()
        self._ingresses = {i: at for i, at in self._ingresses.items() if now - at < max(within, 60.0)}
        return [i for i, at in self._ingresses.items() if now - at < within]

    def nodes(self) -> list[dict[str, Any]]:
        """The live nodes' latest stats, by name."""
        now = time.monotonic()
        return [stats for name, (at, stats) in sorted(self._nodes.items()) if now - at < STALE_S]


_handle: Any = None


def handle() -> Any:
    """The cluster's directory actor (created by whoever asks first; looked up once per process)."""
    global _handle
    if _handle is None:
        _handle = Directory.options(name=NAME, namespace=NAMESPACE, get_if_exists=True,  # type: ignore[attr-defined]
                                    lifetime="detached").remote()
    return _handle


def report(stats: dict[str, Any]) -> None:
    handle().report.remote(stats)  # fire and forget: a lost report is replaced a second later


def forget(node: str) -> None:
    handle().forget.remote(node)


def ingress_alive(ingress: str) -> None:
    handle().ingress_alive.remote(ingress)  # fire and forget: the next one comes INGRESS_EVERY_S later


async def ingresses(within: float) -> set[str]:
    return set(await handle().ingresses.remote(within))


async def nodes() -> list[dict[str, Any]]:
    return list(await handle().nodes.remote())
