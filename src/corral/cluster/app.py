"""The Serve application for KubeRay's RayService (docs/CLUSTER.md): `corral.cluster.app:build`.

The same ingress as `corral serve --cluster`, as a Serve ingress deployment behind Serve's own HTTP
proxy, with the node deployment bound to it. The ingress app is built when this module is imported,
with the Settings of the process that imports it (the ingress replica's environment)."""

from __future__ import annotations

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from corral.cluster import node
from corral.cluster.forward import Forwarder, NoNodes
from corral.cluster.ingress import Ingress, ingress_app
from corral.config import Settings

_ingress: Ingress | None = None  # this replica's, once its constructor ran


def _current() -> Ingress:
    if _ingress is None:
        raise NoNodes("corral's ingress is starting")
    return _ingress


_settings = Settings.from_env()


@serve.deployment(name="corral-ingress", ray_actor_options={"num_cpus": 0})
@serve.ingress(ingress_app(_settings, _current))
class CorralIngress:
    def __init__(self, nodes: DeploymentHandle) -> None:
        global _ingress
        _ingress = Ingress(Forwarder(nodes))


def build(args: dict[str, str]) -> Application:
    """`serve run corral.cluster.app:build nodes=3` / RayService's import_path: `nodes` is the
    number of node replicas (machines with the corral_node resource)."""
    nodes = int(args.get("nodes", "1"))
    nodes_app = node.deployment(nodes, _settings.shutdown_timeout, _settings.cluster_autoscale).bind()
    return CorralIngress.bind(nodes_app)  # type: ignore[attr-defined]
