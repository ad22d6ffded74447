{{/*
One Deployment of a services process (api, sse, order worker, payment worker, mock gateway): the same pod
shape for all of them, so the security context, probes, env and volumes cannot drift apart.

include "flashsale.servicesDeployment" (dict
  "ctx" $ "component" "api" "spec" .Values.api "port" 8000
  "autoscaled" true|false "grace" 30 "preStop" true|false "multiproc" true|false)
*/}}
{{- define "flashsale.servicesDeployment" -}}
{{- $ctx := .ctx }}
{{- $name := include "flashsale.componentName" (dict "ctx" $ctx "component" .component) }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "flashsale.componentLabels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ .spec.replicas }}
  {{- end }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "flashsale.componentSelectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "flashsale.componentLabels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
      annotations:
        {{- include "flashsale.podAnnotations" $ctx | nindent 8 }}
    spec:
      serviceAccountName: {{ include "flashsale.serviceAccountName" $ctx }}
      automountServiceAccountToken: false
      securityContext:
        {{- include "flashsale.podSecurityContext" $ctx | nindent 8 }}
      terminationGracePeriodSeconds: {{ .grace }}
      {{- with (include "flashsale.scheduling" $ctx) }}{{ . | nindent 6 }}{{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "flashsale.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          command:
            {{- include "flashsale.command" (dict "ctx" $ctx "command" .spec.command) | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ .port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "flashsale.configMapName" $ctx }}
          env:
            {{- include "flashsale.secretEnv" $ctx | nindent 12 }}
            {{- if .multiproc }}
            # More than one uvicorn worker: prometheus-client aggregates the workers' metrics through files.
            - name: PROMETHEUS_MULTIPROC_DIR
              value: /run/prometheus
            {{- end }}
          {{- include "flashsale.httpProbes" $ctx | nindent 10 }}
          {{- if .preStop }}
          lifecycle:
            # Keep serving while the endpoint removal reaches the ingress controller and kube-proxy.
            preStop:
              exec:
                command: [sleep, "5"]
          {{- end }}
          resources:
            {{- toYaml .spec.resources | nindent 12 }}
          securityContext:
            {{- include "flashsale.securityContext" $ctx | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if .multiproc }}
            - name: prometheus-multiproc
              mountPath: /run/prometheus
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if .multiproc }}
        - name: prometheus-multiproc
          emptyDir:
            medium: Memory
            sizeLimit: 32Mi
        {{- end }}
{{- end }}
