"""Where a request should go: each node's load as the router sees it, and the ranking by model
affinity (issue 17). Pure: the Ray router feeds it the stats nodes report and tries the tiers
in order, a node of a later tier only when every node before it refused (busy)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.models.names import InvalidName, ModelName
from corral.scheduler.snapshot import Snapshot


def model_key(name: str) -> str:
    """One spelling per model, as Ollama matches names: case ignored, the default host and
    namespace left out, a missing tag is `latest` ("SmolLM2" == "library/smollm2:latest").
    A name that does not parse keeps its own lower-cased text (no node has it)."""
    try:
        return ModelName.parse(name).short.lower()
    except InvalidName:
        return name.strip().lower()


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """One loaded model on one node: its free slots (on runners loading or ready), the requests
    holding its slots and those waiting for it."""

    free_slots: int
    running: int
    queued: int


@dataclass(frozen=True, slots=True)
class NodeStats:
    """What a node reports for routing (keys of `loaded` and names in `stored` are model_key()s)."""

    node: str
    loaded: Mapping[str, ModelLoad]
    stored: frozenset[str]
    free_memory: int  # bytes of its model budget not reserved by loaded models
    running: int  # requests holding a slot, all models
    queued: int  # requests waiting, all models
    draining: bool = False  # leaving: new requests only when nothing else can take them

    @classmethod
    def of(cls, node: str, snapshot: Snapshot, stored_names: Iterable[str], draining: bool = False) -> NodeStats:
        """From the node's scheduler snapshot and the names its store lists. A model being
        unloaded is no longer loaded; one loading counts its slots as free (a request sent there
        waits for that load instead of starting another elsewhere). A slot the interactive lane
        holds back (scheduler/reserve.py) counts as free: requests are interactive unless a key
        says otherwise, and the router cannot tell a request's lane (a batch one sent there waits
        in that node's queue, behind the reserve)."""
        free: dict[str, int] = {}
        for runner in snapshot.runners:
            if runner.state != "unloading":
                key = model_key(runner.name)
                free[key] = free.get(key, 0) + max(runner.slots_total - runner.slots_busy, 0)
        totals = {model_key(name): t for name, t in snapshot.models.items()}
        loaded = {key: ModelLoad(slots, totals[key].running if key in totals else 0,
                                 totals[key].waiting if key in totals else 0) for key, slots in free.items()}
        return cls(node=node, loaded=loaded, stored=frozenset(model_key(n) for n in stored_names),
                   free_memory=max(snapshot.budget - snapshot.reserved, 0),
                   running=sum(t.running for t in snapshot.models.values()),
                   queued=sum(t.waiting for t in snapshot.models.values()), draining=draining)

    @property
    def load(self) -> int:
        return self.running + self.queued

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what Ray's record_routing_stats must return)."""
        return {"node": self.node, "free_memory": self.free_memory, "running": self.running, "queued": self.queued,
                "draining": self.draining, "stored": sorted(self.stored),
                "loaded": {k: {"free_slots": v.free_slots, "running": v.running, "queued": v.queued}
                           for k, v in sorted(self.loaded.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeStats:
        """The inverse of to_dict(); raises ValueError for anything else (a node of another version)."""
        try:
            loaded = {str(k): ModelLoad(_count(v["free_slots"]), _count(v["running"]), _count(v["queued"]))
                      for k, v in dict(data["loaded"]).items()}
            stored = data["stored"]
            if isinstance(stored, str | bytes):
                raise ValueError("stored must be a list of names")
            return cls(node=str(data["node"]), loaded=loaded, stored=frozenset(str(s) for s in stored),
                       free_memory=_count(data["free_memory"]), running=_count(data["running"]),
                       queued=_count(data["queued"]), draining=bool(data.get("draining", False)))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a node's routing stats: {exc!r}") from exc


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return value


def rank(model: str | None, nodes: Sequence[NodeStats], exclude: Collection[str] = ()) -> list[list[str]]:
    """Tiers of node names to try in order: the model loaded with a free slot; loaded but busy;
    in the node's store (most free memory first); the rest. Within a tier the least loaded
    first (running + queued, then the name, so equal nodes rank the same on every ingress),
    except that among busy nodes the one with the fewest requests waiting for this model comes
    first (a model's waiters never wait behind another model's, scheduler.py).
    Draining nodes come last, ranked the same way among themselves; excluded ones (nodes that
    already refused this request, or are gone) never. No model: one tier, least loaded first.
    Empty tiers are left out."""
    candidates = [n for n in nodes if n.node not in exclude]
    staying = [n for n in candidates if not n.draining]
    leaving = [n for n in candidates if n.draining]
    return _tiers(model, staying) + _tiers(model, leaving)


def _tiers(model: str | None, nodes: Sequence[NodeStats]) -> list[list[str]]:
    if model is None:
        groups = [list(nodes)]
        orders: list[Callable[[NodeStats], tuple]] = [_least_loaded]
    else:
        key = model_key(model)
        warm_free = [n for n in nodes if key in n.loaded and n.loaded[key].free_slots > 0]
        warm_busy = [n for n in nodes if key in n.loaded and n.loaded[key].free_slots <= 0]
        cold = [n for n in nodes if key not in n.loaded]
        groups = [warm_free, warm_busy, [n for n in cold if key in n.stored], [n for n in cold if key not in n.stored]]
        orders = [_least_loaded, lambda n: (n.loaded[key].queued, *_least_loaded(n)), _most_memory, _least_loaded]
    return [[n.node for n in sorted(group, key=order)] for group, order in zip(groups, orders, strict=True) if group]


def _least_loaded(node: NodeStats) -> tuple[int, str]:
    return node.load, node.node


def _most_memory(node: NodeStats) -> tuple[int, int, str]:
    return -node.free_memory, node.load, node.node
