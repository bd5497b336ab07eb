"""corral across machines: the pieces of cluster mode (messages, the in-process ASGI call, routing, merging)."""

from __future__ import annotations

import os

# Ray Serve's own periodic work, slowed where corral does not need its pace (docs/PERFORMANCE.md,
# the Ray hop): on a node whose cores llama.cpp fills, each wake-up of these loops preempts a decode
# thread. Request metrics are batched for a second, not 100 ms; handles need not count requests
# for Serve's autoscaling (nodes report their own, node.requests_policy); the controller's loop
# runs twice a second, not ten times (routing stats are refreshed once a second anyway).
SERVE_ENV = {"RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000", "RAY_SERVE_COLLECT_AUTOSCALING_METRICS_ON_HANDLE": "0"}
CONTROLLER_ENV = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}

# Read when Serve is imported: in the ingress process (its handles), this package comes first.
# Node replicas get them with their runtime_env (node.deployment), the controller from serve.start.
for _name, _value in SERVE_ENV.items():
    os.environ.setdefault(_name, _value)
