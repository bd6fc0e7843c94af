{{/*
The agent's config file (agent/config.py Settings, snake_case keys), built from
the camelCase values. This mapping is the heart of the chart: every agent
setting is reachable from values.yaml (and agent.extraConfig covers settings
newer than the chart). Paths refer to the mounts of "management-agent.volumeMounts".
*/}}
{{- define "management-agent.configData" -}}
{{- $v := .Values }}
{{- $mounts := include "management-agent.mountPaths" . | fromYaml }}
{{- /* control_plane */}}
{{- $cp := dict
  "kind" $v.controlPlane.kind
  "environment_id" $v.controlPlane.environmentId
  "timeout_seconds" $v.controlPlane.timeoutSeconds
  "poll_interval_seconds" $v.controlPlane.pollIntervalSeconds
  "long_poll_seconds" $v.controlPlane.longPollSeconds
  "lease_seconds" $v.controlPlane.leaseSeconds
  "heartbeat_interval_seconds" $v.controlPlane.heartbeatIntervalSeconds
  "max_consecutive_failures" $v.controlPlane.maxConsecutiveFailures }}
{{- with $v.controlPlane.url }}{{ $_ := set $cp "url" . }}{{ end }}
{{- $cpCA := $v.controlPlane.caBundle }}
{{- if or $cpCA.configMap $cpCA.secret }}{{ $_ := set $cp "ca_bundle" $mounts.controlPlaneCA }}{{ end }}
{{- $ml := $v.controlPlane.mlflow }}
{{- $mlflow := dict "name_pattern" $ml.namePattern "aliases" $ml.aliases "stages" $ml.stages "required_tag" (default nil $ml.requiredTag) }}
{{- with $ml.trackingUri }}{{ $_ := set $mlflow "tracking_uri" . }}{{ end }}
{{- with $ml.username }}{{ $_ := set $mlflow "username" . }}{{ end }}
{{- if $ml.tokenSecret.name }}{{ $_ := set $mlflow "token_file" $mounts.mlflowToken }}{{ end }}
{{- if or $cpCA.configMap $cpCA.secret }}{{ $_ := set $mlflow "ca_bundle" $mounts.controlPlaneCA }}{{ end }}
{{- $_ := set $cp "mlflow" $mlflow }}
{{- /* runtime */}}
{{- $le := $v.agent.leaderElection }}
{{- $leader := dict
  "enabled" $le.enabled
  "lease_name" (default (include "management-agent.fullname" .) $le.leaseName)
  "namespace" (include "management-agent.predictionNamespace" .)
  "lease_duration_seconds" $le.leaseDurationSeconds
  "renew_deadline_seconds" $le.renewDeadlineSeconds
  "retry_period_seconds" $le.retryPeriodSeconds }}
{{- $runtime := dict
  "workers" $v.agent.workers
  "action_timeout_seconds" $v.agent.actionTimeoutSeconds
  "max_delivery_attempts" $v.agent.maxDeliveryAttempts
  "shutdown_grace_seconds" $v.agent.shutdownGraceSeconds
  "stall_seconds" $v.agent.stallSeconds
  "leader_election" $leader }}
{{- /* plugin.kubernetes */}}
{{- $ps := $v.predictionServer }}
{{- $profiles := dict }}
{{- range $name, $p := $ps.serverProfiles }}
{{- if $p }}
{{- $profile := dict }}
{{- range $from, $to := dict "image" "image" "modelPath" "model_path" "port" "port" "healthPath" "health_path" "predictPath" "predict_path" "metricsPort" "metrics_port" "metricsPath" "metrics_path" "command" "command" "args" "args" "env" "env" "runAsNonRoot" "run_as_non_root" }}
{{- if hasKey $p $from }}{{ $_ := set $profile $to (get $p $from) }}{{ end }}
{{- end }}
{{- $_ := set $profiles $name $profile }}
{{- end }}
{{- end }}
{{- $sec := $ps.securityContext }}
{{- $security := dict "run_as_non_root" $sec.runAsNonRoot "read_only_root_filesystem" $sec.readOnlyRootFilesystem "seccomp_runtime_default" $sec.seccompRuntimeDefault }}
{{- range $from, $to := dict "runAsUser" "run_as_user" "runAsGroup" "run_as_group" "fsGroup" "fs_group" }}
{{- if and (hasKey $sec $from) (not (kindIs "invalid" (index $sec $from))) }}{{ $_ := set $security $to (int64 (index $sec $from)) }}{{ end }}
{{- end }}
{{- $pr := $ps.probes }}
{{- $np := $ps.networkPolicy }}
{{- $mon := $ps.monitoring }}
{{- $monitoring := dict "enabled" $mon.enabled "spool_dir" $mon.spoolDir "env" $mon.env "resources" $mon.resources }}
{{- with $mon.image }}{{ $_ := set $monitoring "image" . }}{{ end }}
{{- $kube := dict
  "namespace" (include "management-agent.predictionNamespace" .)
  "in_cluster" true
  "qps" $v.agent.kubeApiQps
  "burst" $v.agent.kubeApiBurst
  "api_retries" $v.agent.kubeApiRetries
  "api_timeout_seconds" $v.agent.kubeApiTimeoutSeconds
  "server_profiles" $profiles
  "default_server_profile" $ps.defaultServerProfile
  "model_delivery" $ps.modelDelivery
  "agent_image" (include "management-agent.image" .)
  "name_prefix" $ps.namePrefix
  "outfacing_url_root" $ps.outfacingUrlRoot
  "ingress_mode" $ps.ingressMode
  "ingress_class_name" (default nil $ps.ingressClassName)
  "ingress_annotations" $ps.ingressAnnotations
  "tls_secret_name" (default nil $ps.tlsSecretName)
  "gateway_parent_refs" $ps.gatewayParentRefs
  "service_port" $ps.servicePort
  "cluster_domain" $ps.clusterDomain
  "rolling_update" (dict "max_surge" $ps.rollingUpdate.maxSurge "max_unavailable" $ps.rollingUpdate.maxUnavailable)
  "progress_deadline_seconds" $ps.progressDeadlineSeconds
  "revision_history_limit" $ps.revisionHistoryLimit
  "probes" (dict "enabled" $pr.enabled "period_seconds" $pr.periodSeconds "timeout_seconds" $pr.timeoutSeconds "readiness_failure_threshold" $pr.readinessFailureThreshold "liveness_failure_threshold" $pr.livenessFailureThreshold "startup_failure_threshold" $pr.startupFailureThreshold)
  "security" $security
  "default_resources" $ps.resources
  "service_account_name" (default nil $ps.serviceAccountName)
  "image_pull_secrets" $ps.imagePullSecrets
  "node_selector" $ps.nodeSelector
  "tolerations" $ps.tolerations
  "affinity" $ps.affinity
  "extra_labels" $ps.extraLabels
  "pod_annotations" $ps.podAnnotations
  "prometheus_scrape" $ps.prometheusScrape
  "autoscaling" (dict "enabled" $ps.hpa.enabled)
  "pdb" (dict "enabled" $ps.pdb.enabled "max_unavailable" $ps.pdb.maxUnavailable)
  "network_policy" (dict "enabled" $np.enabled "ingress_controller_namespace" $np.ingressControllerNamespace "agent_pod_labels" (include "management-agent.selectorLabels" . | fromYaml) "allow_from_namespaces" $np.allowFromNamespaces "restrict_egress" $np.restrictEgress "extra_egress" $np.extraEgress)
  "monitoring" $monitoring
  "rollout_timeout_seconds" $ps.rolloutTimeoutSeconds
  "fail_fast_seconds" $ps.failFastSeconds
  "poll_interval_seconds" $ps.rolloutPollIntervalSeconds
  "keep_failed" $ps.keepFailed
  "probe_public_url" $ps.probePublicUrl
  "public_probe_timeout_seconds" $ps.publicProbeTimeoutSeconds
  "extra" $ps.extra }}
{{- if or $ps.publicProbeCA.configMap $ps.publicProbeCA.secret }}{{ $_ := set $kube "public_probe_ca_bundle" $mounts.publicProbeCA }}{{ end }}
{{- /* images */}}
{{- $ib := $v.imageBuilder }}
{{- $creds := dict "provider" $ib.registryAuth "ecr_create_repositories" $ib.ecr.createRepositories }}
{{- with $ib.username }}{{ $_ := set $creds "username" . }}{{ end }}
{{- if $ib.passwordSecret.name }}{{ $_ := set $creds "password_file" $mounts.registryPassword }}{{ end }}
{{- if $ib.secretName }}{{ $_ := set $creds "docker_config_file" $mounts.registryDockerConfig }}{{ end }}
{{- with $ib.ecr.region }}{{ $_ := set $creds "aws_region" . }}{{ end }}
{{- with $ib.ecr.endpointUrl }}{{ $_ := set $creds "ecr_endpoint_url" . }}{{ end }}
{{- with $ib.ecr.registryOverride }}{{ $_ := set $creds "ecr_registry_override" . }}{{ end }}
{{- $k := $ib.kaniko }}
{{- $kaniko := dict
  "image" $k.image
  "fetcher_image" (include "management-agent.image" .)
  "namespace" (include "management-agent.predictionNamespace" .)
  "service_account" (include "management-agent.builderServiceAccountName" .)
  "resources" $k.resources
  "timeout_seconds" $k.timeoutSeconds
  "backoff_limit" $k.backoffLimit
  "ttl_seconds_after_finished" $k.ttlSecondsAfterFinished
  "node_selector" $k.nodeSelector
  "tolerations" $k.tolerations
  "annotations" $k.podAnnotations
  "extra_args" $ib.extraArguments
  "extra_volumes" $ib.extraVolumes
  "extra_volume_mounts" $ib.extraVolumeMounts
  "poll_interval_seconds" $k.pollIntervalSeconds
  "log_tail_lines" $k.logTailLines }}
{{- with $ib.configMap }}{{ $_ := set $kaniko "config_map" . }}{{ end }}
{{- with $ib.secretName }}{{ $_ := set $kaniko "secret_name" . }}{{ end }}
{{- with (default $v.artifacts.defaultCredentialsSecret $k.modelCredentialsSecret) }}{{ $_ := set $kaniko "model_credentials_secret" . }}{{ end }}
{{- if $ib.registryCA.configMap }}
{{- $certs := $ib.registryCertificates }}
{{- if and (not $certs) $ib.generatedImageRepository }}
{{- $certs = dict (first (splitList "/" $ib.generatedImageRepository)) $ib.registryCA.key }}
{{- end }}
{{- if $certs }}
{{- $_ := set $kaniko "registry_certificates" $certs }}
{{- $_ := set $kaniko "registry_certificates_config_map" $ib.registryCA.configMap }}
{{- end }}
{{- end }}
{{- $images := dict
  "builder" $ib.builder
  "repository_layout" $ib.repositoryLayout
  "credentials" $creds
  "insecure_registries" $ib.insecureRegistries
  "skip_tls_verify_registries" $ib.skipSslVerifyRegistries
  "compression" $ib.compression
  "gzip_store_incompressible" $ib.gzipStoreIncompressible
  "layer_uid" (int64 $ib.layerUid)
  "layer_gid" (int64 $ib.layerGid)
  "timeout_seconds" $ib.timeoutSeconds
  "retries" $ib.retries
  "recipe_version" (toString $ib.recipeVersion)
  "kaniko" $kaniko }}
{{- with $ib.generatedImageRepository }}{{ $_ := set $images "generated_image_repository" . }}{{ end }}
{{- range $from, $to := dict "compressionLevel" "compression_level" "chunkSizeBytes" "chunk_size_bytes" "progressBytes" "progress_bytes" }}
{{- if and (hasKey $ib $from) (not (kindIs "invalid" (index $ib $from))) }}{{ $_ := set $images $to (int64 (index $ib $from)) }}{{ end }}
{{- end }}
{{- if or $ib.registryCA.configMap $ib.registryCA.secret }}{{ $_ := set $images "ca_bundle" $mounts.registryCA }}{{ end }}
{{- if $ib.baseImageSecretName }}{{ $_ := set $images "base_credentials" (dict "provider" "dockerconfig" "docker_config_file" $mounts.baseRegistryDockerConfig) }}{{ end }}
{{- /* artifacts */}}
{{- $art := $v.artifacts }}
{{- $artifacts := dict
  "max_archive_bytes" (int64 $art.maxArchiveBytes)
  "max_archive_files" (int64 $art.maxArchiveFiles)
  "pvc_root" $art.pvcRoot
  "unpack_archives" $art.unpackArchives
  "oci_insecure_registries" $art.ociInsecureRegistries
  "retries" $art.retries
  "timeout_seconds" $art.timeoutSeconds
  "download_workers" $art.downloadWorkers
  "list_page_size" $art.listPageSize
  "cache_dir" $mounts.downloads }}
{{- with $art.defaultCredentialsSecret }}{{ $_ := set $artifacts "default_credentials_secret" . }}{{ end }}
{{- if or $art.caBundle.configMap $art.caBundle.secret }}{{ $_ := set $artifacts "ca_bundle" $mounts.artifactsCA }}{{ end }}
{{- with $art.s3EndpointUrl }}{{ $_ := set $artifacts "s3_endpoint_url" . }}{{ end }}
{{- with $art.s3Region }}{{ $_ := set $artifacts "s3_region" . }}{{ end }}
{{- with $art.gcsEndpointUrl }}{{ $_ := set $artifacts "gcs_endpoint_url" . }}{{ end }}
{{- with $art.s3AddressingStyle }}{{ $_ := set $artifacts "s3_addressing_style" . }}{{ end }}
{{- if $art.mlflowTrackingUri }}
{{- $_ := set $artifacts "mlflow_tracking_uri" $art.mlflowTrackingUri }}
{{- else if and (eq $v.controlPlane.kind "mlflow") $ml.trackingUri }}
{{- $_ := set $artifacts "mlflow_tracking_uri" $ml.trackingUri }}
{{- end }}
{{- /* the whole file */}}
{{- $config := dict
  "control_plane" $cp
  "runtime" $runtime
  "health" (dict "enabled" true "host" "0.0.0.0" "port" $v.agent.healthPort)
  "logging" (dict "level" $v.agent.logLevel "format" $v.agent.logFormat)
  "plugin" (dict "name" "kubernetes" "kubernetes" $kube)
  "images" $images
  "artifacts" $artifacts }}
{{- $config = mustMergeOverwrite $config (deepCopy $v.agent.extraConfig) }}
{{- toYaml $config }}
{{- end }}

{{/*
Where the chart mounts config, secrets and CA bundles inside the agent container.
*/}}
{{- define "management-agent.mountPaths" -}}
config: /etc/management-agent/config.yaml
controlPlaneToken: /var/run/secrets/management-agent/control-plane/token
controlPlaneCA: /etc/management-agent/ca/control-plane/ca.crt
mlflowToken: /var/run/secrets/management-agent/mlflow/token
registryDockerConfig: /var/run/secrets/management-agent/registry/config.json
registryPassword: /var/run/secrets/management-agent/registry-password/password
registryCA: /etc/management-agent/ca/registry/ca.crt
artifactsCA: /etc/management-agent/ca/artifacts/ca.crt
downloads: /var/cache/management-agent
publicProbeCA: /etc/management-agent/ca/public/ca.crt
baseRegistryDockerConfig: /var/run/secrets/management-agent/base-registry/config.json
{{- end }}

{{/*
Environment of the agent container (and of the helm test pod).
*/}}
{{- define "management-agent.env" -}}
{{- $mounts := include "management-agent.mountPaths" . | fromYaml }}
- name: MGMT_AGENT_CONFIG
  value: {{ $mounts.config }}
{{- if .Values.controlPlane.apiTokenSecret.name }}
- name: MGMT_AGENT_CONTROL_PLANE__TOKEN_FILE
  value: {{ $mounts.controlPlaneToken }}
{{- end }}
{{- with .Values.controlPlane.mlflow.passwordSecret.name }}
- name: MGMT_AGENT_CONTROL_PLANE__MLFLOW__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.controlPlane.mlflow.passwordSecret.key }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with .Values.agent.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
A volume made of one key of a ConfigMap or Secret, renamed to `file`.
*/}}
{{- define "management-agent.refVolume" -}}
- name: {{ .name }}
{{- if .ref.configMap }}
  configMap:
    name: {{ .ref.configMap }}
    items:
      - key: {{ .ref.key }}
        path: {{ .file }}
{{- else }}
  secret:
    secretName: {{ .ref.secret }}
    items:
      - key: {{ .ref.key }}
        path: {{ .file }}
{{- end }}
{{- end }}

{{/*
Volumes of the agent pod (and of the helm test pod).
*/}}
{{- define "management-agent.volumes" -}}
{{- $v := .Values }}
- name: config
  configMap:
    name: {{ include "management-agent.fullname" . }}
- name: tmp
  emptyDir:
    sizeLimit: {{ $v.agent.tmpSizeLimit }}
{{- with $v.controlPlane.apiTokenSecret.name }}
- name: control-plane-token
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $v.controlPlane.apiTokenSecret.key }}
        path: token
{{- end }}
{{- if or $v.controlPlane.caBundle.configMap $v.controlPlane.caBundle.secret }}
{{ include "management-agent.refVolume" (dict "name" "control-plane-ca" "ref" $v.controlPlane.caBundle "file" "ca.crt") }}
{{- end }}
{{- with $v.controlPlane.mlflow.tokenSecret.name }}
- name: mlflow-token
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $v.controlPlane.mlflow.tokenSecret.key }}
        path: token
{{- end }}
{{- with $v.imageBuilder.secretName }}
- name: registry-docker-config
  secret:
    secretName: {{ . }}
    items:
      - key: .dockerconfigjson
        path: config.json
{{- end }}
{{- with $v.imageBuilder.passwordSecret.name }}
- name: registry-password
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $v.imageBuilder.passwordSecret.key }}
        path: password
{{- end }}
{{- if or $v.imageBuilder.registryCA.configMap $v.imageBuilder.registryCA.secret }}
{{ include "management-agent.refVolume" (dict "name" "registry-ca" "ref" $v.imageBuilder.registryCA "file" "ca.crt") }}
{{- end }}
{{- if or $v.artifacts.caBundle.configMap $v.artifacts.caBundle.secret }}
{{ include "management-agent.refVolume" (dict "name" "artifacts-ca" "ref" $v.artifacts.caBundle "file" "ca.crt") }}
{{- end }}
- name: downloads
  emptyDir:
    sizeLimit: {{ $v.artifacts.downloadSizeLimit }}
{{- with $v.imageBuilder.baseImageSecretName }}
- name: base-registry-docker-config
  secret:
    secretName: {{ . }}
    items:
      - key: .dockerconfigjson
        path: config.json
{{- end }}
{{- if or $v.predictionServer.publicProbeCA.configMap $v.predictionServer.publicProbeCA.secret }}
{{ include "management-agent.refVolume" (dict "name" "public-probe-ca" "ref" $v.predictionServer.publicProbeCA "file" "ca.crt") }}
{{- end }}
{{- with $v.agent.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volume mounts of the agent container (and of the helm test container).
*/}}
{{- define "management-agent.volumeMounts" -}}
{{- $v := .Values }}
- name: config
  mountPath: /etc/management-agent/config.yaml
  subPath: config.yaml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if $v.controlPlane.apiTokenSecret.name }}
- name: control-plane-token
  mountPath: /var/run/secrets/management-agent/control-plane
  readOnly: true
{{- end }}
{{- if or $v.controlPlane.caBundle.configMap $v.controlPlane.caBundle.secret }}
- name: control-plane-ca
  mountPath: /etc/management-agent/ca/control-plane
  readOnly: true
{{- end }}
{{- if $v.controlPlane.mlflow.tokenSecret.name }}
- name: mlflow-token
  mountPath: /var/run/secrets/management-agent/mlflow
  readOnly: true
{{- end }}
{{- if $v.imageBuilder.secretName }}
- name: registry-docker-config
  mountPath: /var/run/secrets/management-agent/registry
  readOnly: true
{{- end }}
{{- if $v.imageBuilder.passwordSecret.name }}
- name: registry-password
  mountPath: /var/run/secrets/management-agent/registry-password
  readOnly: true
{{- end }}
{{- if or $v.imageBuilder.registryCA.configMap $v.imageBuilder.registryCA.secret }}
- name: registry-ca
  mountPath: /etc/management-agent/ca/registry
  readOnly: true
{{- end }}
{{- if or $v.artifacts.caBundle.configMap $v.artifacts.caBundle.secret }}
- name: artifacts-ca
  mountPath: /etc/management-agent/ca/artifacts
  readOnly: true
{{- end }}
- name: downloads
  mountPath: /var/cache/management-agent
{{- if $v.imageBuilder.baseImageSecretName }}
- name: base-registry-docker-config
  mountPath: /var/run/secrets/management-agent/base-registry
  readOnly: true
{{- end }}
{{- if or $v.predictionServer.publicProbeCA.configMap $v.predictionServer.publicProbeCA.secret }}
- name: public-probe-ca
  mountPath: /etc/management-agent/ca/public
  readOnly: true
{{- end }}
{{- with $v.agent.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
