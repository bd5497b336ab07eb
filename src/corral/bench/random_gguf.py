"""A random-weight "llama" GGUF with a real model's tokenizer: any shape, for load, memory,
throughput and draft-model tests. Its text is nonsense (never use it for answer checks); its
vocabulary is the source model's, token for token, so it can stand as that model's draft.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def write_random_llama(source: Path, target: Path, n_layer: int = 2, n_embd: int = 64, n_head: int = 4,
                       n_ff: int = 128, n_ctx: int = 8192, seed: int = 0, embd_scale: float = 0.02) -> None:
    """Write `target`: the source GGUF's tokenizer metadata and random tensors of this shape.
    The token embedding is also the output head: a large `embd_scale` (1.0) makes the model sure
    of its (random) next token, as a draft model must be for its drafts to be proposed at all."""
    reader = GGUFReader(source)
    writer = GGUFWriter(target, "llama")
    writer.add_name("random llama")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(1)  # F16
    n_vocab = 0
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        vtype = GGUFValueType(field.types[0])
        sub = GGUFValueType(field.types[1]) if vtype == GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == "tokenizer.ggml.tokens":
            n_vocab = len(value)
        writer.add_key_value(field.name, value, vtype, sub)
    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int, norm: bool = False, scale: float = 0.02) -> None:
        data = np.ones(shape, np.float32) if norm else (rng.standard_normal(shape) * scale).astype(np.float16)
        writer.add_tensor(name, data)

    tensor("token_embd.weight", n_vocab, n_embd, scale=embd_scale)
    tensor("output_norm.weight", n_embd, norm=True)
    for i in range(n_layer):
        tensor(f"blk.{i}.attn_norm.weight", n_embd, norm=True)
        for part in ("q", "k", "v", "output"):
            tensor(f"blk.{i}.attn_{part}.weight", n_embd, n_embd)
        tensor(f"blk.{i}.ffn_norm.weight", n_embd, norm=True)
        tensor(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
