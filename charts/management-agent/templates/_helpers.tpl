{{/*
The chart name, overridable.
*/}}
{{- define "management-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects.
Truncated to 63 characters because Kubernetes names that end up in DNS
(Service names, label values) may not be longer (RFC 1123 label).
*/}}
{{- define "management-agent.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "management-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "management-agent.labels" -}}
helm.sh/chart: {{ include "management-agent.chart" . }}
{{ include "management-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the agent's pods (immutable once installed).
*/}}
{{- define "management-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "management-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The agent's service account.
*/}}
{{- define "management-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "management-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image builder's service account: the agent's own with the direct builder
(it builds in the agent's process), a separate one for Kaniko Jobs.
*/}}
{{- define "management-agent.builderServiceAccountName" -}}
{{- if eq .Values.imageBuilder.builder "kaniko" }}
{{- if .Values.imageBuilder.serviceAccount.create }}
{{- default (printf "%s-image-builder" (include "management-agent.fullname" . | trunc 49 | trimSuffix "-")) .Values.imageBuilder.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.imageBuilder.serviceAccount.name }}
{{- end }}
{{- else }}
{{- include "management-agent.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/*
The agent image: repository@digest or repository:tag (tag defaults to appVersion).
*/}}
{{- define "management-agent.image" -}}
{{- $image := .Values.agent.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/*
Namespace of the prediction servers (and of the agent's Role).
*/}}
{{- define "management-agent.predictionNamespace" -}}
{{- default .Release.Namespace .Values.predictionServer.namespace }}
{{- end }}

{{/*
Fail early, with one clear message, on combinations the schema cannot express.
*/}}
{{- define "management-agent.validate" -}}
{{- $v := .Values }}
{{- if and $v.imageBuilder.configMap $v.imageBuilder.secretName }}
{{- fail "imageBuilder.configMap and imageBuilder.secretName are mutually exclusive: Kaniko reads exactly one /kaniko/.docker/config.json. Use secretName for a kubernetes.io/dockerconfigjson Secret (ACR, OpenShift, Docker Hub) or configMap for a credential-helper config such as {\"credsStore\":\"ecr-login\"} (ECR)." }}
{{- end }}
{{- range $path, $ref := dict "caBundle" $v.caBundle "controlPlane.caBundle" $v.controlPlane.caBundle "imageBuilder.registryCA" $v.imageBuilder.registryCA "artifacts.caBundle" $v.artifacts.caBundle "predictionServer.publicProbeCA" $v.predictionServer.publicProbeCA }}
{{- if and $ref.configMap $ref.secret }}
{{- fail (printf "%s.configMap and %s.secret are mutually exclusive: name the one object that holds the CA certificates." $path $path) }}
{{- end }}
{{- end }}
{{- if and (eq $v.controlPlane.kind "native") (not $v.controlPlane.url) }}
{{- fail "controlPlane.url is required with controlPlane.kind=native: the URL of the control plane, e.g. https://control-plane.example.com" }}
{{- end }}
{{- if and (eq $v.controlPlane.kind "mlflow") (not $v.controlPlane.mlflow.trackingUri) }}
{{- fail "controlPlane.mlflow.trackingUri is required with controlPlane.kind=mlflow, e.g. http://mlflow.mlflow.svc:5000" }}
{{- end }}
{{- if and (ne $v.imageBuilder.builder "none") (not $v.imageBuilder.generatedImageRepository) }}
{{- fail (printf "imageBuilder.generatedImageRepository is required with imageBuilder.builder=%s: the repository that receives model images, e.g. registry.example.com/models" $v.imageBuilder.builder) }}
{{- end }}
{{- if eq $v.agent.image.repository "ghcr.io/management-agent/management-agent" }}
{{- fail "agent.image.repository is the unpublished placeholder ghcr.io/management-agent/management-agent: no such image exists, so the agent pod would never start (ImagePullBackOff). Build and push the agent image to your registry first: tools/build-agent-image --push <registry>/management-agent:<version> (README, 'Install in a cluster'); it prints the --set lines for agent.image.repository and agent.image.tag." }}
{{- end }}
{{- if and (gt (int $v.agent.replicas) 1) (not $v.agent.leaderElection.enabled) }}
{{- fail "agent.replicas > 1 needs agent.leaderElection.enabled=true: without it several agents would run the same actions." }}
{{- end }}
{{- $builtin := list "mlserver" "mlflow-pyfunc" "kserve" "custom" }}
{{- if not (or (has $v.predictionServer.defaultServerProfile $builtin) (hasKey $v.predictionServer.serverProfiles $v.predictionServer.defaultServerProfile)) }}
{{- fail (printf "predictionServer.defaultServerProfile %q is neither a built-in profile (%s) nor a key of predictionServer.serverProfiles" $v.predictionServer.defaultServerProfile (join ", " $builtin)) }}
{{- end }}
{{- if and (eq $v.imageBuilder.builder "kaniko") $v.imageBuilder.registryCA.secret }}
{{- fail "imageBuilder.registryCA.secret cannot reach Kaniko, which reads registry CA certificates from a ConfigMap: put the PEM into a ConfigMap and set imageBuilder.registryCA.configMap instead." }}
{{- end }}
{{- if and (eq $v.imageBuilder.registryAuth "basic") (not $v.imageBuilder.passwordSecret.name) }}
{{- fail "imageBuilder.registryAuth=basic needs imageBuilder.username and imageBuilder.passwordSecret.name" }}
{{- end }}
{{- if and (eq $v.imageBuilder.registryAuth "dockerconfig") (not $v.imageBuilder.secretName) }}
{{- fail "imageBuilder.registryAuth=dockerconfig needs imageBuilder.secretName (a kubernetes.io/dockerconfigjson Secret)" }}
{{- end }}
{{- end }}
