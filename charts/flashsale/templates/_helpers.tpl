{{/*
Shared helpers: names, labels, images, the env every services container gets, security contexts, probes and
the values checks that must fail the render (templates/validate.yaml calls flashsale.validate).
*/}}

{{- define "flashsale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix, 63 characters at most (DNS label); component suffixes are short and the prefix
     leaves room for them through the 52-character truncation below. */}}
{{- define "flashsale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "flashsale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flashsale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flashsale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flashsale.labels" -}}
helm.sh/chart: {{ include "flashsale.chart" . }}
{{ include "flashsale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flashsale
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: include "flashsale.componentLabels" (dict "ctx" $ "component" "api") */}}
{{- define "flashsale.componentLabels" -}}
{{ include "flashsale.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "flashsale.componentSelectorLabels" -}}
{{ include "flashsale.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Name of one component's objects: <fullname>-<component>. */}}
{{- define "flashsale.componentName" -}}
{{- printf "%s-%s" (include "flashsale.fullname" .ctx) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* An image reference from {repository, tag, digest} with the chart's appVersion as the default tag. */}}
{{- define "flashsale.imageRef" -}}
{{- $tag := .image.tag | default .ctx.Chart.AppVersion | toString }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "flashsale.image" -}}
{{- include "flashsale.imageRef" (dict "ctx" . "image" .Values.image) }}
{{- end }}

{{- define "flashsale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flashsale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "flashsale.operatorServiceAccountName" -}}
{{- include "flashsale.componentName" (dict "ctx" . "component" "operator") }}
{{- end }}

{{/* The chart's Secret (JWT secret, DSN, Redis URL, store passwords). */}}
{{- define "flashsale.secretName" -}}
{{- include "flashsale.fullname" . }}
{{- end }}

{{- define "flashsale.configMapName" -}}
{{- include "flashsale.componentName" (dict "ctx" . "component" "config") }}
{{- end }}

{{/* Where each secret setting comes from: {name, key} of a Secret. */}}
{{- define "flashsale.jwtSecretRef" -}}
{{- if .Values.auth.existingSecret -}}
name: {{ .Values.auth.existingSecret }}
key: {{ .Values.auth.existingSecretKey }}
{{- else -}}
name: {{ include "flashsale.secretName" . }}
key: FLASHSALE_AUTH__JWT_SECRET
{{- end }}
{{- end }}

{{- define "flashsale.postgresDsnRef" -}}
{{- if and (not .Values.postgresql.enabled) .Values.externalPostgresql.existingSecret -}}
name: {{ .Values.externalPostgresql.existingSecret }}
key: {{ .Values.externalPostgresql.existingSecretKey }}
{{- else -}}
name: {{ include "flashsale.secretName" . }}
key: FLASHSALE_POSTGRES__DSN
{{- end }}
{{- end }}

{{- define "flashsale.redisUrlRef" -}}
{{- if and (not .Values.valkey.enabled) .Values.externalRedis.existingSecret -}}
name: {{ .Values.externalRedis.existingSecret }}
key: {{ .Values.externalRedis.existingSecretKey }}
{{- else -}}
name: {{ include "flashsale.secretName" . }}
key: FLASHSALE_REDIS__URL
{{- end }}
{{- end }}

{{- define "flashsale.valkeyHost" -}}
{{- include "flashsale.componentName" (dict "ctx" . "component" "valkey") }}
{{- end }}

{{- define "flashsale.postgresHost" -}}
{{- include "flashsale.componentName" (dict "ctx" . "component" "postgresql") }}
{{- end }}

{{- define "flashsale.apiUrl" -}}
{{- printf "http://%s:%d" (include "flashsale.componentName" (dict "ctx" . "component" "api")) (int .Values.api.port) }}
{{- end }}

{{- define "flashsale.sseUrl" -}}
{{- printf "http://%s:%d" (include "flashsale.componentName" (dict "ctx" . "component" "sse")) (int .Values.sse.port) }}
{{- end }}

{{- define "flashsale.gatewayUrl" -}}
{{- if .Values.gateway.enabled }}
{{- printf "http://%s:%d" (include "flashsale.componentName" (dict "ctx" . "component" "gateway")) (int .Values.gateway.port) }}
{{- else }}
{{- .Values.gateway.externalUrl }}
{{- end }}
{{- end }}

{{/* host:port KEDA's redis-streams scaler connects to. */}}
{{- define "flashsale.kedaRedisAddress" -}}
{{- if .Values.workers.autoscaling.keda.redisAddress }}
{{- .Values.workers.autoscaling.keda.redisAddress }}
{{- else if .Values.valkey.enabled }}
{{- printf "%s:%d" (include "flashsale.valkeyHost" .) (int .Values.valkey.port) }}
{{- else if .Values.externalRedis.url }}
{{- $u := urlParse .Values.externalRedis.url }}
{{- if contains ":" $u.host }}{{ $u.host }}{{ else }}{{ printf "%s:6379" $u.host }}{{ end }}
{{- end }}
{{- end }}

{{/* The env every services container reads from Secrets. In prod every process refuses the dev JWT secret
     and the dev database DSN at startup (flashsale.config.Settings), so each one gets all three. */}}
{{- define "flashsale.secretEnv" -}}
- name: FLASHSALE_AUTH__JWT_SECRET
  valueFrom:
    secretKeyRef:
      {{- include "flashsale.jwtSecretRef" . | nindent 6 }}
- name: FLASHSALE_POSTGRES__DSN
  valueFrom:
    secretKeyRef:
      {{- include "flashsale.postgresDsnRef" . | nindent 6 }}
- name: FLASHSALE_REDIS__URL
  valueFrom:
    secretKeyRef:
      {{- include "flashsale.redisUrlRef" . | nindent 6 }}
{{- end }}

{{/* Pod and container security contexts. The dev profile relaxes only readOnlyRootFilesystem, because
     skaffold's file sync untars changed files into the running container. */}}
{{- define "flashsale.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "flashsale.securityContext" -}}
{{- $sc := deepCopy .Values.securityContext }}
{{- if .Values.dev.enabled }}
{{- $_ := set $sc "readOnlyRootFilesystem" false }}
{{- end }}
{{- toYaml $sc }}
{{- end }}

{{/* Security context of the third-party images (Valkey, PostgreSQL, k6): restricted as well, with the uid
     the image expects. */}}
{{- define "flashsale.storeSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Command of a services container. In dev mode it runs under watchfiles (a uvicorn[standard] dependency),
     which restarts the process when skaffold syncs a .py file into /app/services/src. */}}
{{- define "flashsale.command" -}}
{{- if .ctx.Values.dev.enabled }}
- watchfiles
- --filter
- python
- --target-type
- command
- {{ join " " .command | quote }}
- /app/services/src
{{- else }}
{{- toYaml .command }}
{{- end }}
{{- end }}

{{/* HTTP probes of a services container: startup and liveness on /healthz, readiness on /readyz. */}}
{{- define "flashsale.httpProbes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end }}

{{/* Scheduling fields shared by every pod. */}}
{{- define "flashsale.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod annotations: the ConfigMap's checksum rolls the pods when a setting changes. */}}
{{- define "flashsale.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Init container that waits until the in-chart PostgreSQL accepts connections (pg_isready ships with the
     postgres image, which the StatefulSet already pulled). */}}
{{- define "flashsale.waitForPostgres" -}}
- name: wait-for-postgresql
  image: {{ include "flashsale.imageRef" (dict "ctx" . "image" .Values.postgresql.image) }}
  imagePullPolicy: {{ .Values.postgresql.image.pullPolicy }}
  command:
    - sh
    - -c
    - until pg_isready -h "$PGHOST" -p "$PGPORT" -t 2; do echo waiting for postgresql; sleep 2; done
  env:
    - name: PGHOST
      value: {{ include "flashsale.postgresHost" . }}
    - name: PGPORT
      value: {{ .Values.postgresql.port | quote }}
  securityContext:
    {{- include "flashsale.storeSecurityContext" (dict "uid" 999) | nindent 4 }}
  resources:
    {{- toYaml .Values.initResources | nindent 4 }}
{{- end }}

{{/* Values the schema cannot express; each failure names the values to set. */}}
{{- define "flashsale.validate" -}}
{{- if and (not .Values.valkey.enabled) (not .Values.externalRedis.url) (not .Values.externalRedis.existingSecret) }}
{{- fail "valkey.enabled=false needs externalRedis.url or externalRedis.existingSecret (the Redis/Valkey the services use)" }}
{{- end }}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalPostgresql.dsn) (not .Values.externalPostgresql.existingSecret) }}
{{- fail "postgresql.enabled=false needs externalPostgresql.dsn or externalPostgresql.existingSecret (the PostgreSQL the services use)" }}
{{- end }}
{{- if and .Values.workers.payment.enabled (not .Values.gateway.enabled) (not .Values.gateway.externalUrl) }}
{{- fail "gateway.enabled=false needs gateway.externalUrl (the payment gateway the payment worker charges)" }}
{{- end }}
{{- if and (eq .Values.workers.autoscaling.mode "keda") (or .Values.workers.order.enabled .Values.workers.payment.enabled) (not (include "flashsale.kedaRedisAddress" .)) }}
{{- fail "workers.autoscaling.mode=keda with externalRedis.existingSecret needs workers.autoscaling.keda.redisAddress (host:port), since the chart cannot read the URL inside that Secret" }}
{{- end }}
{{- if and .Values.operator.enabled (not .Values.api.enabled) }}
{{- fail "operator.enabled=true needs api.enabled=true: the operator drives the sales through the API" }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.enabled=true needs httpRoute.parentRefs (the Gateway the route attaches to)" }}
{{- end }}
{{- if and .Values.loadtest.enabled (not (.Files.Get (printf "files/loadtest/%s" .Values.loadtest.script))) }}
{{- fail (printf "loadtest.script=%s is not a file in the chart's files/loadtest/" .Values.loadtest.script) }}
{{- end }}
{{- if and .Values.loadtest.enabled (not .Values.api.enabled) }}
{{- fail "loadtest.enabled=true needs api.enabled=true: the k6 Job buys from the in-cluster API" }}
{{- end }}
{{- range $name, $_ := .Values.extraConfig }}
{{- if not (hasPrefix "FLASHSALE_" $name) }}
{{- fail (printf "extraConfig key %s: only FLASHSALE_* settings belong there" $name) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "flashsale.peeringName" -}}
{{- default (include "flashsale.fullname" .) .Values.operator.peering.name }}
{{- end }}
