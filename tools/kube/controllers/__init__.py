"""Controllers and node of the Kubernetes API stand-in.

``start(kubeconfig_path, state_dir, stop_event)`` starts, in background
threads, ordinary API clients of the (stand-in or any) API server:

* ``node``: scheduler + kubelet running pods' containers with podman,
* ``replicasets`` / ``deployments``: rollouts with real status,
* ``jobs``: Job pods, Complete/Failed conditions,
* ``endpoints``: Service -> Endpoints from ready pods,
* ``ingress``: an nginx ingress controller (and OpenShift Routes).

They stop when ``stop_event`` is set; the node then stops every container it
started. Join the returned threads before exiting the process. Select a
subset with ``KUBE_STANDIN_CONTROLLERS=node,deployments,...``.
"""

from __future__ import annotations

import logging
import os
import threading

from .client import KubeClient

log = logging.getLogger(__name__)

ALL = ("node", "replicasets", "deployments", "jobs", "endpoints", "ingress")


def start(kubeconfig_path: str, state_dir: str, stop_event: threading.Event
          ) -> list[threading.Thread]:
    """Start the controllers; they run until ``stop_event`` is set."""
    from .deployments import DeploymentController, ReplicaSetController
    from .endpoints import EndpointsController
    from .ingress import IngressController
    from .jobs import JobController
    from .node import Node

    os.makedirs(state_dir, exist_ok=True)
    wanted = [n.strip() for n in os.environ.get("KUBE_STANDIN_CONTROLLERS", ",".join(ALL))
              .split(",") if n.strip()]
    factories = {"node": Node, "replicasets": ReplicaSetController,
                 "deployments": DeploymentController, "jobs": JobController,
                 "endpoints": EndpointsController, "ingress": IngressController}
    threads = []
    for name in wanted:
        if name not in factories:
            log.warning("unknown controller %r ignored", name)
            continue
        ctl = factories[name](KubeClient(kubeconfig_path), state_dir, stop_event)
        # not daemon: an interpreter exiting after stop_event waits for the cleanup
        t = threading.Thread(target=ctl.run, name=f"kube-controller-{name}", daemon=False)
        t.start()
        threads.append(t)
    return threads
