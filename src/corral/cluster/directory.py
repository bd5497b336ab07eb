"""The directory of live nodes and ingresses, kept in Ray's own key-value store (the GCS's
internal KV, which every process of the cluster already talks to).

Each node writes its NodeStats every REPORT_EVERY_S (with its routing stats); the ingress reads
who is alive for the fan-outs (/api/ps, /api/tags, /metrics, pull, delete, ...). Ingresses write
that they are alive every INGRESS_EVERY_S: a node cancels the streams of an ingress that stopped
(cluster/mux.py's lease), as a Ray stream whose caller died does not end on the replica's side.
Not a call to the node: Serve's router no longer reaches a replica that is draining, whose
streams must still run to their end.

Until the twelfth session this was a detached actor: one Ray worker process more on the cluster,
whose timers alone took about 0.009 cores of a machine that llama.cpp fills (docs/PERFORMANCE.md,
the Ray hop). An entry carries the wall-clock time it was written, so the machines' clocks must
agree to well under STALE_S (as NTP keeps them); whoever reads deletes the entries older than
FORGET_S (a node or an ingress that died without a word).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ray.exceptions import RaySystemError
from ray.experimental.internal_kv import internal_kv_get_gcs_client

NAMESPACE = b"corral"
NODE_PREFIX = b"node/"
INGRESS_PREFIX = b"ingress/"
STALE_S = 5.0  # a node silent this long (dead, or its replica gone) is no longer listed
REPORT_EVERY_S = 2.0  # a node reports this often (well under STALE_S): the ingress reads who is alive
INGRESS_EVERY_S = 3.0  # an ingress says it is alive this often (well under mux.LEASE_S)
FORGET_S = 60.0  # an entry this old is deleted by the next reader
TIMEOUT_S = 5.0  # one call to the GCS


def _gcs() -> Any:
    """This process's GCS client (ray.init sets it in a driver, Ray in each of its workers)."""
    client = internal_kv_get_gcs_client()
    if client is None:
        raise RaySystemError("not connected to a Ray cluster")
    return client


async def _put(key: bytes, entry: dict[str, Any]) -> None:
    value = json.dumps({**entry, "at": time.time()}).encode()
    await _gcs().async_internal_kv_put(key, value, True, namespace=NAMESPACE, timeout=TIMEOUT_S)


async def _delete(key: bytes) -> None:
    await _gcs().async_internal_kv_del(key, False, namespace=NAMESPACE, timeout=TIMEOUT_S)


async def _fresh(prefix: bytes, within: float) -> list[tuple[bytes, dict[str, Any]]]:
    """The entries under prefix written in the last `within` seconds, by key (the key without the
    prefix); entries older than FORGET_S are deleted on the way."""
    gcs = _gcs()
    keys = await gcs.async_internal_kv_keys(prefix, namespace=NAMESPACE, timeout=TIMEOUT_S)
    if not keys:
        return []
    values = await gcs.async_internal_kv_multi_get(keys, namespace=NAMESPACE, timeout=TIMEOUT_S)
    now, fresh = time.time(), []
    for key, value in sorted(values.items()):
        entry = json.loads(value)
        age = now - float(entry["at"])
        if age < within:
            fresh.append((key[len(prefix):], entry))
        elif age > FORGET_S:
            await _delete(key)
    return fresh


async def report(stats: dict[str, Any]) -> None:
    await _put(NODE_PREFIX + str(stats["node"]).encode(), {"stats": stats})


async def forget(node: str) -> None:
    await _delete(NODE_PREFIX + node.encode())


async def ingress_alive(ingress: str) -> None:
    await _put(INGRESS_PREFIX + ingress.encode(), {})


async def ingresses(within: float) -> set[str]:
    """The ingresses that said they were alive in the last `within` seconds."""
    return {key.decode() for key, _ in await _fresh(INGRESS_PREFIX, within)}


async def nodes() -> list[dict[str, Any]]:
    """The live nodes' latest stats, by name."""
    return [entry["stats"] for _, entry in await _fresh(NODE_PREFIX, STALE_S)]
