"""What corral needs from a GGUF file's metadata."""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from corral.errors import ClientError

# general.file_type → the name Ollama shows as quantization_level (llama_ftype in llama.h)
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
               11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
               17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    architecture: str
    name: str
    file_size: int
    tensor_bytes: int
    parameter_count: int
    context_length: int
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    sliding_window: int
    vocab_size: int
    file_type: str
    chat_template: str | None
    bos_token: str
    eos_token: str
    # The longest token's text in UTF-8 bytes: no token covers more of a prompt than this, so
    # n tokens never span more than n * max_token_bytes bytes (how prompts are cut to fit).
    max_token_bytes: int = 64
    metadata: dict = field(repr=False, default_factory=dict)

    @property
    def parameter_size(self) -> str:
        n = self.parameter_count
        return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> int:
        """K and V for one token across all layers (f16 cache: 2 bytes per value)."""
        return math.ceil(self.block_count * self.head_count_kv * (self.key_length + self.value_length)
                         * bytes_per_element)

    @property
    def supports_flash_attention(self) -> bool:
        """As Ollama's SupportsFlashAttention: not an embedding model, not gemma2/grok, and
        keys as long as values."""
        if f"{self.architecture}.pooling_type" in self.metadata or self.architecture in ("gemma2", "grok"):
            return False
        return self.key_length == self.value_length > 0


_SCALARS = {GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
            GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
            GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
            GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d"}


class GGUFFormatError(ClientError):
    """Not a GGUF file, or a truncated or corrupt one."""


class _Reader:
    """A header-only GGUF parser.

    gguf.GGUFReader builds a numpy view per array element, which takes seconds on a 262k-token
    vocabulary; corral needs the scalar keys, two token strings and the tensor sizes, so it walks
    the header itself, with the gguf package's type tables.
    """

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.at = 0

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise GGUFFormatError("file is truncated")
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.at + n > len(self.data):
            raise GGUFFormatError("file is truncated")
        text = bytes(self.data[self.at:self.at + n]).decode("utf-8", errors="replace")
        self.at += n
        return text

    def value(self, vtype: int, keep_strings: bool = False) -> Any:
        vtype = GGUFValueType(vtype)
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            etype = GGUFValueType(self.unpack("<I"))
            count = self.unpack("<Q")
            if etype == GGUFValueType.STRING:
                items = [self.string() for _ in range(count)] if keep_strings else None
                if not keep_strings:
                    for _ in range(count):
                        n = self.unpack("<Q")
                        self.at += n
                return _Array(count, items)
            if etype == GGUFValueType.ARRAY:
                return _Array(count, [self.value(etype) for _ in range(count)])
            self.at += struct.calcsize(_SCALARS[etype]) * count
            return _Array(count, None)
        return self.unpack(_SCALARS[vtype])


@dataclass(frozen=True)
class _Array:
    count: int
    items: list | None


def _parse(path: Path) -> tuple[dict, int, int]:
    """(key/value metadata, tensor bytes, parameter count) from a GGUF header."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        r = _Reader(memoryview(mm))
        try:
            if r.unpack("<I") != 0x46554747:  # "GGUF"
                raise GGUFFormatError("not a GGUF file")
            r.unpack("<I")  # version
            n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
            meta: dict = {}
            for _ in range(n_kv):
                key = r.string()
                meta[key] = r.value(r.unpack("<I"), keep_strings=key == "tokenizer.ggml.tokens")
            tensor_bytes = params = 0
            for _ in range(n_tensors):
                r.string()
                dims = [r.unpack("<Q") for _ in range(r.unpack("<I"))]
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(r.unpack("<I"))]
                r.unpack("<Q")  # offset
                n = 1
                for d in dims:
                    n *= d
                params += n
                tensor_bytes += n // block * type_size
        except (ValueError, KeyError, struct.error) as exc:
            raise GGUFFormatError(f"invalid GGUF file: {exc}") from None
        finally:
            r.data.release()
    return meta, tensor_bytes, params


def _token(meta: dict, key: str) -> str:
    tokens = meta.get("tokenizer.ggml.tokens")
    token_id = meta.get(key)
    if not isinstance(tokens, _Array) or tokens.items is None or not isinstance(token_id, int):
        return ""
    return tokens.items[token_id] if 0 <= token_id < tokens.count else ""


def _max_token_bytes(tokens: object) -> int:
    if not isinstance(tokens, _Array) or not tokens.items:
        return 64  # no vocabulary to measure: a generous bound
    # Token texts as stored (byte-level BPE's printable stand-ins, SPM's "▁" and <0xNN>) are at
    # least as long in UTF-8 as the text they decode to, so this is an upper bound.
    return max(max(len(t.encode()) for t in tokens.items if isinstance(t, str)), 1)


@lru_cache(maxsize=32)
def read_gguf(path: Path) -> GGUFInfo:
    """Metadata of a GGUF file; GGUFFormatError if it is not a valid one."""
    meta, tensor_bytes, params = _parse(path)
    arch = str(meta.get("general.architecture", "unknown"))

    def num(key: str, default: int) -> int:
        value = meta.get(f"{arch}.{key}", default)
        return int(value) if isinstance(value, (int, float)) else default

    heads = num("attention.head_count", 1)
    embd = num("embedding_length", 0)
    head_dim = embd // heads if heads else 0
    tokens = meta.get("tokenizer.ggml.tokens")
    template = meta.get("tokenizer.chat_template")
    return GGUFInfo(
        path=path,
        architecture=arch,
        name=str(meta.get("general.name", path.stem)),
        file_size=path.stat().st_size,
        tensor_bytes=tensor_bytes,
        parameter_count=params,
        context_length=num("context_length", 2048),
        block_count=num("block_count", 0),
        embedding_length=embd,
        head_count=heads,
        head_count_kv=num("attention.head_count_kv", heads),
        key_length=num("attention.key_length", head_dim),
        value_length=num("attention.value_length", head_dim),
        sliding_window=num("attention.sliding_window", 0),
        vocab_size=tokens.count if isinstance(tokens, _Array) else num("vocab_size", 0),
        file_type=_FILE_TYPES.get(int(meta.get("general.file_type", -1)), "unknown"),
        chat_template=template if isinstance(template, str) else None,
        bos_token=_token(meta, "tokenizer.ggml.bos_token_id"),
        eos_token=_token(meta, "tokenizer.ggml.eos_token_id"),
        max_token_bytes=_max_token_bytes(tokens),
        metadata={k: v for k, v in meta.items() if not isinstance(v, _Array)},
    )


def vocabulary(path: Path) -> tuple[str, tuple[str, ...]]:
    """The tokenizer model and every token's text: what a draft model must share with its target
    (its token ids are what the target verifies)."""
    meta = _parse(path)[0]
    tokens = meta.get("tokenizer.ggml.tokens")
    texts = tuple(tokens.items) if isinstance(tokens, _Array) and tokens.items else ()
    return str(meta.get("tokenizer.ggml.model", "")), texts
