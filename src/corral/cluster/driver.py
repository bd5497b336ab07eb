"""`corral serve --cluster ADDRESS|auto`: join a Ray cluster, run one corral node per machine that
offers the `corral_node` resource, and serve the API here through the ingress (corral's own
uvicorn, guards and draining shutdown)."""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray import serve

from corral.api.serve import run
from corral.cluster import CONTROLLER_ENV, node
from corral.cluster.forward import Forwarder
from corral.cluster.ingress import Ingress, ingress_app
from corral.config import Settings
from corral.errors import CorralError

log = logging.getLogger("corral.cluster")

APP = "corral"


class NoNodeResource(CorralError):
    status = 503


def node_count() -> int:
    """Machines that offer a corral node (each `ray start ... --resources='{"corral_node": 1}'`)."""
    return int(ray.cluster_resources().get(node.NODE_RESOURCE, 0))


def deploy(settings: Settings, replicas: int | None = None) -> Any:
    """Start (or update) the node deployment, one replica per node; its handle. The cluster must
    already be joined (ray.init)."""
    count = node_count() if replicas is None else replicas
    scale = settings.cluster_autoscale
    if count < 1 and scale is None:  # autoscaling: Ray's autoscaler starts machines for the replicas
        raise NoNodeResource(f"no Ray node offers the {node.NODE_RESOURCE!r} resource: start each machine with "
                             f"ray start --address=... --resources='{{\"{node.NODE_RESOURCE}\": 1}}'")
    serve.start(http_options={"location": "NoServer"},  # the ingress is corral's own server
                controller_options={"runtime_env": {"env_vars": dict(CONTROLLER_ENV)}})
    serve.run(node.deployment(count, settings.shutdown_timeout, scale).bind(), name=APP, route_prefix=None)
    return serve.get_deployment_handle(node.DEPLOYMENT, app_name=APP)


def serve_cluster(settings: Settings, address: str) -> None:
    ray.init(address=address, namespace=APP, log_to_driver=False)
    ingress = Ingress(Forwarder(deploy(settings)))

    def drain() -> None:
        ingress.draining = True

    try:
        run(ingress_app(settings, lambda: ingress), settings, drain)
    finally:
        serve.delete(APP)  # each node drains (admitted requests finish), then stops its runners
