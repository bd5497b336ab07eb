"""How a model's embeddings are made and returned, read from its GGUF metadata as Ollama reads it."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any


class Pooling(IntEnum):
    """llama.cpp's llama_pooling_type, the values a GGUF's `<arch>.pooling_type` holds."""

    NONE = 0
    MEAN = 1
    CLS = 2
    LAST = 3
    RANK = 4


def embedding_pooling(value: int | None) -> Pooling:
    """The pooling an embedding uses: the GGUF's `<arch>.pooling_type`. A model without one pools
    to NONE in llama.cpp (a vector per token, no sequence vector); Ollama's llama engine then
    returned the hidden state of the input's last token (llama_get_embeddings_ith on the one
    output row), which is llama.cpp's LAST pooling."""
    if value is None or value == Pooling.NONE:
        return Pooling.LAST
    try:
        return Pooling(value)
    except ValueError:
        return Pooling.LAST


def legacy_embeddings_raw(metadata: Mapping[str, Any]) -> bool:
    """Whether /api/embeddings returns the vector un-normalized: Ollama keeps the old runners' raw
    output only for the BERT-family models that were raw then (legacyEmbeddingsWereRaw); every
    other model's legacy vector is L2-normalized, as /api/embed's."""
    arch = str(metadata.get("general.architecture", ""))
    if f"{arch}.pooling_type" not in metadata:
        return False

    def flag(key: str, default: bool) -> bool:
        value = metadata.get(f"{arch}.{key}", default)
        return value if isinstance(value, bool) else default

    if arch == "bert":
        if str(metadata.get("tokenizer.ggml.model", "bert")) != "bert":
            return True
        return not flag("normalize_embeddings", True)
    if arch in ("nomic-bert", "nomic-bert-moe"):
        return not flag("normalize_embeddings", False)
    return False
