{{/* The release's full name, at most 63 characters. */}}
{{- define "stevedore.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stevedore.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stevedore.labels" -}}
{{ include "stevedore.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "stevedore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "stevedore.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules the controller needs on the objects it manages (src/controller/rbac.rs). */}}
{{- define "stevedore.rules" -}}
- apiGroups: [stevedore.dev]
  resources: [dockercontainers]
  verbs: [list, watch, patch]
- apiGroups: [stevedore.dev]
  resources: [dockercontainers/status]
  verbs: [patch]
- apiGroups: [stevedore.dev]
  resources: [dockertargets]
  verbs: [list, watch, patch]
- apiGroups: [stevedore.dev]
  resources: [dockertargets/status]
  verbs: [patch]
- apiGroups: [stevedore.dev]
  resources: [registries]
  verbs: [list, watch]
- apiGroups: [stevedore.dev]
  resources: [registries/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
