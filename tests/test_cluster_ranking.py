"""cluster/ranking.py: node stats from a scheduler snapshot, and the model-affinity ranking (pure)."""

from __future__ import annotations

import json

import pytest

from corral.cluster.ranking import ModelLoad, NodeStats, model_key, rank
from corral.scheduler.snapshot import ModelTotals, RunnerView, Snapshot

GiB = 2**30
SMOL = "smollm2:135m"


def node(name: str, loaded: dict[str, ModelLoad] | None = None, stored: tuple[str, ...] = (), free: int = 8 * GiB,
         running: int = 0, queued: int = 0, draining: bool = False) -> NodeStats:
    return NodeStats(name, loaded or {}, frozenset(stored), free, running, queued, draining)


@pytest.mark.parametrize(("name", "key"), [
    ("smollm2:135m", "smollm2:135m"), ("SmolLM2:135M", "smollm2:135m"),
    ("smollm2", "smollm2:latest"), ("library/smollm2:latest", "smollm2:latest"),
    ("registry.ollama.ai/library/SmolLM2", "smollm2:latest"), ("hf.co/Org/Model:Q4", "hf.co/org/model:q4"),
    ("me/mine:v1", "me/mine:v1"), ("bad name!", "bad name!"), ("  ", ""),
])
def test_model_key_matches_as_ollama_does(name, key):
    assert model_key(name) == key


def test_the_four_tiers_in_order_and_draining_last():
    nodes = [
        node("e"),  # neither loaded nor stored
        node("c", stored=(SMOL,), free=2 * GiB),
        node("f", {SMOL: ModelLoad(3, 0, 0)}, (SMOL,), draining=True),
        node("b", {SMOL: ModelLoad(0, 4, 2)}, (SMOL,), running=4, queued=2),
        node("d", stored=(SMOL,), free=6 * GiB, running=3),
        node("a", {SMOL: ModelLoad(1, 3, 0)}, (SMOL,), running=3),
    ]
    # Stored nodes: the most free memory first, whatever their load.
    assert rank(SMOL, nodes) == [["a"], ["b"], ["d", "c"], ["e"], ["f"]]
    assert rank("SmolLM2:135M", nodes) == rank(SMOL, nodes)  # names as Ollama matches them
    assert rank(SMOL, nodes, exclude={"a", "b", "f"}) == [["d", "c"], ["e"]]  # refused or gone: never
    assert rank(SMOL, [n for n in nodes if n.node == "f"]) == [["f"]]  # draining: when nothing else
    assert rank(SMOL, nodes, exclude=[n.node for n in nodes]) == []
    assert rank(SMOL, []) == []


def test_within_a_tier_the_least_loaded_first_then_the_name():
    warm = {SMOL: ModelLoad(1, 1, 0)}
    nodes = [node("z", warm, running=1), node("y", warm, running=5), node("x", warm, running=1),
             node("w", warm, running=0, queued=3)]
    assert rank(SMOL, nodes) == [["x", "z", "w", "y"]]
    rest = [node("p", running=2, free=GiB), node("q", running=1, free=GiB), node("r", running=1, free=4 * GiB)]
    assert rank("other:1", rest) == [["q", "r", "p"]]  # equal memory does not matter here: load does


def test_busy_nodes_rank_by_the_models_own_queue_first():
    nodes = [node("a", {SMOL: ModelLoad(0, 2, 5)}, running=2, queued=5),
             node("b", {SMOL: ModelLoad(0, 2, 0), "gemma3:270m": ModelLoad(0, 2, 9)}, running=4, queued=9)]
    # b holds more work, but none of it in front of this model's next request.
    assert rank(SMOL, nodes) == [["b", "a"]]


def test_no_model_means_one_tier_by_load_with_draining_nodes_after():
    nodes = [node("a", {SMOL: ModelLoad(1, 0, 0)}, running=3), node("b", running=1),
             node("c", draining=True), node("d", queued=2, draining=True)]
    assert rank(None, nodes) == [["b", "a"], ["c", "d"]]
    assert rank(None, nodes, exclude=("b",)) == [["a"], ["c", "d"]]


def test_an_unknown_or_unparseable_model_goes_by_load():
    nodes = [node("a", {SMOL: ModelLoad(1, 0, 0)}, (SMOL,), running=2), node("b")]
    assert rank("nope:1", nodes) == [["b", "a"]]
    assert rank("bad name!", nodes) == [["b", "a"]]


def test_stats_round_trip_through_plain_json():
    stats = node("n1", {SMOL: ModelLoad(2, 1, 3)}, (SMOL, "gemma3:270m"), 5 * GiB, 1, 3, draining=True)
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["stored"] == ["gemma3:270m", SMOL] and data["loaded"][SMOL] == {"free_slots": 2, "running": 1,
                                                                                 "queued": 3}
    assert NodeStats.from_dict(data) == stats
    assert NodeStats.from_dict({**data, "loaded": {}, "stored": []}).load == 4


MISSING = object()


@pytest.mark.parametrize(("field", "value"), [
    ("loaded", MISSING), ("loaded", {SMOL: {"free_slots": -1, "running": 0, "queued": 0}}),
    ("loaded", {SMOL: {"free_slots": 1}}), ("loaded", [1]), ("stored", "smollm2:135m"), ("running", "3"),
    ("queued", True), ("free_memory", 1.5), ("node", MISSING),
])
def test_bad_stats_are_a_value_error(field, value):
    data = node("n1", {SMOL: ModelLoad(1, 0, 0)}, (SMOL,)).to_dict()
    if value is MISSING:
        del data[field]
    else:
        data[field] = value
    with pytest.raises(ValueError):
        NodeStats.from_dict(data)


def runner(name: str, state: str, busy: int, total: int) -> RunnerView:
    return RunnerView(name=name, digest="sha256:" + "0" * 64, info=None, state=state, health="ok",  # type: ignore[arg-type]
                      context_length=2048, slots_busy=busy, slots_total=total, queued=0, size=GiB,
                      size_measured=GiB, pid=1, device="cpu", on_gpu=False, threads=2, restarts=0,
                      keep_alive=300, expires_at=0, silent_s=0, exact=False, kv_type="f16")


def totals(running: int, waiting: int) -> ModelTotals:
    return ModelTotals(running=running, waiting=waiting, decode_s=0, busy_s=0, reused_tokens=0, cache_restores=0,
                       evaluated_tokens=0, disk_restores=0)


def test_of_reads_a_snapshot():
    snapshot = Snapshot(
        runners=(runner("SmolLM2:135m", "ready", 3, 4),  # two runners of one model (num_ctx): slots add up
                 runner("smollm2:135m", "loading", 0, 2),
                 runner("gemma3:270m", "unloading", 0, 4),  # going away: not loaded any more
                 runner("me/big:1", "ready", 2, 2)),
        models={"smollm2:135m": totals(3, 0), "gemma3:270m": totals(0, 0), "me/big:1": totals(2, 4),
                "gone:1": totals(0, 1)},  # a model waiting for its load
        tenants={}, budget=10 * GiB, reserved=7 * GiB, pools={"cpu": 10 * GiB})
    stats = NodeStats.of("n1", snapshot, ["SmolLM2:135m", "gemma3:270m", "me/big:1", "gone:1"])
    assert stats == NodeStats("n1", {"smollm2:135m": ModelLoad(3, 3, 0), "me/big:1": ModelLoad(0, 2, 4)},
                              frozenset({"smollm2:135m", "gemma3:270m", "me/big:1", "gone:1"}),
                              free_memory=3 * GiB, running=5, queued=5)
    over = Snapshot(runners=(), models={}, tenants={}, budget=GiB, reserved=2 * GiB, pools={})
    assert NodeStats.of("n2", over, [], draining=True) == NodeStats("n2", {}, frozenset(), 0, 0, 0, True)
