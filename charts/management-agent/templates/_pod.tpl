{{/*
The agent container's mounts, each written once: `name` (how _config.tpl refers to it),
the volume, the directory, the file inside it and where the file comes from (`secret` or
`configMap` with its `item` key, or an `emptyDir` size). Only the mounts the values ask for
are listed; the config points settings at <dir>/<file>, the pod mounts <dir>.
*/}}
{{- define "management-agent.mounts" -}}
{{- $v := .Values }}
mounts:
  - {name: config, volume: config, dir: /etc/management-agent, file: config.yaml, subPath: true, configMap: {{ include "management-agent.fullname" . | quote }}, item: config.yaml}
  - {name: tmp, volume: tmp, dir: /tmp, emptyDir: {{ $v.agent.tmpSizeLimit | quote }}}
{{- with $v.controlPlane.apiTokenSecret }}{{ if .name }}
  - {name: controlPlaneToken, volume: control-plane-token, dir: /var/run/secrets/management-agent/control-plane, file: token, secret: {{ .name | quote }}, item: {{ .key | quote }}}
{{- end }}{{ end }}
{{- with $v.caBundle }}{{ if or .configMap .secret }}
  - {name: tlsCA, volume: ca-bundle, dir: /etc/management-agent/ca/all, file: ca.crt, configMap: {{ .configMap | quote }}, secret: {{ .secret | quote }}, item: {{ .key | quote }}}
{{- end }}{{ end }}
{{- with $v.controlPlane.caBundle }}{{ if or .configMap .secret }}
  - {name: controlPlaneCA, volume: control-plane-ca, dir: /etc/management-agent/ca/control-plane, file: ca.crt, configMap: {{ .configMap | quote }}, secret: {{ .secret | quote }}, item: {{ .key | quote }}}
{{- end }}{{ end }}
{{- with $v.controlPlane.mlflow.tokenSecret }}{{ if .name }}
  - {name: mlflowToken, volume: mlflow-token, dir: /var/run/secrets/management-agent/mlflow, file: token, secret: {{ .name | quote }}, item: {{ .key | quote }}}
{{- end }}{{ end }}
{{- with $v.imageBuilder.secretName }}
  - {name: registryDockerConfig, volume: registry-docker-config, dir: /var/run/secrets/management-agent/registry, file: config.json, secret: {{ . | quote }}, item: .dockerconfigjson}
{{- end }}
{{- with $v.imageBuilder.passwordSecret }}{{ if .name }}
  - {name: registryPassword, volume: registry-password, dir: /var/run/secrets/management-agent/registry-password, file: password, secret: {{ .name | quote }}, item: {{ .key | quote }}}
{{- end }}{{ end }}
{{- with $v.imageBuilder.dependencies.indexCredentialsSecret }}{{ if .name }}
  - {name: indexCredentials, volume: index-credentials, dir: /var/run/secrets/management-agent/index, file: netrc, secret: {{ .name | quote }}, item: {{ .key | quote }}}
{{- end }}{{ end }}
{{- with $v.imageBuilder.registryCA }}{{ if or .configMap .secret }}
  - {name: registryCA, volume: registry-ca, dir: /etc/management-agent/ca/registry, file: ca.crt, configMap: {{ .configMap | quote }}, secret: {{ .secret | quote }}, item: {{ .key | quote }}}
{{- end }}{{ end }}
{{- with $v.artifacts.caBundle }}{{ if or .configMap .secret }}
  - {name: artifactsCA, volume: artifacts-ca, dir: /etc/management-agent/ca/artifacts, file: ca.crt, configMap: {{ .configMap | quote }}, secret: {{ .secret | quote }}, item: {{ .key | quote }}}
{{- end }}{{ end }}
  - {name: downloads, volume: downloads, dir: /var/cache/management-agent, emptyDir: {{ $v.artifacts.downloadSizeLimit | quote }}}
{{- with $v.imageBuilder.baseImageSecretName }}
  - {name: baseRegistryDockerConfig, volume: base-registry-docker-config, dir: /var/run/secrets/management-agent/base-registry, file: config.json, secret: {{ . | quote }}, item: .dockerconfigjson}
{{- end }}
{{- with $v.predictionServer.publicProbeCA }}{{ if or .configMap .secret }}
  - {name: publicProbeCA, volume: public-probe-ca, dir: /etc/management-agent/ca/public, file: ca.crt, configMap: {{ .configMap | quote }}, secret: {{ .secret | quote }}, item: {{ .key | quote }}}
{{- end }}{{ end }}
{{- end }}

{{/*
Environment of the agent container (and of the helm test pod).
*/}}
{{- define "management-agent.env" -}}
{{- $files := dict }}
{{- range (include "management-agent.mounts" . | fromYaml).mounts }}
{{- if .file }}{{ $_ := set $files .name (printf "%s/%s" .dir .file) }}{{ end }}
{{- end }}
- name: MGMT_AGENT_CONFIG
  value: {{ $files.config }}
{{- with $files.controlPlaneToken }}
- name: MGMT_AGENT_CONTROL_PLANE__TOKEN_FILE
  value: {{ . }}
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
Volumes of the agent pod (and of the helm test pod): one per mount, then agent.extraVolumes.
*/}}
{{- define "management-agent.volumes" -}}
{{- range (include "management-agent.mounts" . | fromYaml).mounts }}
- name: {{ .volume }}
{{- if .emptyDir }}
  emptyDir:
    sizeLimit: {{ .emptyDir }}
{{- else if .configMap }}
  configMap:
    name: {{ .configMap }}
    items:
      - key: {{ .item }}
        path: {{ .file }}
{{- else }}
  secret:
    secretName: {{ .secret }}
    items:
      - key: {{ .item }}
        path: {{ .file }}
{{- end }}
{{- end }}
{{- with .Values.agent.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volume mounts of the agent container (and of the helm test container).
*/}}
{{- define "management-agent.volumeMounts" -}}
{{- range (include "management-agent.mounts" . | fromYaml).mounts }}
- name: {{ .volume }}
{{- if .subPath }}
  mountPath: {{ .dir }}/{{ .file }}
  subPath: {{ .file }}
{{- else }}
  mountPath: {{ .dir }}
{{- end }}
{{- if not .emptyDir }}
  readOnly: true
{{- end }}
{{- end }}
{{- with .Values.agent.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
