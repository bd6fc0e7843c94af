{{/*
The chart name, overridable.
*/}}
{{- define "control-plane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects, truncated to 63 characters because
Service names and label values are DNS labels (RFC 1123).
*/}}
{{- define "control-plane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "control-plane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "control-plane.labels" -}}
helm.sh/chart: {{ include "control-plane.chart" . }}
{{ include "control-plane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the server pods (immutable once installed).
*/}}
{{- define "control-plane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "control-plane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "control-plane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "control-plane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image: repository@digest or repository:tag (tag defaults to appVersion).
*/}}
{{- define "control-plane.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "control-plane.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/*
Fail early, with one clear message, on what the schema cannot express.
*/}}
{{- define "control-plane.validate" -}}
{{- $v := .Values }}
{{- if eq $v.image.repository "ghcr.io/management-agent/management-agent" }}
{{- fail "image.repository is the unpublished placeholder ghcr.io/management-agent/management-agent: build and push the image first (tools/build-agent-image --push <registry>/management-agent:<version>, README 'Install in a cluster') and set image.repository / image.tag." }}
{{- end }}
{{- if not $v.adminToken.secretName }}
{{- fail "adminToken.secretName is required: a Secret with the admin token, e.g. kubectl create secret generic control-plane-admin --from-literal=token=$(openssl rand -hex 24)" }}
{{- end }}
{{- if and (eq $v.storage.type "sqlite") (gt (int $v.replicas) 1) }}
{{- fail "replicas > 1 needs storage.type=postgresql: a SQLite file on a ReadWriteOnce volume has one writer. Use one replica, or PostgreSQL (storage.postgresql.urlSecret)." }}
{{- end }}
{{- if and (eq $v.storage.type "postgresql") (not $v.storage.postgresql.urlSecret) }}
{{- fail "storage.type=postgresql needs storage.postgresql.urlSecret: a Secret with the database URL, e.g. kubectl create secret generic control-plane-db --from-literal=url=postgresql://cp:PASSWORD@db:5432/controlplane" }}
{{- end }}
{{- if and $v.tls.enabled (not $v.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName: a kubernetes.io/tls Secret (tls.crt, tls.key), e.g. from cert-manager" }}
{{- end }}
{{- if and $v.ingress.enabled (not $v.ingress.host) }}
{{- fail "ingress.enabled needs ingress.host, e.g. control-plane.example.com" }}
{{- end }}
{{- end }}
