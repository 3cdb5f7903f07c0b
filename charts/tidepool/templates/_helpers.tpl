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

{{/* Labels that select one component's Pods (stable across upgrades). */}}
{{- define "tidepool.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tidepool.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The agent groups to render: the configured ones, or one unnamed group for every node. */}}
{{- define "tidepool.agent.groups" -}}
{{- if .Values.agent.groups -}}
{{- toJson .Values.agent.groups -}}
{{- else -}}
{{- toJson (list (dict "name" "")) -}}
{{- end -}}
{{- end -}}

{{/* Where the image's zfs/zpool wrappers (chroot into the host root) are. */}}
{{- define "tidepool.agent.zfsBinDir" -}}/usr/local/lib/tidepool/host-zfs{{- end -}}

{{- define "tidepool.np.apiServer" -}}
# The API server (watches, status, Leases, TokenReviews).
- ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- with .Values.networkPolicy.apiServer.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
# DNS.
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{- define "tidepool.np.metricsIngress" -}}
- ports:
    - {protocol: TCP, port: {{ .port }}}
  {{- with .from }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The runbook annotations of one alert (the anchor is its name in lower case). */}}
{{- define "tidepool.runbook" -}}
runbook: {{ printf "docs/runbooks.md#%s" (lower .alert) }}
{{- with .base }}
runbook_url: {{ printf "%s#%s" . (lower $.alert) }}
{{- end }}
{{- end }}
