"""The keys file alone (api/keys.py): both formats, validation, lookup, reload on change."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from corral.api.keys import Keys, KeysFileError, parse_keys
from corral.scheduler.tenants import ANONYMOUS, Lane, Tenant

TOML = """
[keys.sk-alice-1]
tenant = "alice"
weight = 3
max_running = 2
max_queued = 5
models = ["SmolLM2:135m", "gemma3"]
priority = "batch"

[keys."sk alice two"]
tenant = "alice"
weight = 3
max_running = 2
max_queued = 5
models = ["smollm2:135m", "gemma3:latest"]
priority = "batch"

[keys.sk-bob]
tenant = "bob"
"""


def test_toml_and_json_give_the_same_tenants():
    ring = parse_keys(TOML)
    alice = Tenant("alice", weight=3.0, max_running=2, max_queued=5,
                   models=frozenset({"smollm2:135m", "gemma3:latest"}), priority=Lane.BATCH)
    assert ring.lookup([b"sk-alice-1"]) == alice
    assert ring.lookup([b"sk alice two"]) == alice
    assert ring.lookup([b"sk-bob"]) == Tenant("bob")
    as_json = json.dumps({"keys": {"sk-bob": {"tenant": "bob", "weight": 1}}})
    assert parse_keys(as_json).lookup([b"sk-bob"]) == Tenant("bob")


def test_lookup_unknown_wrong_or_several_offered():
    ring = parse_keys(TOML)
    assert ring.lookup([]) is None
    assert ring.lookup([b"sk-bob-"]) is None
    assert ring.lookup([b"nope", b"sk-bob"]) == Tenant("bob")  # Bearer wrong, x-api-key right


@pytest.mark.parametrize(("text", "message"), [
    ("[keys.k]\nweight = 1", "tenant must be"),
    ('[keys.k]\ntenant = "a"\nweight = 0', "weight must be"),
    ('[keys.k]\ntenant = "a"\nmax_queued = -1', "max_queued"),
    ('[keys.k]\ntenant = "a"\npriority = "urgent"', "priority must be"),
    ('[keys.k]\ntenant = "a"\nwieght = 2', "unknown field"),
    ('[keys.k]\ntenant = "a"\nmodels = "m"', "models must be"),
    ('[keys.k1]\ntenant = "a"\n[keys.k2]\ntenant = "a"\nweight = 2', "other settings"),
    ('tenant = "a"', 'one table "keys"'),
    ('{"keys": ', "not valid"),
])
def test_bad_files_are_refused_without_naming_the_key(text, message):
    with pytest.raises(KeysFileError, match=message) as info:
        parse_keys(text)
    assert "k1" not in str(info.value) and "keys.k" not in str(info.value)


def test_single_key_is_the_default_tenant_and_works_beside_the_file(tmp_path: Path):
    path = tmp_path / "keys.toml"
    path.write_text(TOML)
    keys = Keys(path, "s3cret")
    assert keys.required
    assert keys.lookup([b"s3cret"]) == ANONYMOUS
    assert keys.lookup([b"sk-bob"]) == Tenant("bob")
    assert not Keys(None, None).required


def test_reload_on_change_at_most_once_a_second_and_bad_file_keeps_old_keys(tmp_path: Path):
    now = [100.0]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": {"old": {"tenant": "a"}}}))
    keys = Keys(path, None, clock=lambda: now[0])
    assert keys.lookup([b"old"]) == Tenant("a")
    path.write_text(json.dumps({"keys": {"new": {"tenant": "b"}}}))
    os.utime(path, ns=(1, 10**18))  # a different mtime, whatever the file system's resolution
    assert keys.lookup([b"new"]) is None  # looked less than a second ago
    now[0] += 1.0
    assert keys.lookup([b"new"]) == Tenant("b") and keys.lookup([b"old"]) is None
    path.write_text("{broken")
    os.utime(path, ns=(1, 2 * 10**18))
    now[0] += 1.0
    assert keys.lookup([b"new"]) == Tenant("b")  # kept
    path.write_text(json.dumps({"keys": {"third": {"tenant": "c"}}}))
    keys.reload()  # SIGHUP: at once
    assert keys.lookup([b"third"]) == Tenant("c")


def test_a_bad_file_at_start_is_an_error(tmp_path: Path):
    path = tmp_path / "keys.toml"
    path.write_text("[keys.k]\n")
    with pytest.raises(KeysFileError, match="tenant must be"):
        Keys(path, None)
    with pytest.raises(KeysFileError, match="keys file"):
        Keys(tmp_path / "missing.toml", None)
