{{/* Object-name prefix: the release name when it already says tidepool, else <release>-tidepool. */}}
{{- define "tidepool.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tidepool.labels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tidepool.controller.serviceAccountName" -}}
{{- default (printf "%s-controller" (include "tidepool.fullname" .)) .Values.controller.serviceAccount.name -}}
{{- end -}}

{{- define "tidepool.agent.serviceAccountName" -}}
{{- default (printf "%s-agent" (include "tidepool.fullname" .)) .Values.agent.serviceAccount.name -}}
{{- end -}}

{{- define "tidepool.controller.leaseName" -}}
{{- default (printf "%s-controller" (include "tidepool.fullname" .)) .Values.controller.leaseName -}}
{{- end -}}

{{/* The user name the API server gives a ServiceAccount's tokens. */}}
{{- define "tidepool.controller.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "tidepool.controller.serviceAccountName" .) -}}
{{- end -}}

{{- define "tidepool.agent.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "tidepool.agent.serviceAccountName" .) -}}
{{- end -}}
