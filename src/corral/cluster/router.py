"""The affinity router: Ray Serve's request router, choosing a node by where the model is warm.

Each replica's routing stats are its NodeStats (cluster/node.py, refreshed about once a second);
`rank` (cluster/ranking.py) orders the nodes in tiers (loaded with a free slot, loaded but busy,
stored with the most free memory, the rest). Serve tries the tiers in order and takes, within one,
the replica with the fewest requests in flight. The ingress passes the request's `model`, the nodes
to `exclude` (those that already answered "busy") and, for fan-outs, a `target` node as keyword
arguments of the handle call.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from corral.cluster import link
from corral.cluster.ranking import NodeStats, model_key, rank


class _Replica(Protocol):
    @property
    def routing_stats(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Replica)


def choose(replicas: Sequence[R], model: str | None, exclude: Collection[str] = (),
           target: str | None = None, recent: str | None = None,
           streams: Mapping[str, int] | None = None) -> list[list[R]]:
    """Tiers of replicas for one request. Never empty while there are replicas: Serve would
    retry an empty choice for ever, so a request every node refused, or a target that is gone,
    still goes somewhere, and the node answers it (busy, or "not this node").

    `recent` is the node this router sent the model to in the last seconds: while no node's stats
    show the model loaded yet (they are up to a second old, and a load takes longer), it goes
    first, so a burst of requests for a cold model starts one load, not one per node.

    `streams`: this ingress's replies open on each node, live. Within a tier the nodes with the
    fewest go first: Serve's own tie-break (the fewest calls in flight) no longer sees them, as a
    node's replies share one pump call (cluster/mux.py)."""
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
    if (model is not None and recent in by_node and recent not in exclude
            and not any(model_key(model) in node.loaded for node in stats)):
        first = by_node[recent]
        tiers = [[first], *([r for r in tier if r is not first] for tier in tiers)]
        tiers = [tier for tier in tiers if tier]
    if streams:
        names = {id(r): n for n, r in by_node.items()}
        tiers = [sub for tier in tiers for sub in _fewest_first(tier, streams, names)]
    if unknown:
        tiers.append(unknown)
    if not tiers and replicas:
        tiers = [list(replicas)]
    return tiers


def _fewest_first(tier: list[R], streams: Mapping[str, int], names: Mapping[int, str]) -> list[list[R]]:
    counts = sorted({streams.get(names[id(r)], 0) for r in tier})
    return [[r for r in tier if streams.get(names[id(r)], 0) == count] for count in counts]


STICKY_S = 3.0  # how long a model's last node counts as "loading it" (recent, in choose)


class AffinityRouter(RequestRouter):
    _sent: dict[str, tuple[str, float]]  # model key → (node, when) of the last request routed

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        kwargs = pending_request.kwargs if pending_request is not None else {}
        model = kwargs.get("model")
        recent = None
        if model is not None and (sent := self._recent().get(model_key(model))) is not None:
            node, when = sent
            recent = node if time.monotonic() - when < STICKY_S else None
        return choose(candidate_replicas, model, kwargs.get("exclude", ()), kwargs.get("target"), recent,
                      link.OPEN)

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        model = pending_request.kwargs.get("model")
        replica = self._replicas.get(replica_id)
        node = (replica.routing_stats or {}).get("node") if replica is not None else None
        if model is not None and node is not None and pending_request.kwargs.get("target") is None:
            self._recent()[model_key(model)] = (node, time.monotonic())

    def _recent(self) -> dict[str, tuple[str, float]]:
        # Set here, not in __init__: Serve builds routers with its own constructor arguments.
        if not hasattr(self, "_sent"):
            self._sent = {}
        return self._sent
