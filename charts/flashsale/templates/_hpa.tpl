{{/* CPU HorizontalPodAutoscaler of one Deployment: include "flashsale.cpuHpa" (dict "ctx" $ "component" "api" "spec" .Values.api.autoscaling) */}}
{{- define "flashsale.cpuHpa" -}}
{{- $name := include "flashsale.componentName" (dict "ctx" .ctx "component" .component) }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  labels:
    {{- include "flashsale.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ .spec.minReplicas }}
  maxReplicas: {{ .spec.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .spec.targetCPUUtilizationPercentage }}
  behavior:
    # A flash sale ramps in seconds: scale up at once, scale down slowly after the crowd has gone.
    scaleUp:
      stabilizationWindowSeconds: 0
      policies:
        - type: Percent
          value: 100
          periodSeconds: 15
    scaleDown:
      stabilizationWindowSeconds: 300
{{- end }}

{{/* PodDisruptionBudget of one component: include "flashsale.pdb" (dict "ctx" $ "component" "api" "maxUnavailable" 1) */}}
{{- define "flashsale.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "flashsale.componentName" (dict "ctx" .ctx "component" .component) }}
  labels:
    {{- include "flashsale.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  maxUnavailable: {{ .maxUnavailable }}
  selector:
    matchLabels:
      {{- include "flashsale.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}
