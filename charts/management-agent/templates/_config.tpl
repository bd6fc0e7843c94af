{{/*
The agent's config file (agent/config.py Settings, snake_case keys), built from the values.
Most settings are copied by the generated table in _settings.tpl (tools/gen-chart); this file
adds what the chart wires itself: files it mounts ("management-agent.mounts" in _pod.tpl),
names it derives, and fallbacks between values. agent.extraConfig is merged last.
*/}}
{{- define "management-agent.configData" -}}
{{- $v := .Values }}
{{- $config := dict }}
{{- $_ := include "management-agent.applySettingsMap" (dict "root" . "config" $config) }}
{{- $files := dict }}
{{- range (include "management-agent.mounts" . | fromYaml).mounts }}
{{- $_ := set $files .name (ternary (printf "%s/%s" .dir .file) .dir (hasKey . "file")) }}
{{- end }}
{{- /* tls: one CA for every client (and the pods the agent renders) */}}
{{- $tls := dict "ca_key" $v.caBundle.key }}
{{- with $files.tlsCA }}{{ $_ := set $tls "ca_bundle" . }}{{ end }}
{{- with $v.caBundle.configMap }}{{ $_ := set $tls "ca_config_map" . }}{{ end }}
{{- with $v.caBundle.secret }}{{ $_ := set $tls "ca_secret" . }}{{ end }}
{{- $_ := set $config "tls" $tls }}
{{- /* control_plane */}}
{{- $cp := $config.control_plane }}
{{- $mlflow := $cp.mlflow }}
{{- with $files.controlPlaneCA }}{{ $_ := set $cp "ca_bundle" . }}{{ $_ := set $mlflow "ca_bundle" . }}{{ end }}
{{- with $files.mlflowToken }}{{ $_ := set $mlflow "token_file" . }}{{ end }}
{{- /* runtime */}}
{{- $leader := $config.runtime.leader_election }}
{{- $_ := set $leader "lease_name" (default (include "management-agent.fullname" .) $v.agent.leaderElection.leaseName) }}
{{- $_ := set $leader "namespace" (include "management-agent.predictionNamespace" .) }}
{{- $_ := set $config "health" (merge $config.health (dict "enabled" true "host" "0.0.0.0")) }}
{{- /* plugin.kubernetes */}}
{{- $kube := $config.plugin.kubernetes }}
{{- $_ := set $config.plugin "name" "kubernetes" }}
{{- $_ := set $kube "namespace" (include "management-agent.predictionNamespace" .) }}
{{- $_ := set $kube "in_cluster" true }}
{{- $_ := set $kube "agent_image" (include "management-agent.image" .) }}
{{- $_ := set $kube.network_policy "agent_pod_labels" (include "management-agent.selectorLabels" . | fromYaml) }}
{{- $own := list (printf "%s/%s" .Release.Namespace (include "management-agent.serviceAccountName" .)) (printf "%s/%s" (include "management-agent.predictionNamespace" .) (include "management-agent.builderServiceAccountName" .)) }}
{{- $_ := set $kube.deployment_policy "agent_service_accounts" ($own | uniq) }}
{{- with $files.publicProbeCA }}{{ $_ := set $kube "public_probe_ca_bundle" . }}{{ end }}
{{- /* images */}}
{{- $ib := $v.imageBuilder }}
{{- $images := $config.images }}
{{- with $files.registryPassword }}{{ $_ := set $images.credentials "password_file" . }}{{ end }}
{{- with $files.registryDockerConfig }}{{ $_ := set $images.credentials "docker_config_file" . }}{{ end }}
{{- with $files.registryCA }}{{ $_ := set $images "ca_bundle" . }}{{ end }}
{{- with $files.indexCredentials }}{{ $_ := set $images.dependencies "index_credentials_file" . }}{{ end }}
{{- with $files.baseRegistryDockerConfig }}{{ $_ := set $images "base_credentials" (dict "provider" "dockerconfig" "docker_config_file" .) }}{{ end }}
{{- $kaniko := $images.kaniko }}
{{- $_ := set $kaniko "fetcher_image" (include "management-agent.image" .) }}
{{- $_ := set $kaniko "namespace" (include "management-agent.predictionNamespace" .) }}
{{- $_ := set $kaniko "service_account" (include "management-agent.builderServiceAccountName" .) }}
{{- with $ib.secretName }}{{ $_ := set $kaniko "secret_name" . }}{{ end }}
{{- with (default $v.artifacts.defaultCredentialsSecret $ib.kaniko.modelCredentialsSecret) }}{{ $_ := set $kaniko "model_credentials_secret" . }}{{ end }}
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
{{- /* artifacts */}}
{{- $artifacts := $config.artifacts }}
{{- $_ := set $artifacts "cache_dir" $files.downloads }}
{{- with $files.artifactsCA }}{{ $_ := set $artifacts "ca_bundle" . }}{{ end }}
{{- if $v.artifacts.mlflowTrackingUri }}
{{- $_ := set $artifacts "mlflow_tracking_uri" $v.artifacts.mlflowTrackingUri }}
{{- else if and (eq $v.controlPlane.kind "mlflow") $v.controlPlane.mlflow.trackingUri }}
{{- $_ := set $artifacts "mlflow_tracking_uri" $v.controlPlane.mlflow.trackingUri }}
{{- end }}
{{- $config = mustMergeOverwrite $config (deepCopy $v.agent.extraConfig) }}
{{- toYaml $config }}
{{- end }}

{{/*
Copies every value listed in the generated "management-agent.settingsMap" into .config (a
dict, changed in place). Called with (dict "root" $ "config" $config); prints nothing.
*/}}
{{- define "management-agent.applySettingsMap" -}}
{{- $config := .config }}
{{- range (include "management-agent.settingsMap" .root | fromYaml).entries }}
{{- $value := $.root.Values }}
{{- $found := true }}
{{- range splitList "." .values }}
{{- if and $found (kindIs "map" $value) (hasKey $value .) }}{{ $value = index $value . }}{{ else }}{{ $found = false }}{{ end }}
{{- end }}
{{- if $found }}
{{- $node := $config }}
{{- $path := splitList "." .settings }}
{{- range initial $path }}
{{- if not (hasKey $node .) }}{{ $_ := set $node . dict }}{{ end }}
{{- $node = index $node . }}
{{- end }}
{{- $key := last $path }}
{{- if kindIs "invalid" $value }}
{{- if eq .unset "null" }}{{ $_ := set $node $key nil }}{{ end }}
{{- else if and (kindIs "string" $value) (eq $value "") }}
{{- if eq .unset "null" }}{{ $_ := set $node $key nil }}{{ else if eq .unset "keep" }}{{ $_ := set $node $key "" }}{{ end }}
{{- else if eq .type "integer" }}{{ $_ := set $node $key (int64 $value) }}
{{- else if eq .type "string" }}{{ $_ := set $node $key (toString $value) }}
{{- else if eq .type "models" }}
{{- $models := dict }}
{{- $keys := .keys }}
{{- range $name, $item := $value }}
{{- if $item }}
{{- $model := dict }}
{{- range $from, $to := $keys }}{{ if hasKey $item $from }}{{ $_ := set $model $to (index $item $from) }}{{ end }}{{ end }}
{{- $_ := set $models $name $model }}
{{- end }}
{{- end }}
{{- $_ := set $node $key $models }}
{{- else }}{{ $_ := set $node $key (deepCopy $value) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
