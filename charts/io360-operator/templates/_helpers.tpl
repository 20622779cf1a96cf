{{/* The release's full name, at most 63 characters. */}}
{{- define "io360-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "io360-operator.serviceAccountName" -}}
{{- default (include "io360-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "io360-operator.selectorLabels" -}}
app.kubernetes.io/name: io360-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "io360-operator.labels" -}}
{{ include "io360-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* What the operator may do to CommentClusters and their children. */}}
{{- define "io360-operator.rules" -}}
- apiGroups: ["io360.dev"]
  resources: ["commentclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["io360.dev"]
  resources: ["commentclusters/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# The tier keys Secret: read by name, created and updated by server-side apply. No list or
# watch, so no other Secret's contents ever reach the operator.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# Pods are only read, to say in status why a tier is not ready (image pull, crash loop).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies", "ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# The tiers' Role lets them read their own control ConfigMap; granting it needs the same
# ConfigMap permissions above (no escalate or bind verbs).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
