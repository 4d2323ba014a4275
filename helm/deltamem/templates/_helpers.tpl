{{- define "deltamem.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "deltamem.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "deltamem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deltamem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "deltamem.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "deltamem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "deltamem.image" -}}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* Several replicas (or an autoscaler that may make them) must share the Redis store. */}}
{{- define "deltamem.checkStore" -}}
{{- $many := or (gt (int .Values.replicaCount) 1) (and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) 1)) -}}
{{- if and $many (ne .Values.store.type "redis") -}}
{{- fail "more than one replica needs store.type=redis: a SQLite store belongs to one pod" -}}
{{- end -}}
{{- if and (eq .Values.store.type "redis") (not .Values.store.redis.urlSecret) -}}
{{- fail "store.type=redis needs store.redis.urlSecret (an existing Secret with the redis:// URL)" -}}
{{- end -}}
{{- if and .Values.tls.clientCASecret (not .Values.tls.existingSecret) -}}
{{- fail "tls.clientCASecret (mutual TLS) needs tls.existingSecret too" -}}
{{- end -}}
{{- end -}}
