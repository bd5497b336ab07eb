"""Embedding vectors as Ollama's EmbedHandler returns them: L2-normalized, then optionally cut to
`dimensions` and normalized again (Matryoshka-style)."""

from __future__ import annotations

import math

from corral.errors import ClientError


def normalize(vector: list[float]) -> list[float]:
    """The vector at unit length, as Ollama's normalize: a zero vector stays zero (the norm is
    floored at 1e-12), and NaN or Inf is an error (a 400 in Ollama, in its words)."""
    if not all(math.isfinite(x) for x in vector):
        raise ClientError("embedding contains NaN or Inf values")
    norm = max(math.sqrt(math.fsum(x * x for x in vector)), 1e-12)
    return [x / norm for x in vector]


def shaped(vector: list[float], dimensions: int | None) -> list[float]:
    """/api/embed's vector: normalized, then its first `dimensions` components normalized again.
    As Ollama, `dimensions` applies only when 0 < dimensions < the vector's size; any other value
    (0, negative, or more than the model has) returns the whole vector."""
    vector = normalize(vector)
    if dimensions is not None and 0 < dimensions < len(vector):
        vector = normalize(vector[:dimensions])
    return vector
