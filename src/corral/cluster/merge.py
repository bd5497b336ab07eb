"""The fan-out replies of every node made into one, in the shapes a single corral answers:
/api/ps, /api/tags, /v1/models, /metrics, /api/version. Inputs are the nodes' decoded JSON
replies (or metric texts) keyed by node name; nodes are read in name order, so the result does
not depend on which node answered first."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from corral.cluster.ranking import model_key

log = logging.getLogger("corral.cluster")

NODE_LABEL = "node"


def merge_ps(replies: Mapping[str, dict]) -> dict:
    """Every node's loaded models, each row with its `node`, sorted as Ollama's ps (the longest
    time left first; ties keep node order). corral's `queues` (model → waiting requests) become
    one list per model, each entry with its `node`."""
    rows = [{**row, NODE_LABEL: node} for node, reply in _in_order(replies) for row in _rows(reply, "models")]
    rows.sort(key=lambda row: _unix(row.get("expires_at")), reverse=True)
    queues: dict[str, list[dict]] = {}
    for node, reply in _in_order(replies):
        for model, entries in (reply.get("queues") or {}).items():
            queues.setdefault(model, []).extend({**e, NODE_LABEL: node} for e in entries if isinstance(e, dict))
    return {"models": rows, "queues": queues}


def merge_tags(replies: Mapping[str, dict]) -> dict:
    """The union of the nodes' models, sorted as Ollama's list (most recently modified first).
    A model is one row however many nodes hold it (same name, ignoring case, and same digest),
    with Ollama's fields from the node where it changed last and corral's `nodes`: where it is.
    The same name with different digests (a node that missed a pull) is one row per digest."""
    merged: dict[tuple[str, str], dict] = {}
    for node, reply in _in_order(replies):
        for row in _rows(reply, "models"):
            key = (model_key(str(row.get("name") or row.get("model") or "")), str(row.get("digest", "")))
            seen = merged.get(key)
            if seen is None:
                merged[key] = {**row, "nodes": [node]}
                continue
            if _unix(row.get("modified_at")) > _unix(seen.get("modified_at")):
                merged[key] = {**row, "nodes": seen["nodes"]}
            merged[key]["nodes"].append(node)
    models = sorted(merged.values(), key=lambda row: _unix(row.get("modified_at")), reverse=True)
    return {"models": models}


def merge_openai_models(replies: Mapping[str, dict]) -> dict:
    """/v1/models: the union by id (as names match), the latest `created`, sorted as /api/tags
    (which Ollama's list is made from). OpenAI's model object has no place for nodes."""
    merged: dict[str, dict] = {}
    for _, reply in _in_order(replies):
        for row in _rows(reply, "data"):
            key = model_key(str(row.get("id", "")))
            if key not in merged or _number(row.get("created")) > _number(merged[key].get("created")):
                merged[key] = row
    return {"object": "list", "data": sorted(merged.values(), key=lambda r: _number(r.get("created")), reverse=True)}


def merge_versions(replies: Mapping[str, dict]) -> dict:
    """The lowest version any node reports (a client gates features on it, and a mixed cluster
    during an upgrade has only what every node has; an unreadable one only when all are), with
    corral's `nodes`: each node's reply."""
    if not replies:
        return {"nodes": {}}
    ordered = dict(_in_order(replies))
    lowest = min(ordered.values(), key=lambda r: (not _release(r.get("version")), _release(r.get("version")),
                                                  _release(r.get("corral_version"))))
    return {**lowest, "nodes": ordered}


def merge_metrics(texts: Mapping[str, str]) -> str:
    """The nodes' Prometheus texts as one: every sample gains node="<name>" (a node label it
    had already is kept as exported_node, as Prometheus does), each family's HELP/TYPE once,
    and corral_node_up says which nodes' texts were read (0: not Prometheus text, left out)."""
    families: dict[str, Metric] = {}
    up = GaugeMetricFamily("corral_node_up", "1 when the node's metrics are in this reply", labels=[NODE_LABEL])
    for node, text in _in_order(texts):
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as exc:
            log.warning("metrics of node %s are not Prometheus text: %s", node, exc)
            up.add_metric([node], 0)
            continue
        up.add_metric([node], 1)
        for family in parsed:
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                             family.unit))
            if merged.type != family.type:  # nodes of two versions disagree: the first node's kind stays
                log.warning("metric %s is a %s on node %s, a %s before", family.name, family.type, node, merged.type)
                continue
            merged.samples.extend(Sample(s.name, _labelled(s.labels, node), s.value, s.timestamp, s.exemplar)
                                  for s in family.samples)
    families.setdefault(up.name, up)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry).decode("utf-8")


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _labelled(labels: Mapping[str, str], node: str) -> dict[str, str]:
    out = dict(labels)
    if NODE_LABEL in out:
        out["exported_" + NODE_LABEL] = out.pop(NODE_LABEL)
    out[NODE_LABEL] = node
    return out


def _in_order(replies: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    return ((node, replies[node]) for node in sorted(replies))


def _rows(reply: Any, key: str) -> list[dict]:
    rows = reply.get(key) if isinstance(reply, dict) else None
    return [row for row in rows or () if isinstance(row, dict)]


def _unix(stamp: Any) -> int:
    """An RFC 3339 time in whole seconds, as Ollama's sorts compare them (.Unix()); 0 if unreadable."""
    if not isinstance(stamp, str):
        return 0
    text = re.sub(r"(\.\d+)", lambda m: m.group(1)[:7], stamp.strip())  # Go writes nanoseconds, Python reads micro
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _release(version: Any) -> tuple[int, ...]:
    """"0.33.0" → (0, 33, 0); the leading digits of each part ("1-rc2" → 1); unreadable → ()."""
    if not isinstance(version, str):
        return ()
    parts = []
    for part in version.lstrip("v").split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)
