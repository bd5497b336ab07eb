"""TEMPORARY stand-in for branch `parts`' merge.py (dropped at the merge)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families


def merge_ps(replies: Mapping[str, dict]) -> dict:
    rows = [{**row, "node": node} for node, reply in replies.items() for row in reply.get("models", [])]
    return {"models": sorted(rows, key=lambda r: (r.get("name", ""), r["node"]))}


def merge_tags(replies: Mapping[str, dict]) -> dict:
    seen: dict[tuple[str, str], dict] = {}
    for node, reply in replies.items():
        for row in reply.get("models", []):
            key = (row.get("name", ""), row.get("digest", ""))
            seen.setdefault(key, {**row, "nodes": []})["nodes"].append(node)
    return {"models": sorted(seen.values(), key=lambda r: r.get("modified_at", ""), reverse=True)}


def merge_openai_models(replies: Mapping[str, dict]) -> dict:
    seen: dict[str, dict] = {}
    for reply in replies.values():
        for row in reply.get("data", []):
            seen.setdefault(row["id"], row)
    return {"object": "list", "data": list(seen.values())}


def merge_versions(replies: Mapping[str, dict]) -> dict:
    return next(iter(replies.values()), {"version": "0.0.0"})


def _labels(labels: Mapping[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def merge_metrics(texts: Mapping[str, str]) -> str:
    families: dict[str, tuple[str, str, list[str]]] = {}
    for node, text in texts.items():
        for fam in text_string_to_metric_families(text):
            _, _, lines = families.setdefault(fam.name, (fam.type, fam.documentation, []))
            for s in fam.samples:
                lines.append(f"{s.name}{_labels({**s.labels, 'node': node})} {s.value!r}")
    out = []
    for name, (kind, doc, lines) in families.items():
        out += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"
