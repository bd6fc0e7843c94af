"""How the chart's values reach the agent's settings: the exceptions to "camelCase of the name".

A setting at `section.sub.field` has the values key `<values of section.sub>.<fieldInCamelCase>`
unless listed here. Every setting must be mapped, wired or listed as not in the chart: a new
setting without a documented value in values.yaml fails `tools/gen-chart`.
"""

from __future__ import annotations

#: settings section -> values section (sub-sections not listed follow their parent in camelCase)
SECTIONS: dict[str, str] = {
    "control_plane": "controlPlane",
    "runtime": "agent",
    "plugin.kubernetes": "predictionServer",
    "plugin.kubernetes.security": "predictionServer.securityContext",
    "plugin.kubernetes.autoscaling": "predictionServer.hpa",
    "images": "imageBuilder",
    "images.credentials": "imageBuilder",
    "artifacts": "artifacts",
}

#: settings -> values key, where the chart's name is not the camelCase of the setting's name
#: (names chosen for the chart's users before the generator; kept for compatibility).
RENAMES: dict[str, str] = {
    "logging.level": "agent.logLevel",
    "logging.format": "agent.logFormat",
    "health.port": "agent.healthPort",
    "plugin.kubernetes.qps": "agent.kubeApiQps",
    "plugin.kubernetes.burst": "agent.kubeApiBurst",
    "plugin.kubernetes.api_retries": "agent.kubeApiRetries",
    "plugin.kubernetes.api_timeout_seconds": "agent.kubeApiTimeoutSeconds",
    "plugin.kubernetes.list_page_size": "agent.kubeApiListPageSize",
    "plugin.kubernetes.default_resources": "predictionServer.resources",
    "plugin.kubernetes.poll_interval_seconds": "predictionServer.rolloutPollIntervalSeconds",
    "images.credentials.provider": "imageBuilder.registryAuth",
    "images.credentials.ecr_create_repositories": "imageBuilder.ecr.createRepositories",
    "images.credentials.aws_region": "imageBuilder.ecr.region",
    "images.credentials.ecr_endpoint_url": "imageBuilder.ecr.endpointUrl",
    "images.credentials.ecr_registry_override": "imageBuilder.ecr.registryOverride",
    "images.skip_tls_verify_registries": "imageBuilder.skipSslVerifyRegistries",
    "images.kaniko.annotations": "imageBuilder.kaniko.podAnnotations",
    "images.kaniko.config_map": "imageBuilder.configMap",
    "images.kaniko.extra_args": "imageBuilder.extraArguments",
    "images.kaniko.extra_volumes": "imageBuilder.extraVolumes",
    "images.kaniko.extra_volume_mounts": "imageBuilder.extraVolumeMounts",
    "images.kaniko.registry_certificates": "imageBuilder.registryCertificates",
    "images.credentials.hosts": "imageBuilder.credentialHosts",
}

#: Settings the chart's templates (`_config.tpl`) set from its own wiring: mounted files,
#: names of objects it creates, defaults that depend on other values.
WIRED: dict[str, str] = {
    "control_plane.token_file": "controlPlane.apiTokenSecret, mounted as a file",
    "control_plane.ca_bundle": "controlPlane.caBundle, mounted",
    "control_plane.mlflow.token_file": "controlPlane.mlflow.tokenSecret, mounted as a file",
    "control_plane.mlflow.password": "controlPlane.mlflow.passwordSecret, an env var",
    "control_plane.mlflow.ca_bundle": "controlPlane.caBundle, mounted",
    "runtime.leader_election.lease_name": "defaults to the release's fullname",
    "runtime.leader_election.namespace": "the prediction namespace",
    "health.enabled": "always on: the pod's probes use it",
    "health.host": "all interfaces: the kubelet probes the pod IP",
    "plugin.name": "the chart deploys the Kubernetes plugin",
    "plugin.kubernetes.namespace": "predictionServer.namespace, else the release namespace",
    "plugin.kubernetes.in_cluster": "always: the agent runs in the cluster",
    "plugin.kubernetes.agent_image": "the agent's own image",
    "plugin.kubernetes.network_policy.agent_pod_labels": "the agent pod's selector labels",
    "plugin.kubernetes.deployment_policy.agent_service_accounts":
        "the agent's and the image builder's ServiceAccounts",
    "plugin.kubernetes.public_probe_ca_bundle": "predictionServer.publicProbeCA, mounted",
    "images.credentials.password_file": "imageBuilder.passwordSecret, mounted as a file",
    "images.credentials.docker_config_file": "imageBuilder.secretName, mounted",
    "images.base_credentials": "imageBuilder.baseImageSecretName, mounted",
    "images.ca_bundle": "imageBuilder.registryCA, mounted",
    "images.dependencies.index_credentials_file":
        "imageBuilder.dependencies.indexCredentialsSecret, mounted as a file",
    "images.kaniko.fetcher_image": "the agent's own image",
    "images.kaniko.namespace": "the prediction namespace",
    "images.kaniko.service_account": "the builder service account the chart names",
    "images.kaniko.secret_name": "imageBuilder.secretName",
    "images.kaniko.model_credentials_secret": "falls back to artifacts.defaultCredentialsSecret",
    "images.kaniko.registry_certificates": "defaults to the generated repository's host",
    "images.kaniko.registry_certificates_config_map": "imageBuilder.registryCA.configMap",
    "artifacts.ca_bundle": "artifacts.caBundle, mounted",
    "artifacts.cache_dir": "the downloads emptyDir",
    "artifacts.mlflow_tracking_uri": "falls back to controlPlane.mlflow.trackingUri",
    "tls.ca_bundle": "caBundle, mounted",
    "tls.ca_config_map": "caBundle.configMap",
    "tls.ca_secret": "caBundle.secret",
    "tls.ca_key": "caBundle.key",
}

#: Wired settings that still have a value of their own (`RENAMES` or camelCase): their schema
#: is generated, the template applies the wiring (a default or a fallback) to that value.
WIRED_WITH_VALUE: frozenset[str] = frozenset({
    "runtime.leader_election.lease_name",
    "plugin.kubernetes.namespace",
    "images.kaniko.model_credentials_secret",
    "images.kaniko.registry_certificates",
    "artifacts.mlflow_tracking_uri",
})

#: Settings deliberately not reachable from values (agent.extraConfig still sets them).
NOT_IN_CHART: dict[str, str] = {
    "control_plane.token": "secrets are mounted files, never values",
    "control_plane.mlflow.token": "secrets are mounted files, never values",
    "runtime.leader_election.identity": "the pod name, which the agent reads itself",
    "plugin.filesystem": "the chart runs the Kubernetes plugin",
    "plugin.kubernetes.kubeconfig": "in-cluster configuration",
    "plugin.kubernetes.context": "in-cluster configuration",
    "plugin.kubernetes.credentials_dir": "a path inside prediction pods, the agent's own choice",
    "images.credentials.password": "secrets are mounted files, never values",
}

#: Settings whose empty string in values means "the agent's default" although the setting
#: is not nullable (required values the chart checks itself).
OMIT_WHEN_EMPTY: frozenset[str] = frozenset({
    "control_plane.url",
    "control_plane.mlflow.tracking_uri",
})
