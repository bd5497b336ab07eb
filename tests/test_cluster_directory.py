"""cluster/directory.py: who is alive, by the entries' age (pure: a dict stands in for the GCS's
key-value store; tests/test_cluster.py and test_cluster_hop.py use the real one on a live cluster)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from corral.cluster import directory


class MemoryKV:
    """The four calls of Ray's GcsClient the directory makes, on a dict."""

    def __init__(self) -> None:
        self.data: dict[tuple[bytes, bytes], bytes] = {}

    async def async_internal_kv_put(self, key: bytes, value: bytes, overwrite: bool, namespace: bytes,
                                    timeout: float) -> int:
        self.data[namespace, key] = value
        return 1

    async def async_internal_kv_del(self, key: bytes, by_prefix: bool, namespace: bytes, timeout: float) -> int:
        return int(self.data.pop((namespace, key), None) is not None)

    async def async_internal_kv_keys(self, prefix: bytes, namespace: bytes, timeout: float) -> list[bytes]:
        return [key for ns, key in self.data if ns == namespace and key.startswith(prefix)]

    async def async_internal_kv_multi_get(self, keys: list[bytes], namespace: bytes,
                                          timeout: float) -> dict[bytes, bytes]:
        return {key: self.data[namespace, key] for key in keys if (namespace, key) in self.data}

    def age(self, key: bytes, seconds: float) -> None:
        """Make an entry look written `seconds` ago."""
        entry: dict[str, Any] = json.loads(self.data[directory.NAMESPACE, key])
        entry["at"] -= seconds
        self.data[directory.NAMESPACE, key] = json.dumps(entry).encode()


@pytest.fixture
def kv(monkeypatch: pytest.MonkeyPatch) -> MemoryKV:
    store = MemoryKV()
    monkeypatch.setattr(directory, "_gcs", lambda: store)
    return store


def test_nodes_are_listed_by_name_until_they_go_stale_and_forgotten_ones_at_once(kv: MemoryKV) -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        for name in ("b", "a", "c"):
            await directory.report({"node": name, "running": 1})
        listed = [stats["node"] for stats in await directory.nodes()]
        kv.age(b"node/c", directory.STALE_S + 0.5)
        await directory.forget("b")
        after = [stats["node"] for stats in await directory.nodes()]
        await directory.report({"node": "c", "running": 0})  # reports again: alive again
        return listed, after, [stats["node"] for stats in await directory.nodes()]

    listed, after, again = asyncio.run(scenario())
    assert listed == ["a", "b", "c"]
    assert after == ["a"]
    assert again == ["a", "c"]


def test_ingresses_alive_within_the_lease_and_old_entries_deleted(kv: MemoryKV) -> None:
    async def scenario() -> tuple[set[str], set[str]]:
        for ingress in ("i1", "i2", "i3"):
            await directory.ingress_alive(ingress)
        kv.age(b"ingress/i2", 11)  # past a 10 s lease, not yet forgotten
        kv.age(b"ingress/i3", directory.FORGET_S + 1)
        return await directory.ingresses(10.0), await directory.ingresses(30.0)

    within_lease, within_30 = asyncio.run(scenario())
    assert within_lease == {"i1"}
    assert within_30 == {"i1", "i2"}
    keys = {key for _, key in kv.data}
    assert b"ingress/i3" not in keys and b"ingress/i2" in keys  # only the forgotten one is deleted


def test_an_entrys_time_is_the_writers_wall_clock(kv: MemoryKV) -> None:
    asyncio.run(directory.report({"node": "a"}))
    entry = json.loads(kv.data[directory.NAMESPACE, b"node/a"])
    assert abs(entry["at"] - time.time()) < 5 and entry["stats"] == {"node": "a"}
