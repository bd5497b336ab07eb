"""Schemathesis against corral's own OpenAPI schema: no 5xx (503 when overloaded and 507 for a model
that can never fit excepted), no hang, and the server alive afterwards.

The fuzzed server has an empty model store, so generated requests exercise validation, routing
and error handling (where crashes hide) instead of spending minutes generating text. The cases
are drawn with hypothesis from schemathesis' strategies, one operation at a time.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings


@pytest.fixture(scope="module")
def fuzz_server(start_server, tmp_path_factory):
    return start_server(OLLAMA_MODELS=str(tmp_path_factory.mktemp("empty-store")))


def test_no_server_errors(fuzz_server):
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    failures: list[str] = []
    statuses: list[int] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            response = case.call(base_url=fuzz_server.url, timeout=30)
            statuses.append(response.status_code)
            # 503/507 are the queue's and memory's answers; 502 is a pull or push whose registry
            # cannot be reached (test servers point the public registries at a closed port).
            upstream = response.status_code == 502 and case.formatted_path in ("/api/pull", "/api/push")
            if response.status_code >= 500 and response.status_code not in (503, 507) and not upstream:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{response.text[:200]}")

        check()
    assert not failures, "\n".join(failures[:10])
    assert len(statuses) >= 10 * len(operations) and {400, 404} <= set(statuses)
    assert httpx.get(fuzz_server.url + "/", timeout=5).status_code == 200
