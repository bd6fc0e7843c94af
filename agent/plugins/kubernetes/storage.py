"""How the model reaches an unchanged server image: a PVC, or the storage initializer.

Storage-initializer mode renders the fetch-model init container
(`agent.images.fetcher`) filling a shared emptyDir, and the deployment's Secret
(`modelsecret`) holding the model URI it reads: the URI never appears in the pod
spec. A `pvc://claim/sub/path` URI mounts the claim read-only instead. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from agent.images.delivery import DeliveryMode, scheme
from agent.images.fetcher import fetch_model_container, with_env
from agent.model import DeploymentSpec
from agent.plugins.kubernetes import modelsecret
from agent.plugins.kubernetes.settings import KubernetesSettings, ServerProfile

MODEL_VOLUME = "model"
FETCH_TMP_VOLUME = "fetch-tmp"

#: (init containers, volumes, server volume mounts)
Delivery = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


def model_delivery(
    spec: DeploymentSpec, settings: KubernetesSettings, profile: ServerProfile,
    mode: DeliveryMode, fetcher_env: dict[str, str], name: str,
) -> Delivery:
    """(init containers, volumes, server volume mounts) that bring the model to the server.

    Init containers get the server's container security context in `manifests`, with a
    read-only root filesystem whatever the server's setting.
    """
    if mode is not DeliveryMode.STORAGE_INITIALIZER:
        return [], [], []
    uri = spec.model.uri or ""
    server_mount: dict[str, Any] = {"name": MODEL_VOLUME, "mountPath": profile.model_path,
                                    "readOnly": True}
    if scheme(uri) == "pvc":
        claim, _, sub_path = uri.split("://", 1)[1].partition("/")
        if sub_path:
            server_mount["subPath"] = sub_path
        volume = {"name": MODEL_VOLUME,
                  "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        return [], [volume], [server_mount]
    init, volumes = fetch_model_container(
        name="storage-initializer", image=settings.agent_image or "",
        uri_env=modelsecret.uri_env(modelsecret.secret_name(name), uri),
        dest=profile.model_path,
        # its root filesystem is read-only (manifests): downloads go to a /tmp of its own
        mounts=[{"name": MODEL_VOLUME, "mountPath": profile.model_path},
                {"name": FETCH_TMP_VOLUME, "mountPath": "/tmp"}],
        credentials_secret=spec.model.credentials_secret,
        credentials_dir=settings.credentials_dir, digest=spec.model.digest,
        env=with_env(fetcher_env, HOME="/tmp"), pull_policy="IfNotPresent")
    return [init], [{"name": MODEL_VOLUME, "emptyDir": {}},
                    {"name": FETCH_TMP_VOLUME, "emptyDir": {}}, *volumes], [server_mount]


def uri_secret(spec: DeploymentSpec, settings: KubernetesSettings, delivery: Delivery,
               name: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The deployment's Secret with the model URI, when the storage initializer reads one."""
    if not delivery[0] or not spec.model.uri:
        return []
    uri = spec.model.uri
    return [modelsecret.render_secret(modelsecret.secret_name(name), settings.namespace, labels,
                                      {modelsecret.uri_key(uri): uri})]
