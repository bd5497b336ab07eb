"""What a model can do, as Ollama computes it (server/images.go: Capabilities).

From the GGUF: `embedding` when it declares a pooling type, else `completion`; `vision` with a
vision tower. From the chat template in use: `tools`, `thinking` (and `insert` for a Go template
that reads `.Suffix`), found by the same text checks Ollama makes.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from corral.errors import ClientError
from corral.models.gguf_info import GGUFInfo
from corral.models.gotemplate.gofmt import quote
from corral.models.template import go_template_variables as template_variables
from corral.models.template import is_go_template
from corral.models.thinking import Think, thinks


class Capability(StrEnum):
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


def model_capabilities(info: GGUFInfo, manifest_template: str | None) -> list[Capability]:
    """A stored model's capabilities: its GGUF's, and those of the template it is run with (the
    manifest's Go template, unless the GGUF's Jinja one is preferred; a Jinja TEMPLATE given
    to corral's create; else the GGUF's)."""
    template = manifest_template or info.chat_template
    if manifest_template and is_go_template(manifest_template):
        if not prefer_chat_template(manifest_template, info.chat_template):
            variables = template_variables(manifest_template)
            return merge(gguf_capabilities(info), go_template_capabilities(variables, manifest_template))
        template = info.chat_template
    return merge(gguf_capabilities(info), chat_template_capabilities(template))


def _jinja_tool_round_trip(template: str) -> bool:
    if "tools" not in template and "tool_call" not in template:
        return False
    calls = "tool_calls" in template or "assistant_tool_call" in template
    results = ("tool_response", "tool_results", "role'] == 'tool'", 'role\'] == "tool"', "role\"] == 'tool'",
               'role"] == "tool"', "message.role == 'tool'", 'message.role == "tool"', "ipython")
    return calls and any(r in template for r in results)


def _go_tool_round_trip(variables: Iterable[str], template: str) -> bool:
    names = set(variables)
    if "tools" not in names or "toolcalls" not in names:
        return False
    return 'eq .Role "tool"' in template or "tool_response" in template or "TOOL_RESULTS" in template


def prefer_chat_template(go_template: str, chat_template: str | None) -> bool:
    """Whether a model with a Go template should use its GGUF's Jinja template instead, as
    current Ollama decides (server/images.go, shouldPreferChatTemplate): the Jinja one can do
    more, or only it can carry a tool call's result back."""
    if not chat_template:
        return False
    variables = template_variables(go_template)
    go_caps = go_template_capabilities(variables, go_template)
    chat_caps = chat_template_capabilities(chat_template)
    if len(chat_caps) > len(go_caps):
        return not _go_tool_round_trip(variables, go_template) or _jinja_tool_round_trip(chat_template)
    if set(chat_caps) != set(go_caps) or Capability.TOOLS not in chat_caps:
        return False
    return _jinja_tool_round_trip(chat_template) and not _go_tool_round_trip(variables, go_template)


class Unsupported(ClientError):
    """The model cannot do what the request asks (Ollama's capability errors, texts and all)."""


def check_request(available: Iterable[Capability], *, model: str, full_name: str, endpoint: str,
                  think: Think | None, want: Iterable[Capability] = ()) -> Think | None:
    """Ollama's checks before a generate/chat is scheduled, in its order; returns the `think`
    the request runs with (a thinking model thinks unless told not to).

    `model` is the name as the request typed it, `full_name` the whole host/namespace/model:tag
    (Ollama's CheckCapabilities names the model so), `endpoint` "generate" or "chat"."""
    available = list(available)
    if Capability.THINKING in available:
        think = True if think is None else think
    elif thinks(think):
        raise Unsupported(f"{quote(model)} does not support thinking")
    missing = [c for c in (Capability.COMPLETION, *want) if c not in available]
    if Capability.COMPLETION in missing:
        raise Unsupported(f"{quote(model)} does not support {endpoint}")
    if missing:  # Go's errors.Join: one line each
        raise Unsupported(f"{full_name} does not support " + "\n".join(c.value for c in dict.fromkeys(missing)))
    return think
