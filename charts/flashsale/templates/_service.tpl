{{/*
A ClusterIP Service in front of one services component. Every one of them serves /metrics on its `http`
port, hence the flashsale.dev/metrics label the ServiceMonitor selects.
include "flashsale.service" (dict "ctx" $ "component" "api" "port" 8000)
*/}}
{{- define "flashsale.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "flashsale.componentName" (dict "ctx" .ctx "component" .component) }}
  labels:
    {{- include "flashsale.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
    flashsale.dev/metrics: "true"
spec:
  type: ClusterIP
  selector:
    {{- include "flashsale.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: http
      protocol: TCP
{{- end }}
