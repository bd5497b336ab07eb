"""The affinity router: Ray Serve's request router, choosing a node by where the model is warm.

Each replica's routing stats are its NodeStats (cluster/node.py, refreshed about once a second);
`rank` (cluster/ranking.py) orders the nodes in tiers (loaded with a free slot, loaded but busy,
stored with the most free memory, the rest). Serve tries the tiers in order and takes, within one,
the replica with the fewest requests in flight. The ingress passes the request's `model`, the nodes
to `exclude` (those that already answered "busy") and, for fan-outs, a `target` node as keyword
arguments of the handle call.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol, TypeVar

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from corral.cluster.ranking import NodeStats, rank


class _Replica(Protocol):
    @property
    def routing_stats(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Replica)


def choose(replicas: Sequence[R], model: str | None, exclude: Collection[str] = (),
           target: str | None = None) -> list[list[R]]:
    """Tiers of replicas for one request. Never empty while there are replicas: Serve would
    retry an empty choice for ever, so a request every node refused, or a target that is gone,
    still goes somewhere, and the node answers it (busy, or "not this node")."""
    by_node: dict[str, R] = {}
    unknown: list[R] = []  # replicas that have not reported stats yet (just started)
    stats: list[NodeStats] = []
    for replica in replicas:
        try:
            node = NodeStats.from_dict(replica.routing_stats)
        except ValueError:  # no stats yet, or a node of another version
            unknown.append(replica)
            continue
        by_node[node.node] = replica
        stats.append(node)
    if target is not None:
        return [[by_node[target]]] if target in by_node else [list(replicas)] if replicas else []
    tiers = [[by_node[name] for name in tier] for tier in rank(model, stats, exclude)]
    if unknown:
        tiers.append(unknown)
    if not tiers and replicas:
        tiers = [list(replicas)]
    return tiers


class AffinityRouter(RequestRouter):
    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        kwargs = pending_request.kwargs if pending_request is not None else {}
        return choose(candidate_replicas, kwargs.get("model"), kwargs.get("exclude", ()), kwargs.get("target"))
