{{/* Names and labels shared by every object of the release. */}}

{{- define "incident-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "incident-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "incident-operator.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "incident-operator.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "incident-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "incident-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: call with (list $ "operator"). */}}
{{- define "incident-operator.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "incident-operator.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "incident-operator.componentLabels" -}}
{{ include "incident-operator.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "incident-operator.operatorAccount" -}}
{{- default (printf "%s-operator" (include "incident-operator.fullname" .)) .Values.operator.serviceAccount.name }}
{{- end }}

{{- define "incident-operator.webhookAccount" -}}
{{- default (printf "%s-webhook" (include "incident-operator.fullname" .)) .Values.webhook.serviceAccount.name }}
{{- end }}

{{- define "incident-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "incident-operator.incidentNamespace" -}}
{{- default .Release.Namespace .Values.incidentNamespace }}
{{- end }}

{{/* The operator replicas' Lease (leader election), in the release's namespace. */}}
{{- define "incident-operator.leaseName" -}}
{{- printf "%s-operator" (include "incident-operator.fullname" .) }}
{{- end }}

{{/* The `config` map as env entries; empty values are left out so defaults apply. */}}
{{- define "incident-operator.configEnv" -}}
{{- range $name, $value := .Values.config }}
{{- if ne (toString $value) "" }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Keys of the integrations' Secret: call with (list $ "KEY" ...). Optional:
     an absent key leaves the variable unset and its integration off. */}}
{{- define "incident-operator.secretEnv" -}}
{{- $ := index . 0 }}
{{- if $.Values.secrets.existingSecret }}
{{- range $key := rest . }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.secrets.existingSecret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}
{{- end }}

{{/* Hardening shared by both pods. Python writes nothing outside /tmp. */}}
{{- define "incident-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "incident-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end }}

{{/* What the operator does to Incidents, policies and Events, wherever it watches. */}}
{{- define "incident-operator.operatorRules" -}}
- apiGroups: [incident-response.dev]
  resources: [incidents]
  verbs: [get, list, watch, delete]
- apiGroups: [incident-response.dev]
  resources: [incidents/status]
  verbs: [patch]
- apiGroups: [incident-response.dev]
  resources: [responsepolicies]
  verbs: [list, watch]
- apiGroups: [incident-response.dev]
  resources: [silences]
  verbs: [get, list, watch, delete]
- apiGroups: [incident-response.dev]
  resources: [silences/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Egress both pods need (networkPolicy.*): DNS, the Kubernetes API server,
     the integrations over HTTPS, and the user's extra rules. A rule without
     `to` allows any address on its ports. */}}
{{- define "incident-operator.networkPolicyEgress" -}}
{{- $policy := .Values.networkPolicy -}}
# DNS
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
  {{- with $policy.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# The Kubernetes API server, at its endpoints' addresses and ports (what a
# policy sees once the `kubernetes` Service's address is translated).
- ports:
    {{- range $policy.apiServer.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- with $policy.apiServer.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
# The integrations: AWS APIs, Gemini, Slack, Jira, SNS signing certificates.
- ports:
    {{- range $policy.integrations.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- with $policy.integrations.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
{{- with $policy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Who may reach a pod's one port: call with (list $ "port name or number" peers). */}}
{{- define "incident-operator.networkPolicyIngress" -}}
{{- $port := index . 1 -}}
- ports:
    - {protocol: TCP, port: {{ $port }}}
  {{- with index . 2 }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{- define "incident-operator.uiAccount" -}}
{{- default (printf "%s-ui" (include "incident-operator.fullname" .)) .Values.ui.serviceAccount.name }}
{{- end }}
