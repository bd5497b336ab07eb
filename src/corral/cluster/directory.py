"""The directory of live nodes: each node reports its NodeStats about once a second (with its
routing stats); the ingress reads who is alive for the fan-outs (/api/ps, /api/tags, /metrics,
pull, delete, ...). A detached, named Ray actor, so every process of the cluster finds the same one;
a node that stops reporting is dropped after STALE_S."""

from __future__ import annotations

import time
from typing import Any

import ray

NAME = "corral-directory"
NAMESPACE = "corral"
STALE_S = 5.0  # a node silent this long (dead, or its replica gone) is no longer listed


@ray.remote(num_cpus=0)
class Directory:
    def __init__(self) -> None:
        self._nodes: dict[str, tuple[float, dict[str, Any]]] = {}

    def report(self, stats: dict[str, Any]) -> None:
        self._nodes[stats["node"]] = (time.monotonic(), stats)

    def forget(self, node: str) -> None:
        self._nodes.pop(node, None)

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


async def nodes() -> list[dict[str, Any]]:
    return list(await handle().nodes.remote())
