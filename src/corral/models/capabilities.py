"""What a model can do, as Ollama computes it (server/images.go: Capabilities).

From the GGUF: `embedding` when it declares a pooling type, else `completion`; `vision` with a
vision tower. From the chat template in use: `tools`, `thinking` (and `insert` for a Go template
that reads `.Suffix`), found by the same text checks Ollama makes.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterable

from corral.models.gguf_info import GGUFInfo


class Capability(str, Enum):
    COMPLETION = "completion"
    TOOLS = "tools"
    INSERT = "insert"
    VISION = "vision"
    EMBEDDING = "embedding"
    THINKING = "thinking"


def gguf_capabilities(info: GGUFInfo) -> list[Capability]:
    arch = info.architecture
    caps = [Capability.EMBEDDING if f"{arch}.pooling_type" in info.metadata else Capability.COMPLETION]
    if f"{arch}.vision.block_count" in info.metadata:
        caps.append(Capability.VISION)
    return caps


def chat_template_capabilities(template: str | None) -> list[Capability]:
    """Capabilities a Jinja chat template (a GGUF's tokenizer.chat_template) shows."""
    if not template:
        return []
    caps = []
    if "tools" in template or "tool_call" in template:
        caps.append(Capability.TOOLS)
    if _jinja_thinks(template):
        caps.append(Capability.THINKING)
    return caps


def _jinja_thinks(template: str) -> bool:
    if "<think>" in template and "</think>" in template:
        return True
    # Qwen/DeepSeek templates that strip earlier reasoning at </think>.
    splits = "content.split('</think>')" in template or 'content.split("</think>")' in template
    return splits and "reasoning_content" not in template and "<SPECIAL_12>" not in template


def go_template_capabilities(variables: Iterable[str], template: str) -> list[Capability]:
    """Capabilities a Go template shows: `variables` are the lowercased names of the fields it
    reads (Ollama's Template.Vars)."""
    names = set(variables)
    caps = []
    if "tools" in names:
        caps.append(Capability.TOOLS)
    if "suffix" in names:
        caps.append(Capability.INSERT)
    if "thinking" in names and "<think>" in template and "</think>" in template:
        caps.append(Capability.THINKING)
    return caps


def merge(*groups: Iterable[Capability]) -> list[Capability]:
    """In order, each once."""
    seen: list[Capability] = []
    for group in groups:
        seen.extend(c for c in group if c not in seen)
    return seen


def model_capabilities(info: GGUFInfo, template: str | None) -> list[Capability]:
    """A stored model's capabilities: its GGUF's and its chat template's."""
    return merge(gguf_capabilities(info), chat_template_capabilities(template))
