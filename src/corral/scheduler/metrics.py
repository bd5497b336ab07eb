"""Prometheus metrics for the scheduler, in a registry of its own (no process-global state)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.scheduler.events import Done, Event, Text
from corral.scheduler.snapshot import Snapshot

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _StateCollector(Collector):
    """Gauges read from a scheduler snapshot at scrape time, so they can never drift from it."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        running = GaugeMetricFamily("corral_requests_running", "Requests holding a slot", labels=["model"])
        waiting = GaugeMetricFamily("corral_requests_waiting", "Requests waiting for a slot, load or memory",
                                    labels=["model"])
        decode = GaugeMetricFamily("corral_runner_decode_seconds", "Time runners spent inside llama_decode",
                                   labels=["model"])
        busy = GaugeMetricFamily("corral_runner_busy_seconds", "Time runner loops spent on steps with work",
                                 labels=["model"])
        reused = CounterMetricFamily("corral_prompt_reused_tokens", "Prompt tokens taken from a kept or "
                                     "cached prefix instead of being decoded", labels=["model"])
        restores = CounterMetricFamily("corral_prompt_cache_restores", "Prompt-cache entries restored into a slot",
                                       labels=["model"])
        evaluated = CounterMetricFamily("corral_prompt_evaluated_tokens", "Prompt tokens decoded (not reused)",
                                        labels=["model"])
        from_disk = CounterMetricFamily("corral_prompt_cache_disk_restores", "Prompt-cache entries read back "
                                        "from CORRAL_CACHE_DIR when a runner loaded (warm reloads)", labels=["model"])
        drafted = CounterMetricFamily("corral_draft_tokens", "Tokens drafted by prompt lookup (speculative "
                                      "decoding)", labels=["model"])
        accepted = CounterMetricFamily("corral_draft_accepted_tokens", "Drafted tokens the model agreed with",
                                       labels=["model"])
        moves = CounterMetricFamily("corral_runner_slot_moves", "Requests moved to another slot so that a decode "
                                    "holds one run of sequence ids (one pass over the weights)", labels=["model"])
        for model, totals in snap.models.items():
            moves.add_metric([model], totals.slot_moves)
            drafted.add_metric([model], totals.drafted_tokens)
            accepted.add_metric([model], totals.accepted_tokens)
            reused.add_metric([model], totals.reused_tokens)
            restores.add_metric([model], totals.cache_restores)
            evaluated.add_metric([model], totals.evaluated_tokens)
            from_disk.add_metric([model], totals.disk_restores)
            running.add_metric([model], totals.running)
            waiting.add_metric([model], totals.waiting)
            decode.add_metric([model], totals.decode_s)
            busy.add_metric([model], totals.busy_s)
        silent = GaugeMetricFamily("corral_runner_silent_seconds", "Seconds a runner with work has made no "
                                   "progress (0 when idle or progressing)", labels=["model"])
        healthy = GaugeMetricFamily("corral_runner_healthy", "1 when a runner makes progress, 0 when it "
                                    "looks stalled", labels=["model"])
        for runner in snap.runners:
            silent.add_metric([runner.name], runner.silent_s)
            healthy.add_metric([runner.name], 1.0 if runner.health == "ok" else 0.0)
        yield from (running, waiting, decode, busy, silent, healthy, reused, restores, evaluated, from_disk,
                    drafted, accepted, moves)
        t_running = GaugeMetricFamily("corral_tenant_requests_running", "A tenant's requests holding a slot",
                                      labels=["tenant"])
        t_waiting = GaugeMetricFamily("corral_tenant_requests_waiting", "A tenant's requests waiting",
                                      labels=["tenant"])
        for tenant, counts in snap.tenants.items():
            t_running.add_metric([tenant], counts.running)
            t_waiting.add_metric([tenant], counts.waiting)
        yield from (t_running, t_waiting)
        yield GaugeMetricFamily("corral_models_loaded", "Runner processes loaded or loading",
                                value=len(snap.runners))
        yield GaugeMetricFamily("corral_memory_reserved_bytes", "Memory reserved by loaded models (estimates)",
                                value=snap.reserved)
        yield GaugeMetricFamily("corral_memory_budget_bytes", "Memory corral may fill with models",
                                value=snap.budget)


class Metrics:
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_StateCollector(snapshot))
        r = self.registry
        self.runner_restarts = Counter("corral_runner_restarts", "Runners lost to a crash or killed by the "
                                       "stall watchdog", ["model", "reason"], registry=r)
        self.loads = Counter("corral_model_loads", "Runners loaded (a model swapped in counts one)", ["model"],
                             registry=r)
        self.rejected = Counter("corral_rejected_requests", "Requests refused with 503 (queue full)", registry=r)
        # Per tenant (a keys file's tenant names; "default" without one).
        self.tenant_started = Counter("corral_tenant_requests_started", "Requests that took a slot",
                                      ["tenant", "lane"], registry=r)
        self.tenant_refused = Counter("corral_tenant_requests_refused", "Requests refused at admission: 429 "
                                      "(the tenant's queue limit) or 503 (the server's)", ["tenant", "status"],
                                      registry=r)
        self.tenant_tokens = Counter("corral_tenant_generated_tokens", "Tokens generated (embeddings: input "
                                     "tokens) for a tenant", ["tenant"], registry=r)
        self.prompt_tokens = Counter("corral_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.generated_tokens = Counter("corral_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.queue_time = Histogram("corral_queue_seconds", "Time from admission to a slot", ["model"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("corral_time_to_first_token_seconds", "Time from admission to the first token",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("corral_inter_token_seconds", "Time between streamed tokens", ["model"],
                             buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("corral_request_seconds", "Time from admission to the last token", ["model"],
                                 buckets=LATENCY_BUCKETS, registry=r)

    def refused(self, tenant: str, status: int) -> None:
        if status == 503:
            self.rejected.inc()
        self.tenant_refused.labels(tenant, str(status)).inc()

    def request(self, model: str, enqueued: float, queued_s: float) -> RequestTiming:
        self.queue_time.labels(model).observe(queued_s)
        return RequestTiming(self, model, enqueued)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTiming:
    """Observes one request's stream: time to first token, inter-token gaps, latency, tokens."""

    def __init__(self, metrics: Metrics, model: str, enqueued: float) -> None:
        self.m, self.model, self.enqueued, self.last = metrics, model, enqueued, 0.0
        self.itl = metrics.itl.labels(model)  # looked up once: saw() runs for every streamed piece

    def saw(self, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, Text):
            if self.last:
                self.itl.observe(now - self.last)
            else:
                self.m.ttft.labels(self.model).observe(now - self.enqueued)
            self.last = now
        elif isinstance(event, Done):
            self.m.latency.labels(self.model).observe(now - self.enqueued)
            self.m.prompt_tokens.labels(self.model).inc(event.prompt_eval_count)
            self.m.generated_tokens.labels(self.model).inc(event.eval_count)
