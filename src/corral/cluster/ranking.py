"""TEMPORARY stand-in for branch `parts`' ranking.py (dropped at the merge)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.scheduler.snapshot import Snapshot


def _key(name: str) -> str:
    name = name.lower()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


@dataclass(frozen=True)
class ModelLoad:
    free_slots: int
    running: int
    queued: int


@dataclass(frozen=True)
class NodeStats:
    node: str
    loaded: Mapping[str, ModelLoad] = field(default_factory=dict)
    stored: frozenset[str] = frozenset()
    free_memory: int = 0
    running: int = 0
    queued: int = 0
    draining: bool = False

    def to_dict(self) -> dict:
        return {"node": self.node, "free_memory": self.free_memory, "running": self.running,
                "queued": self.queued, "draining": self.draining, "stored": sorted(self.stored),
                "loaded": {k: [v.free_slots, v.running, v.queued] for k, v in self.loaded.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> NodeStats:
        return cls(d["node"], {k: ModelLoad(*v) for k, v in d.get("loaded", {}).items()},
                   frozenset(d.get("stored", ())), d.get("free_memory", 0), d.get("running", 0),
                   d.get("queued", 0), d.get("draining", False))

    @classmethod
    def of(cls, node: str, snapshot: Snapshot, stored_names: Iterable[str], draining: bool = False) -> NodeStats:
        loaded: dict[str, ModelLoad] = {}
        for r in snapshot.runners:
            k = _key(r.name)
            old = loaded.get(k, ModelLoad(0, 0, 0))
            loaded[k] = ModelLoad(old.free_slots + r.slots_total - r.slots_busy, old.running + r.slots_busy,
                                  max(old.queued, r.queued))
        running = sum(m.running for m in snapshot.models.values())
        queued = sum(m.waiting for m in snapshot.models.values())
        return cls(node, loaded, frozenset(_key(n) for n in stored_names),
                   max(snapshot.budget - snapshot.reserved, 0), running, queued, draining)


def rank(model: str | None, nodes: Sequence[NodeStats], exclude: Collection[str] = ()) -> list[list[str]]:
    live = [n for n in nodes if n.node not in exclude]
    load = lambda n: n.running + n.queued
    if model is None:
        return [[n.node for n in sorted(live, key=load)]] if live else []
    k = _key(model)
    tiers: list[list[NodeStats]] = [[], [], [], [], []]
    for n in live:
        m = n.loaded.get(k)
        t = 4 if n.draining else 0 if m and m.free_slots > 0 else 1 if m else 2 if k in n.stored else 3
        tiers[t].append(n)
    tiers[2].sort(key=lambda n: (-n.free_memory, load(n)))
    out = [[n.node for n in (t if i == 2 else sorted(t, key=load))] for i, t in enumerate(tiers)]
    return [t for t in out if t]
