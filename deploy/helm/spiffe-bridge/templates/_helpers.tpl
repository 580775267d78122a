{{/* The chart's name, or nameOverride. */}}
{{- define "spiffe-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* A full name for the release's objects: fullnameOverride, or release-name[-chart]. */}}
{{- define "spiffe-bridge.fullname" -}}
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

{{- define "spiffe-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spiffe-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spiffe-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "spiffe-bridge.labels" -}}
helm.sh/chart: {{ include "spiffe-bridge.chart" . }}
{{ include "spiffe-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "spiffe-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spiffe-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "spiffe-bridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
In-pod paths, fixed by the chart: the config, the agent's socket directory and the
memory-backed directory that holds the credentials (creds/) and the gRPC socket.
*/}}
{{- define "spiffe-bridge.configDir" -}}/etc/spiffe-bridge{{- end }}
{{- define "spiffe-bridge.agentDir" -}}/spiffe-workload-api{{- end }}
{{- define "spiffe-bridge.runDir" -}}/run/spiffe-bridge{{- end }}
{{- define "spiffe-bridge.brokerDir" -}}/spiffe-broker{{- end }}
{{- define "spiffe-bridge.workloadDir" -}}/run/spiffe-bridge-workloads{{- end }}

{{/* The bridge's config file (README.md "Configuration"), from the values. */}}
{{- define "spiffe-bridge.config" -}}
{{- if and (not .Values.targets) (not (and .Values.broker.enabled .Values.workloadTargets)) }}
{{- fail "targets: list at least one target (the bridge's `targets`, README.md \"Configuration\")" }}
{{- end }}
{{- $runDir := include "spiffe-bridge.runDir" . }}
{{- $config := dict
  "workload_api" (dict
    "socket" (printf "unix://%s/%s" (include "spiffe-bridge.agentDir" .) .Values.workloadApi.socketName)
    "timeout" .Values.workloadApi.timeout)
  "outputs" (dict "directory" (printf "%s/creds" $runDir))
  "grpc" (dict "socket" (printf "unix://%s/bridge.sock" $runDir))
  "http" (dict "address" (printf "0.0.0.0:%d" (int .Values.http.port)))
  "refresh" (dict "concurrency" (int .Values.refresh.concurrency))
  "targets" (.Values.targets | default list) }}
{{- if .Values.broker.enabled }}
{{- if not .Values.workloadTargets }}
{{- fail "broker.enabled: list the rules in workloadTargets" }}
{{- end }}
{{- $_ := set $config "broker" (dict
  "socket" (printf "unix://%s/%s" (include "spiffe-bridge.brokerDir" .) .Values.broker.socketName)
  "agent_id" (required "broker.agentId is required (the agents' SPIFFE ID, or a prefix ending in /*)" .Values.broker.agentId)
  "spiffe_id" (required "broker.spiffeId is required (the bridge's own SPIFFE ID)" .Values.broker.spiffeId)
  "timeout" .Values.broker.timeout) }}
{{- $_ := set $config "workloads" (dict
  "grpc_socket" (printf "unix://%s/workload.sock" (include "spiffe-bridge.workloadDir" .))
  "idle" .Values.broker.idle
  "max_identities" (int .Values.broker.maxIdentities)) }}
{{- $_ := set $config "workload_targets" .Values.workloadTargets }}
{{- end }}
{{- toYaml (mustMergeOverwrite $config (deepCopy .Values.configOverride)) }}
{{- end }}
