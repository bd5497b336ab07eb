"""Settings: every OLLAMA_* / CORRAL_* environment variable, parsed once and typed.

This is the only module that reads the environment. A CORRAL_X variable overrides OLLAMA_X,
so corral can run beside a real Ollama without fighting over its variables.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from corral.runner.kernels import KvType

DEFAULT_PORT = 11434
FOREVER = float("inf")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int | float | None, default: float) -> float:
    """Ollama's keep_alive: seconds as a number, or a Go duration ("5m", "1h30m").

    Returns seconds; negative means forever (returned as FOREVER), 0 means unload when idle.
    Raises ValueError on anything else.
    """
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError(f"invalid duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            if not body or _DURATION_PART.sub("", body) != "":
                raise ValueError(f"invalid duration: {value!r}") from None
            seconds = sign * sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(body))
    if seconds != seconds:  # NaN
        raise ValueError(f"invalid duration: {value!r}")
    return FOREVER if seconds < 0 else seconds


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
               "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_size(value: str) -> int:
    """Bytes from "123", "1.5GiB", "800MB"."""
    match = _SIZE.match(value)
    if not match or (match.group(2) or "").lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size: {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


def parse_host(value: str) -> tuple[str, int]:
    """OLLAMA_HOST: "host", "host:port", ":port" or a URL; 127.0.0.1:11434 by default."""
    text = value.strip()
    scheme_port = DEFAULT_PORT
    if "://" in text:
        scheme, text = text.split("://", 1)
        scheme_port = 443 if scheme == "https" else 80 if scheme == "http" and ":" not in text else DEFAULT_PORT
    text = text.rstrip("/")
    if text.startswith("["):  # IPv6 literal
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else scheme_port
        return host, port
    host, sep, port_text = text.rpartition(":")
    if not sep:
        return text or "127.0.0.1", scheme_port
    return host or "127.0.0.1", int(port_text)


def parse_mirrors(value: str) -> dict[str, str]:
    """CORRAL_REGISTRY_MIRRORS: "host=url,host=url" → {host (lowercase): url without a trailing /}."""
    mirrors = {}
    for part in value.split(","):
        if not part.strip():
            continue
        host, sep, url = part.partition("=")
        if not sep or not host.strip() or "://" not in url:
            raise ValueError(f"invalid registry mirror {part.strip()!r}: expected host=http(s)://address")
        mirrors[host.strip().lower()] = url.strip().rstrip("/")
    return mirrors


_TRUE = ("1", "true", "yes", "on")  # how an env variable says yes / no
_FALSE = ("0", "false", "no", "off")


def parse_speculative(value: str) -> bool:
    """CORRAL_SPECULATIVE: "ngram" (prompt-lookup drafting; also 1/true/on) or off (0/false/off)."""
    text = value.strip().lower()
    if text == "ngram" or text in _TRUE:
        return True
    if text == "none" or text in _FALSE:
        return False
    raise ValueError(f"CORRAL_SPECULATIVE={value!r}: expected ngram or off")


@dataclass(frozen=True)
class Autoscale:
    """CORRAL_CLUSTER_AUTOSCALE=MIN-MAX[:TARGET[:DELAY]]: the cluster's node replicas follow the load
    (Serve autoscaling, TARGET requests in flight per node, default 2) instead of one per machine
    counted at start; Ray's autoscaler adds machines for the replicas that do not fit. DELAY: how
    long the load must stay low before a node is removed (default 60s)."""
    min_replicas: int
    max_replicas: int
    target_ongoing: float = 2.0
    downscale_delay: float = 60.0


def parse_autoscale(value: str) -> Autoscale:
    try:
        span, _, rest = value.strip().partition(":")
        target, _, delay = rest.partition(":")
        low, _, high = span.partition("-")
        scale = Autoscale(int(low), int(high or low), float(target) if target else 2.0,
                          parse_duration(delay or None, 60.0))
    except ValueError:
        scale = Autoscale(-1, -1)
    if not (0 <= scale.min_replicas <= scale.max_replicas and scale.max_replicas >= 1 and scale.target_ongoing > 0):
        raise ValueError(f"CORRAL_CLUSTER_AUTOSCALE={value!r}: expected MIN-MAX[:TARGET[:DELAY]], e.g. 1-4:2:60s")
    return scale


def _bool(value: str) -> bool:
    return value.strip().lower() in _TRUE


def _local_from(value: str) -> tuple[Path, ...] | None:
    """CORRAL_ALLOW_LOCAL_FROM: 1/true = anywhere (the root), 0/false = off, else directories."""
    text = value.strip()
    if text.lower() in _FALSE:
        return None
    if text.lower() in _TRUE:
        return (Path("/"),)
    return tuple(Path(d).expanduser().resolve() for d in text.split(os.pathsep) if d.strip())


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    models_dir: Path = field(default_factory=lambda: Path.home() / ".corral" / "models")
    keep_alive: float = 300.0  # seconds; FOREVER for negative values
    num_parallel: int = 0  # 0 = auto (4 when it fits, else 1)
    max_loaded_models: int = 0  # 0 = 3 x max(GPUs, 1)
    max_queue: int = 512
    context_length: int = 4096
    num_threads: int = 0  # 0 = physical cores
    cuda: bool | None = None  # None = use CUDA when llama-cpp-python has it
    load_timeout: float = 300.0
    memory_limit: int | None = None  # bytes; overrides the measured budget
    max_body_bytes: int = 32 * 2**20
    prompt_cache_bytes: int = 128 * 2**20  # per runner: saved KV states of finished sequences
    # Where an unloaded model's hottest prompt-cache states wait for its next load (None: a
    # folder in the models directory, store.kv_cache_dir), and that folder's bound (0: off).
    cache_dir: Path | None = None
    cache_dir_bytes: int = 2**30
    api_key: str | None = None  # when set, every route but GET / needs "Authorization: Bearer <key>" (or x-api-key)
    keys_file: Path | None = None  # CORRAL_KEYS_FILE: keys → tenants (api/keys.py); keys are required then
    shutdown_timeout: float = 30.0  # seconds SIGTERM waits for in-flight requests
    cluster_autoscale: Autoscale | None = None  # `serve --cluster`: None = one node replica per machine
    # CORRAL_CLUSTER_INTERVAL: a node's stream to an ingress sends at most once per this many
    # seconds (cluster/mux.py PUMP_INTERVAL_S); 0: once per runner step.
    cluster_interval: float = 0.05
    origins: tuple[str, ...] = ()
    # A runner with work and no sign of progress for this long is killed and restarted.
    stall_timeout: float = 60.0
    # Server-side paths in /api/create's `from` / FROM: off (None), or the directories allowed
    # (CORRAL_ALLOW_LOCAL_FROM=1 allows any path the server can read; a list of directories
    # separated by the OS path separator allows those only).
    local_from_dirs: tuple[Path, ...] | None = None
    # Slow clients: seconds to receive a request's headers, seconds between two pieces of a
    # body, and open connections (beyond it: 503).
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1024
    # Registry host → mirror base URL (same protocol), e.g. {"registry.ollama.ai": "http://127.0.0.1:5000"}.
    registry_mirrors: Mapping[str, str] = field(default_factory=dict)
    per_model_parallel: Mapping[str, int] = field(default_factory=dict)
    pinned: tuple[str, ...] = ()  # CORRAL_PIN: models never unloaded (keep-alive or another model's need)
    preload: tuple[str, ...] = ()  # CORRAL_PRELOAD: models loaded at start, in the background
    # CORRAL_SWAP_WINDOW: how long a request waits for a loaded model's work to be served before
    # that model gives way to its own (no thrash); 0: auto (from the measured load time).
    swap_window: float = 0.0
    # CORRAL_INTERACTIVE_RESERVE: while an interactive request came this recently, batch requests
    # leave one slot of each runner free for the interactive lane (scheduler/reserve.py); 0: off.
    interactive_reserve: float = 600.0
    # CORRAL_SPECULATIVE=ngram: greedy requests that do not say otherwise draft by prompt lookup;
    # CORRAL_DRAFT_MAX: tokens drafted at most per step.
    speculative: bool = False
    draft_max: int = 10
    # CORRAL_STREAM_INTERVAL: a request's text goes from its runner to the server at most once per
    # this many seconds (its first text at once); 0: every step (runner/coalesce.py). 50 ms: the
    # server's and the client's wake-ups per token fall by the tokens a chunk, which on a machine
    # whose cores run llama.cpp buys 3-10 % of tok/s at C = 8 (docs/PERFORMANCE.md).
    stream_interval: float = 0.05
    # Kernels (runner/kernels.py): CORRAL_EXACT=1 makes every runner batch-invariant (slower);
    # OLLAMA_FLASH_ATTENTION (None: the device's default); OLLAMA_KV_CACHE_TYPE (f16 | q8_0 | q4_0).
    exact: bool = False
    flash_attention: bool | None = None
    kv_cache_type: KvType = KvType.F16

    @property
    def threads(self) -> int:
        return self.num_threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            for key in (f"CORRAL_{name}", f"OLLAMA_{name}"):
                if env.get(key, "").strip():
                    return env[key]
            return None

        kw: dict = {}
        if (v := get("HOST")) is not None:
            kw["host"], kw["port"] = parse_host(v)
        if (v := get("MODELS")) is not None:
            kw["models_dir"] = Path(v).expanduser()
        if (v := get("KEEP_ALIVE")) is not None:
            kw["keep_alive"] = parse_duration(v, 300.0)
        if (v := get("LOAD_TIMEOUT")) is not None:
            kw["load_timeout"] = parse_duration(v, 300.0)
        for name, key in (("NUM_PARALLEL", "num_parallel"), ("MAX_LOADED_MODELS", "max_loaded_models"),
                          ("MAX_QUEUE", "max_queue"), ("CONTEXT_LENGTH", "context_length"),
                          ("NUM_THREADS", "num_threads")):
            if (v := get(name)) is not None:
                kw[key] = int(v)
        if (v := get("CUDA")) is not None:
            kw["cuda"] = _bool(v)
        if (v := get("EXACT")) is not None:
            kw["exact"] = _bool(v)
        if (v := get("FLASH_ATTENTION")) is not None:
            kw["flash_attention"] = _bool(v)
        if (v := get("KV_CACHE_TYPE")) is not None:
            kw["kv_cache_type"] = KvType.parse(v)
        if (v := get("MEMORY_LIMIT")) is not None:
            kw["memory_limit"] = parse_size(v)
        if (v := get("MAX_BODY")) is not None:
            kw["max_body_bytes"] = parse_size(v)
        if (v := get("API_KEY")) is not None:
            kw["api_key"] = v.strip()
        if (v := get("KEYS_FILE")) is not None:
            kw["keys_file"] = Path(v.strip()).expanduser()
        if (v := get("SHUTDOWN_TIMEOUT")) is not None:
            kw["shutdown_timeout"] = parse_duration(v, 30.0)
        if (v := get("CLUSTER_INTERVAL")) is not None:
            kw["cluster_interval"] = parse_duration(v, 0.05)
            if not 0 <= kw["cluster_interval"] <= 1:
                raise ValueError(f"CORRAL_CLUSTER_INTERVAL={v}: expected 0 to 1s (e.g. 50ms)")
        if (v := get("CLUSTER_AUTOSCALE")) is not None:
            kw["cluster_autoscale"] = parse_autoscale(v)
        if (v := get("PROMPT_CACHE")) is not None:
            kw["prompt_cache_bytes"] = parse_size(v)
        if (v := get("CACHE_DIR")) is not None:
            kw["cache_dir"] = Path(v.strip()).expanduser()
        if (v := get("CACHE_DIR_BYTES")) is not None:
            kw["cache_dir_bytes"] = parse_size(v)
        if (v := get("ORIGINS")) is not None:
            kw["origins"] = tuple(o.strip() for o in v.split(",") if o.strip())
        if (v := get("STALL_TIMEOUT")) is not None:
            kw["stall_timeout"] = parse_duration(v, 60.0)
        if (v := get("ALLOW_LOCAL_FROM")) is not None:
            kw["local_from_dirs"] = _local_from(v)
        if (v := get("HEADER_TIMEOUT")) is not None:
            kw["header_timeout"] = parse_duration(v, 10.0)
        if (v := get("BODY_TIMEOUT")) is not None:
            kw["body_timeout"] = parse_duration(v, 30.0)
        if (v := get("MAX_CONNECTIONS")) is not None:
            kw["max_connections"] = int(v)
        if (v := get("REGISTRY_MIRRORS")) is not None:
            kw["registry_mirrors"] = parse_mirrors(v)
        for name, key in (("PIN", "pinned"), ("PRELOAD", "preload")):
            if (v := get(name)) is not None:
                kw[key] = tuple(m.strip() for m in v.split(",") if m.strip())
        if (v := get("SWAP_WINDOW")) is not None:
            kw["swap_window"] = parse_duration(v, 0.0)
        if (v := get("INTERACTIVE_RESERVE")) is not None:
            kw["interactive_reserve"] = parse_duration(v, 600.0)
        if (v := get("SPECULATIVE")) is not None:
            kw["speculative"] = parse_speculative(v)
        if (v := get("DRAFT_MAX")) is not None:
            kw["draft_max"] = int(v)
            if not 1 <= kw["draft_max"] <= 64:
                raise ValueError(f"CORRAL_DRAFT_MAX={v}: expected 1 to 64")
        if (v := get("STREAM_INTERVAL")) is not None:
            kw["stream_interval"] = parse_duration(v, 0.05)
            if not 0 <= kw["stream_interval"] <= 1:
                raise ValueError(f"CORRAL_STREAM_INTERVAL={v}: expected 0 to 1s (e.g. 20ms)")
        # CORRAL_NUM_PARALLEL_<model> sets slots for one model (Ollama issue #4894);
        # the model part is the name with ':' '.' '-' written as '_', case-insensitive.
        prefix = "CORRAL_NUM_PARALLEL_"
        kw["per_model_parallel"] = {k[len(prefix):].lower(): int(v) for k, v in env.items()
                                    if k.startswith(prefix) and v.strip()}
        return cls(**kw)

    def parallel_for(self, model: str) -> int:
        """Slots configured for one model; 0 means auto."""
        key = re.sub(r"[^a-z0-9]", "_", model.lower())
        return self.per_model_parallel.get(key, self.num_parallel)
