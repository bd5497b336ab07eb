"""cluster/merge.py: fan-out replies merged, on hand-made replies and on a real server's."""

from __future__ import annotations

from conftest import GEMMA, SMOL
from helpers import warm
from prometheus_client.parser import text_string_to_metric_families

from corral.cluster.merge import merge_metrics, merge_openai_models, merge_ps, merge_tags, merge_versions

DIGEST_A, DIGEST_B = "a" * 64, "b" * 64


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


# -- pure ---------------------------------------------------------------------------------------

def test_ps_rows_carry_their_node_and_sort_as_ollamas_longest_left_first():
    n1 = {"models": [{"name": "a:1", "expires_at": "2026-11-27T08:00:00.123456789Z"},
                     {"name": "b:1", "expires_at": "2318-11-26T00:00:00Z"}],  # forever
          "queues": {"a:1": [{"position": 1, "tenant": "t"}]}}
    n2 = {"models": [{"name": "a:1", "expires_at": "2026-11-27T09:30:00+01:00"},  # 08:30 UTC
                     {"name": "c:1", "expires_at": "not a time"}],
          "queues": {"a:1": [{"position": 1, "tenant": "u"}, {"position": 2, "tenant": "v"}]}}
    merged = merge_ps({"n2": n2, "n1": n1})
    assert [(r["name"], r["node"]) for r in merged["models"]] == [("b:1", "n1"), ("a:1", "n2"), ("a:1", "n1"),
                                                                   ("c:1", "n2")]
    assert merged["queues"] == {"a:1": [{"position": 1, "tenant": "t", "node": "n1"},
                                        {"position": 1, "tenant": "u", "node": "n2"},
                                        {"position": 2, "tenant": "v", "node": "n2"}]}
    assert merge_ps({}) == {"models": [], "queues": {}}
    assert merge_ps({"n1": {"error": "x"}, "n2": {"models": None}}) == {"models": [], "queues": {}}
    assert n1["models"][0].get("node") is None  # the replies are not changed


def test_tags_are_a_union_one_row_per_model_and_digest_with_its_nodes():
    def row(name: str, digest: str, modified: str, size: int = 1) -> dict:
        return {"name": name, "model": name, "modified_at": modified, "size": size, "digest": digest,
                "details": {"family": "llama"}}

    n1 = {"models": [row("smollm2:135m", DIGEST_A, "2026-01-01T00:00:00Z"), row("old:1", DIGEST_A, "2025-01-01T00:00:00Z")]}
    n2 = {"models": [row("SmolLM2:135m", DIGEST_A, "2026-02-01T00:00:00Z", 2),  # same model, copied later
                     row("new:1", DIGEST_B, "2026-03-01T00:00:00Z"),
                     row("old:1", DIGEST_B, "2024-01-01T00:00:00Z")]}  # n2 missed old:1's last pull
    merged = merge_tags({"n1": n1, "n2": n2, "n3": {"models": []}})["models"]
    assert [(m["name"], m["digest"], m["nodes"]) for m in merged] == [
        ("new:1", DIGEST_B, ["n2"]), ("SmolLM2:135m", DIGEST_A, ["n1", "n2"]),
        ("old:1", DIGEST_A, ["n1"]), ("old:1", DIGEST_B, ["n2"])]
    assert merged[1]["size"] == 2 and merged[1]["details"] == {"family": "llama"}  # the latest node's row, whole


def test_openai_models_union_by_id_newest_first():
    n1 = {"object": "list", "data": [{"id": "smollm2:135m", "object": "model", "created": 10, "owned_by": "library"},
                                     {"id": "gemma3:270m", "object": "model", "created": 30, "owned_by": "library"}]}
    n2 = {"object": "list", "data": [{"id": "SMOLLM2:135m", "object": "model", "created": 20, "owned_by": "library"}]}
    merged = merge_openai_models({"n1": n1, "n2": n2})
    assert merged == {"object": "list", "data": [
        {"id": "gemma3:270m", "object": "model", "created": 30, "owned_by": "library"},
        {"id": "SMOLLM2:135m", "object": "model", "created": 20, "owned_by": "library"}]}


def test_versions_the_lowest_with_every_nodes():
    replies = {"n1": {"version": "0.33.0", "corral_version": "0.2.0"},
               "n2": {"version": "0.9.10", "corral_version": "0.1.0"},
               "n3": {"version": "0.33.0-rc1", "corral_version": "0.1.0"}}
    merged = merge_versions(replies)
    assert merged["version"] == "0.9.10" and merged["corral_version"] == "0.1.0"  # 9 < 33, as numbers
    assert merged["nodes"] == replies
    assert merge_versions({"a": {"version": "garbage"}, "b": {"version": "0.33.0"}})["version"] == "0.33.0"
    assert merge_versions({}) == {"nodes": {}}


def test_metrics_keep_nodes_apart_and_parse_back():
    text = ('# HELP corral_requests_total Requests done\n# TYPE corral_requests_total counter\n'
            'corral_requests_total{model="m",status="200"} 3.0\n'
            '# HELP up_time Time up\n# TYPE up_time gauge\nup_time{node="inner"} 5 1700000000000\n')
    other = text.replace(" 3.0", " 7.0")
    merged = merge_metrics({"n2": other, "n1": text, "bad": "this is { not prometheus"})
    got = samples(merged)
    assert got[("corral_requests_total", frozenset({"model": "m", "status": "200", "node": "n1"}.items()))] == 3.0
    assert got[("corral_requests_total", frozenset({"model": "m", "status": "200", "node": "n2"}.items()))] == 7.0
    # A node label already there is kept as exported_node, as Prometheus does.
    assert got[("up_time", frozenset({"exported_node": "inner", "node": "n1"}.items()))] == 5
    assert got[("corral_node_up", frozenset({"node": "bad"}.items()))] == 0
    assert got[("corral_node_up", frozenset({"node": "n1"}.items()))] == 1
    assert merged.count("# TYPE corral_requests_total counter") == 1 and merged.count("# HELP up_time") == 1
    assert " 1700000000000\n" in merged  # timestamps kept
    assert families(merged) == {"corral_requests": "counter", "up_time": "gauge", "corral_node_up": "gauge"}


def test_metrics_of_disagreeing_kinds_keep_the_first():
    gauge = "# TYPE x gauge\nx 1\n"
    counter = "# TYPE x_total counter\nx_total 2\n"
    merged = merge_metrics({"a": gauge, "b": counter})
    assert samples(merged)[("x", frozenset({"node": "a"}.items()))] == 1 and "x_total" not in merged
    assert merge_metrics({}).startswith("# HELP corral_node_up")


# -- live: a real server's replies, merged as two nodes -------------------------------------------

def test_real_replies_merge_as_two_nodes(server):
    warm(server.url, SMOL)
    warm(server.url, GEMMA)
    with server.client() as c:
        r = c.post("/api/generate", json={"model": SMOL, "prompt": "Hi", "stream": False,
                                          "options": {"num_predict": 4, "temperature": 0}})
        assert r.status_code == 200, r.text
        first = {path: c.get(path) for path in ("/api/ps", "/api/tags", "/v1/models", "/api/version", "/metrics")}
        r = c.post("/api/generate", json={"model": SMOL, "prompt": "Hello there", "stream": False,
                                          "options": {"num_predict": 6, "temperature": 0}})
        assert r.status_code == 200, r.text
        later = c.get("/metrics").text
    assert all(r.status_code == 200 for r in first.values())
    ps, tags, models, version = (first[p].json() for p in ("/api/ps", "/api/tags", "/v1/models", "/api/version"))

    merged_ps = merge_ps({"n1": ps, "n2": ps})
    assert len(ps["models"]) == 2 and len(merged_ps["models"]) == 4
    assert sorted((m["name"], m["node"]) for m in merged_ps["models"]) == [(GEMMA, "n1"), (GEMMA, "n2"),
                                                                          (SMOL, "n1"), (SMOL, "n2")]
    assert all({k: v for k, v in m.items() if k != "node"} in ps["models"] for m in merged_ps["models"])
    # Sorted as Ollama's ps, by whole seconds (ties keep node order); the same format everywhere,
    # so the text up to the seconds orders as the time does.
    times = [m["expires_at"][:19] for m in merged_ps["models"]]
    assert times == sorted(times, reverse=True)

    merged_tags = merge_tags({"n1": tags, "n2": tags})["models"]
    assert len(merged_tags) == len(tags["models"]) >= 2 and all(m["nodes"] == ["n1", "n2"] for m in merged_tags)
    assert {m["name"] for m in merged_tags} == {m["name"] for m in tags["models"]}
    assert set(merged_tags[0]) == set(tags["models"][0]) | {"nodes"}  # Ollama's fields, and where

    merged_models = merge_openai_models({"n1": models, "n2": models})
    assert sorted(m["id"] for m in merged_models["data"]) == sorted(m["id"] for m in models["data"])
    assert merge_versions({"n1": version, "n2": version})["version"] == version["version"]

    text = merge_metrics({"n1": first["/metrics"].text, "n2": later})
    merged = samples(text)
    for node, original in (("n1", first["/metrics"].text), ("n2", later)):
        for (name, labels), value in samples(original).items():
            assert merged[(name, labels | {("node", node)})] == value, (name, labels, node)
    # Counters per node stay apart: the second node's copy counted more tokens than the first's.
    evaluated = {node: sum(v for (name, labels), v in merged.items() if name == "corral_prompt_evaluated_tokens_total"
                           and ("node", node) in labels) for node in ("n1", "n2")}
    assert evaluated["n2"] > evaluated["n1"] > 0, evaluated
    # HELP and TYPE once per family, the families those of one node plus corral_node_up.
    assert len(set(line for line in text.splitlines() if line.startswith("# TYPE"))) == text.count("# TYPE")
    assert families(text) == families(first["/metrics"].text) | {"corral_node_up": "gauge"}
