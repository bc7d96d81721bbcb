{{/* Labels of every object; the name/component/part-of ones are those of config/default. */}}
{{- define "kubernaut.labels" -}}
app.kubernetes.io/part-of: kubernaut
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Selector of one component's pods (immutable once installed: the same as config/default). */}}
{{- define "kubernaut.selector" -}}
app.kubernetes.io/name: kubernaut
app.kubernetes.io/component: {{ . }}
{{- end }}

{{- define "kubernaut.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The controllers that are enabled, in a fixed order. */}}
{{- define "kubernaut.enabled" -}}
{{- range $name := list "orchestrator" "executor" "notifier" "gateway" }}
{{- if (index $.Values.controllers $name).enabled }}{{ $name }} {{ end }}
{{- end }}
{{- end }}

{{/* The controllers that elect a leader (all but the gateway), enabled ones only. */}}
{{- define "kubernaut.leaderElected" -}}
{{- range $name := list "orchestrator" "executor" "notifier" }}
{{- if (index $.Values.controllers $name).enabled }}{{ $name }} {{ end }}
{{- end }}
{{- end }}

{{- define "kubernaut.webhookEnabled" -}}
{{- if and .Values.webhook.enabled .Values.controllers.executor.enabled }}true{{ end }}
{{- end }}

{{/* The operator's config file (`--config`): config/manager/config.yaml with the values put in. */}}
{{- define "kubernaut.config" -}}
{{- $ns := .Release.Namespace -}}
{{- $v := .Values -}}
{{- $cfg := dict
  "execution" (dict "namespace" $v.execution.namespace "serviceAccount" $v.execution.serviceAccount "cooldown" $v.execution.cooldown)
  "audit" (dict "url" $v.audit.url)
  "gateway" (dict "listen" "0.0.0.0:8080" "namespace" $ns "bearerTokenSecret" (printf "%s/%s:%s" $ns $v.gateway.tokenSecret.name $v.gateway.tokenSecret.key))
  "manager" (dict
    "metricsAddress" "0.0.0.0:9090"
    "shutdownGracePeriod" $v.manager.shutdownGracePeriod
    "resyncPeriod" $v.manager.resyncPeriod
    "leaderElection" (dict "namespace" $ns "leaseDuration" $v.manager.leaderElection.leaseDuration "renewDeadline" $v.manager.leaderElection.renewDeadline "retryPeriod" $v.manager.leaderElection.retryPeriod))
  "client" (dict "qps" $v.client.qps "burst" $v.client.burst)
  "dryRun" $v.dryRun
  "scope" $v.scope
  "limits" $v.limits
  "breaker" $v.breaker
  "approval" $v.approval
  "effectiveness" $v.effectiveness
-}}
{{- if $v.notifier.slack.webhookUrlKey }}
{{- $_ := set $cfg "notifier" (dict "slack" (dict "webhookUrlSecret" (printf "%s/%s:%s" $ns $v.notifier.channelsSecret $v.notifier.slack.webhookUrlKey))) }}
{{- end }}
{{- toYaml (mergeOverwrite $cfg (deepCopy $v.extraConfig)) }}
{{- end }}
