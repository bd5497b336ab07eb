"""The Ray side's pure parts: the affinity router's choice (cluster/router.py `choose`) over fake replicas: rank's tiers
mapped to replicas, exclusions, a target node, replicas with no stats yet, and never an empty
choice while replicas exist (Serve would retry an empty one for ever); the RayService builder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("ray")
# Ray Serve 2.60 declares its config with pydantic v1-style fields: its deprecation warnings are not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from corral.cluster.ranking import ModelLoad, NodeStats  # noqa: E402
from corral.cluster.router import choose  # noqa: E402


@dataclass
class FakeReplica:
    routing_stats: dict[str, Any] = field(default_factory=dict)


def replica(node: str, loaded: dict[str, ModelLoad] | None = None, stored: tuple[str, ...] = (),
            free: int = 0, running: int = 0, queued: int = 0, draining: bool = False) -> FakeReplica:
    return FakeReplica(NodeStats(node, loaded or {}, frozenset(stored), free, running, queued, draining).to_dict())


def flat(tiers: list[list[Any]]) -> list[Any]:
    return [item for tier in tiers for item in tier]


def names(tiers: list[list[FakeReplica]]) -> list[list[str]]:
    return [[r.routing_stats.get("node", "?") for r in tier] for tier in tiers]


WARM = replica("warm", {"smollm2:135m": ModelLoad(1, 0, 0)}, ("smollm2:135m",), free=1 << 30)
FULL = replica("full", {"smollm2:135m": ModelLoad(0, 1, 1)}, ("smollm2:135m",), free=1 << 30, running=1, queued=1)
STORED_ROOMY = replica("roomy", stored=("smollm2:135m",), free=8 << 30)
STORED_TIGHT = replica("tight", stored=("smollm2:135m",), free=1 << 30)
EMPTY = replica("empty", free=16 << 30)
ALL = [EMPTY, STORED_TIGHT, FULL, STORED_ROOMY, WARM]


def test_tiers_follow_where_the_model_is() -> None:
    tiers = names(choose(ALL, "smollm2:135m"))
    assert tiers[:2] == [["warm"], ["full"]]  # loaded with a free slot, then loaded but busy
    assert flat(tiers) == ["warm", "full", "roomy", "tight", "empty"]  # stored: most free memory first


def test_names_match_as_ollama_matches_them() -> None:
    assert names(choose(ALL, "SmolLM2:135m"))[0] == ["warm"]


def test_excluded_nodes_are_never_chosen_while_others_remain() -> None:
    tiers = names(choose(ALL, "smollm2:135m", exclude=("warm", "full")))
    assert "warm" not in flat(tiers) and "full" not in flat(tiers)
    assert tiers[0][0] == "roomy"


def test_every_node_excluded_still_goes_somewhere() -> None:
    tiers = choose([WARM, FULL], "smollm2:135m", exclude=("warm", "full"))
    assert {r.routing_stats["node"] for r in flat(tiers)} == {"warm", "full"}


def test_a_target_routes_to_exactly_that_node() -> None:
    assert names(choose(ALL, "smollm2:135m", target="empty")) == [["empty"]]
    assert names(choose(ALL, None, target="tight")) == [["tight"]]


def test_a_target_that_is_gone_goes_anywhere_and_the_node_refuses() -> None:
    assert len(choose(ALL, None, target="gone")[0]) == len(ALL)


def test_replicas_without_stats_come_last() -> None:
    fresh = FakeReplica()
    tiers = choose([fresh, WARM], "smollm2:135m")
    assert tiers[0] == [WARM] and tiers[-1] == [fresh]
    assert choose([fresh], "smollm2:135m") == [[fresh]]


def test_no_model_is_one_tier_least_loaded_first() -> None:
    tiers = names(choose([FULL, WARM], None))
    assert tiers == [["warm", "full"]]


def test_no_replicas_no_choice() -> None:
    assert choose([], "smollm2:135m") == []


def test_the_rayservice_application_builds() -> None:
    """corral.cluster.app:build (KubeRay's import_path) binds the ingress to N node replicas."""
    from ray.serve import Application

    from corral.cluster.app import build

    application = build({"nodes": "3"})
    assert isinstance(application, Application)
    bound = application._bound_deployment
    assert bound.name == "corral-ingress"
    nodes = bound.init_args[0]
    assert nodes._bound_deployment.name == "corral-node" and nodes._bound_deployment.num_replicas == 3


def test_autoscaling_is_parsed_and_set_on_the_node_deployment_only_when_asked() -> None:
    """CORRAL_CLUSTER_AUTOSCALE=MIN-MAX[:TARGET[:DELAY]] → Serve's autoscaling_config; without it the
    deployment keeps its fixed count; a malformed value is refused when the settings are read."""
    from corral.cluster.node import deployment
    from corral.config import Autoscale, Settings

    scale = Settings.from_env({"CORRAL_CLUSTER_AUTOSCALE": "1-3:2:5s"}).cluster_autoscale
    assert scale == Autoscale(1, 3, 2.0, 5.0)
    config = deployment(1, scale=scale)._deployment_config.autoscaling_config
    assert config is not None
    assert (config.min_replicas, config.max_replicas, config.target_ongoing_requests) == (1, 3, 2.0)
    assert config.downscale_delay_s == 5.0 and config.look_back_period_s == 2.5
    fixed = deployment(2)
    assert fixed.num_replicas == 2 and fixed._deployment_config.autoscaling_config is None
    assert Settings.from_env({}).cluster_autoscale is None
    for bad in ("two", "3-1", "0-0", "1-2:0", "1-2:1:soon"):
        with pytest.raises(ValueError, match="CORRAL_CLUSTER_AUTOSCALE"):
            Settings.from_env({"CORRAL_CLUSTER_AUTOSCALE": bad})


def test_a_model_just_sent_somewhere_sticks_there_until_the_stats_show_it_loaded() -> None:
    # Stale stats: no node shows the model loaded yet; the node it was just sent to goes first.
    cold = [STORED_ROOMY, STORED_TIGHT]
    assert names(choose(cold, "smollm2:135m", recent="tight"))[0] == ["tight"]
    assert flat(names(choose(cold, "smollm2:135m", recent="tight"))) == ["tight", "roomy"]
    # Not once a node reports it loaded, not when excluded, not when gone.
    assert names(choose([WARM, STORED_TIGHT], "smollm2:135m", recent="tight"))[0] == ["warm"]
    assert flat(names(choose(cold, "smollm2:135m", exclude=("tight",), recent="tight"))) == ["roomy"]
    assert flat(names(choose(cold, "smollm2:135m", recent="gone"))) == ["roomy", "tight"]


def test_within_a_tier_the_node_with_the_fewest_of_this_ingresss_streams_goes_first() -> None:
    """A node's replies share one pump call, so Serve's count of calls in flight cannot break ties:
    the ingress's own live count of streams per node does, inside each tier (never across)."""
    warm2 = replica("warm2", loaded={"smollm2:135m": ModelLoad(2, 0, 0)})
    tiers = names(choose([WARM, warm2, FULL, STORED_ROOMY], "smollm2:135m", streams={"warm": 3, "warm2": 1, "full": 0}))
    assert tiers == [["warm2"], ["warm"], ["full"], ["roomy"]]
    equal = names(choose([WARM, warm2], "smollm2:135m", streams={"warm": 2, "warm2": 2}))
    assert equal == [["warm", "warm2"]]  # equals stay one tier: Serve picks between them
    assert names(choose([WARM, warm2], "smollm2:135m", streams={})) == names(choose([WARM, warm2], "smollm2:135m"))
