{{/* The platform contract: each service's port. Not configurable. */}}
{{- define "trader.ports" -}}
ratelimit: 8001
universe: 8002
strategy: 8003
executor: 8004
exchange_sim: 8010
{{- end }}

{{/* The services that run: every one, exchange_sim only in sim mode. Returns a YAML list. */}}
{{- define "trader.enabledServices" -}}
{{- range $name := list "ratelimit" "universe" "strategy" "executor" "exchange_sim" }}
{{- if or (ne $name "exchange_sim") (eq $.Values.exchange.mode "sim") }}
- {{ $name }}
{{- end }}
{{- end }}
{{- end }}

{{/* Who calls whom (the URLs each service uses): callee -> callers. exchange_sim is the sim exchange. */}}
{{- define "trader.callers" -}}
ratelimit: [universe, strategy, executor]
universe: [strategy]
executor: [strategy]
strategy: []
exchange_sim: [universe, strategy, executor]
{{- end }}

{{- define "trader.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trader.fullname" -}}
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

{{/* A service's component name (DNS-safe): exchange_sim -> exchange-sim. Call with (dict "root" $ "name" $name). */}}
{{- define "trader.component" -}}
{{- .name | replace "_" "-" }}
{{- end }}

{{- define "trader.componentFullname" -}}
{{- printf "%s-%s" (include "trader.fullname" .root) (include "trader.component" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trader.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trader.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ include "trader.component" . }}
{{- end }}

{{- define "trader.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "trader.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: trader-stack
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of objects that belong to no one component (Secret, ConfigMaps, rules). */}}
{{- define "trader.releaseLabels" -}}
{{ include "trader.labels" (dict "root" . "name" "stack") }}
{{- end }}

{{- define "trader.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "trader.redisImage" -}}
{{- if .Values.redis.image.digest }}
{{- printf "%s@%s" .Values.redis.image.repository .Values.redis.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.redis.image.repository .Values.redis.image.tag }}
{{- end }}
{{- end }}

{{- define "trader.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trader.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the tokens (and in live mode the Coinbase key). */}}
{{- define "trader.secretName" -}}
{{- default (include "trader.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "trader.redisName" -}}
{{- printf "%s-redis" (include "trader.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* host:port of each in-chart Sentinel-mode pod's Redis (port 6379) or Sentinel (26379), by ordinal, space-separated.
Call with (dict "root" $ "port" 6379). */}}
{{- define "trader.redisNodes" -}}
{{- $root := .root }}
{{- $name := include "trader.redisName" $root }}
{{- $nodes := list }}
{{- range $i := until (int $root.Values.redis.sentinel.replicas) }}
{{- $nodes = append $nodes (printf "%s-%d.%s.%s.svc.%s:%v" $name $i $name $root.Release.Namespace $root.Values.clusterDomain $.port) }}
{{- end }}
{{- join " " $nodes }}
{{- end }}

{{/* An external Redis's URL: redis.external.url, else one built from redis.external.sentinel's hosts and master. */}}
{{- define "trader.externalRedisUrl" -}}
{{- $e := .Values.redis.external }}
{{- if $e.url }}
{{- $e.url }}
{{- else if $e.sentinel.hosts }}
{{- printf "redis+sentinel://%s/%s/%v" (join "," $e.sentinel.hosts) $e.sentinel.masterName $e.sentinel.db }}
{{- end }}
{{- end }}

{{/* The REDIS_URL every service gets for the in-chart Redis (external: from a Secret, see deployments.yaml). */}}
{{- define "trader.redisUrl" -}}
{{- if eq .Values.redis.mode "sentinel" }}
{{- printf "redis+sentinel://%s/%s/0" (include "trader.redisNodes" (dict "root" . "port" 26379) | replace " " ",") .Values.redis.sentinel.masterName }}
{{- else }}
{{- printf "redis://%s:6379/0" (include "trader.redisName" .) }}
{{- end }}
{{- end }}

{{/* The environment of files/redis/*.sh in each Sentinel-mode pod. */}}
{{- define "trader.redisScriptEnv" -}}
{{- $s := .Values.redis.sentinel -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: REDIS_NODES
  value: {{ include "trader.redisNodes" (dict "root" . "port" 6379) | quote }}
- name: SENTINEL_NODES
  value: {{ include "trader.redisNodes" (dict "root" . "port" 26379) | quote }}
- name: MASTER_NAME
  value: {{ $s.masterName | quote }}
- name: QUORUM
  value: {{ $s.quorum | quote }}
- name: DOWN_AFTER_MS
  value: {{ $s.downAfterMilliseconds | quote }}
- name: FAILOVER_TIMEOUT_MS
  value: {{ $s.failoverTimeoutMilliseconds | quote }}
- name: PARALLEL_SYNCS
  value: {{ $s.parallelSyncs | quote }}
- name: MIN_REPLICAS_TO_WRITE
  value: {{ $s.minReplicasToWrite | quote }}
- name: MIN_REPLICAS_MAX_LAG
  value: {{ $s.minReplicasMaxLagSeconds | quote }}
- name: DATA_DIR
  value: /data
{{- end }}

{{- define "trader.configName" -}}
{{- printf "%s-config" (include "trader.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* True (non-empty) when the cluster serves the Prometheus operator's API. */}}
{{- define "trader.hasPrometheusOperator" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/* Every service's URL, as the other services use it. */}}
{{- define "trader.serviceUrl" -}}
{{- $ports := include "trader.ports" .root | fromYaml }}
{{- printf "http://%s:%v" (include "trader.componentFullname" .) (get $ports .name) }}
{{- end }}

{{- define "trader.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "trader.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Refuse values that cannot work; called from the templates that need them so `helm template` and install both
stop with one clear line.
*/}}
{{- define "trader.validate" -}}
{{- $mode := .Values.exchange.mode }}
{{- if eq $mode "live" }}
  {{- if not .Values.secrets.existingSecret }}
    {{- $missing := list }}
    {{- range $key, $var := dict "apiToken" "TRADER_API_TOKEN" "operatorToken" "TRADER_OPERATOR_TOKEN" "coinbaseApiKeyName" "COINBASE_API_KEY_NAME" "coinbaseApiKeySecret" "COINBASE_API_KEY_SECRET" }}
      {{- if not (get $.Values.secrets $key) }}{{ $missing = append $missing (printf "secrets.%s" $key) }}{{ end }}
    {{- end }}
    {{- if $missing }}
      {{- fail (printf "exchange.mode=live trades real money and needs credentials: set secrets.existingSecret (a Secret with TRADER_API_TOKEN, TRADER_OPERATOR_TOKEN, COINBASE_API_KEY_NAME, COINBASE_API_KEY_SECRET) or give %s" (join ", " (sortAlpha $missing))) }}
    {{- end }}
    {{- if eq .Values.secrets.apiToken .Values.secrets.operatorToken }}
      {{- fail "exchange.mode=live: secrets.apiToken and secrets.operatorToken must differ" }}
    {{- end }}
    {{- if or (eq .Values.secrets.apiToken "dev-token-change-me") (eq .Values.secrets.operatorToken "dev-operator-token-change-me") }}
      {{- fail "exchange.mode=live: the development tokens are refused; give real secrets.apiToken and secrets.operatorToken" }}
    {{- end }}
  {{- end }}
{{- end }}
{{- if eq .Values.redis.mode "external" }}
  {{- $e := .Values.redis.external }}
  {{- if and $e.sentinel.hosts (not $e.sentinel.masterName) }}
    {{- fail "redis.external.sentinel.hosts needs redis.external.sentinel.masterName: the name the sentinels monitor the master by" }}
  {{- end }}
  {{- if and $e.url $e.sentinel.hosts }}
    {{- fail "redis.external.url and redis.external.sentinel.hosts both given: set one" }}
  {{- end }}
  {{- if not (or $e.url $e.existingSecret $e.sentinel.hosts) }}
    {{- fail "redis.mode=external needs redis.external.url (redis://, rediss:// or redis+sentinel://host1:26379,host2:26379/mymaster/0), redis.external.sentinel.hosts with its masterName, or redis.external.existingSecret" }}
  {{- end }}
{{- end }}
{{- if eq .Values.redis.mode "sentinel" }}
  {{- $s := .Values.redis.sentinel }}
  {{- if gt (int $s.quorum) (int $s.replicas) }}
    {{- fail (printf "redis.sentinel.quorum=%v is more than redis.sentinel.replicas=%v: no failover could ever be agreed on" $s.quorum $s.replicas) }}
  {{- end }}
  {{- if not .Values.redis.persistence.enabled }}
    {{- fail "redis.mode=sentinel needs redis.persistence.enabled: a master that came back with an empty volume would be followed by its replicas and wipe them, and each sentinel keeps its state on the volume" }}
  {{- end }}
  {{- if ge (int $s.minReplicasToWrite) (int $s.replicas) }}
    {{- fail (printf "redis.sentinel.minReplicasToWrite=%v needs that many replicas besides the master, but redis.sentinel.replicas=%v pods make at most %d" $s.minReplicasToWrite $s.replicas (sub (int $s.replicas) 1)) }}
  {{- end }}
{{- end }}
{{- $contract := list "PORT" "BIND_HOST" "REDIS_URL" "RATELIMIT_URL" "UNIVERSE_URL" "STRATEGY_URL" "EXECUTOR_URL" "EXCHANGE_API_URL" "TRADER_API_TOKEN" "TRADER_OPERATOR_TOKEN" "TRADING_MODE" "CONFIG_DIR" "LOG_LEVEL" "KEY_PREFIX" "SIM_SPEED" "SIM_SEED" "COINBASE_API_KEY_NAME" "COINBASE_API_KEY_SECRET" "COINBASE_API_KEY_FILE" }}
{{- range $name, $svc := .Values.services }}
  {{- range $var, $_ := $svc.env }}
    {{- if has $var $contract }}
      {{- fail (printf "services.%s.env.%s: the chart sets %s itself; use the chart's values instead" $name $var $var) }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
