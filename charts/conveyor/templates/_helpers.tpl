{{/* Names ---------------------------------------------------------------------------------- */}}

{{- define "conveyor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name prefix, at most 40 characters so that every suffix below stays a DNS label. */}}
{{- define "conveyor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: (dict "ctx" $ "component" "web") */}}
{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conveyor.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "conveyor.labels" -}}
helm.sh/chart: {{ include "conveyor.chart" .ctx }}
{{ include "conveyor.selectorLabels" . }}
app.kubernetes.io/part-of: conveyor
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Images -------------------------------------------------------------------------------- */}}

{{- define "conveyor.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* repo@digest when a digest is set, else repo:tag: (dict "image" .Values.x.image "tag" default) */}}
{{- define "conveyor.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .tag .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.prefectServerImage" -}}
{{- if .Values.prefectServer.image.repository -}}
{{- include "conveyor.imageRef" (dict "image" .Values.prefectServer.image "tag" .Chart.AppVersion) -}}
{{- else -}}
{{- include "conveyor.image" . -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.kubernetesWorkerImage" -}}
{{- include "conveyor.imageRef" (dict "image" .Values.worker.kubernetes.image "tag" "") -}}
{{- end -}}

{{- define "conveyor.postgresqlImage" -}}
{{- include "conveyor.imageRef" (dict "image" .Values.postgresql.image "tag" "") -}}
{{- end -}}

{{/* Prefect API basic auth for clients (PREFECT_API_AUTH_STRING), from an existing Secret. */}}
{{- define "conveyor.prefectAuthEnv" -}}
{{- with .Values.prefectAuth.existingSecret }}
- name: PREFECT_API_AUTH_STRING
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.prefectAuth.key }}
{{- end }}
{{- end -}}

{{/* Object names ---------------------------------------------------------------------------- */}}

{{- define "conveyor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "conveyor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.appSecretName" -}}
{{- default (printf "%s-app" (include "conveyor.fullname" .)) .Values.conveyor.existingSecret -}}
{{- end -}}

{{- define "conveyor.databaseSecretName" -}}
{{- default (printf "%s-database" (include "conveyor.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{- define "conveyor.postgresqlHost" -}}
{{- printf "%s-postgresql" (include "conveyor.fullname" .) -}}
{{- end -}}

{{- define "conveyor.prefectServerName" -}}
{{- printf "%s-prefect-server" (include "conveyor.fullname" .) -}}
{{- end -}}

{{- define "conveyor.prefectApiUrl" -}}
{{- if .Values.prefectServer.enabled -}}
{{- printf "http://%s:%d/api" (include "conveyor.prefectServerName" .) (int .Values.prefectServer.port) -}}
{{- else -}}
{{- required "prefectServer.externalApiUrl is required when prefectServer.enabled is false" .Values.prefectServer.externalApiUrl -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.prefectUiApiUrl" -}}
{{- if .Values.prefectServer.uiApiUrl -}}
{{- .Values.prefectServer.uiApiUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.prefect.enabled -}}
{{- printf "%s://%s/api" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.prefect.host -}}
{{- else -}}
{{- printf "http://localhost:%d/api" (int .Values.prefectServer.port) -}}
{{- end -}}
{{- end -}}

{{/* Values checks that the schema cannot express (rendered once, from secrets.yaml). */}}
{{- define "conveyor.validate" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.database.existingSecret) -}}
{{- $_ := required "database.external.url is required when postgresql.enabled is false and database.existingSecret is empty" .Values.database.external.url -}}
{{- if .Values.prefectServer.enabled -}}
{{- $_ := required "database.external.prefectUrl is required for the bundled Prefect server when postgresql.enabled is false and database.existingSecret is empty" .Values.database.external.prefectUrl -}}
{{- end -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (or .Values.database.external.url .Values.database.external.prefectUrl) -}}
{{- fail "database.external.* is set but postgresql.enabled is true: set postgresql.enabled=false to use an external database" -}}
{{- end -}}
{{- if and .Values.ingress.enabled .Values.ingress.prefect.enabled (not .Values.prefectServer.enabled) -}}
{{- fail "ingress.prefect.enabled needs prefectServer.enabled (the chart only exposes its own Prefect server)" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled .Values.networkPolicy.egress.enabled (not .Values.prefectServer.enabled) -}}
{{- fail "networkPolicy.egress.enabled only knows the bundled Prefect server: turn it off with an external Prefect server, or add your own egress policy" -}}
{{- end -}}
{{- $_ := include "conveyor.prefectApiUrl" . -}}
{{- include "conveyor.lakeValidate" . -}}
{{- end -}}

{{/* Pod-level pieces --------------------------------------------------------------------------- */}}

{{- define "conveyor.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Environment of every Conveyor process. Secrets only through secretKeyRef. */}}
{{- define "conveyor.env" -}}
- name: CONVEYOR_ENV
  value: production
- name: CONVEYOR_HOME
  value: /data
- name: HOME
  value: /data
- name: PREFECT_HOME
  value: /data/.prefect
- name: PREFECT_API_URL
  value: {{ include "conveyor.prefectApiUrl" . | quote }}
{{- with .Values.conveyor.prefectUiUrl }}
- name: CONVEYOR_PREFECT_UI_URL
  value: {{ . | quote }}
{{- end }}
- name: CONVEYOR_DEFAULT_WORK_POOL
  value: {{ .Values.worker.workPool | quote }}
- name: CONVEYOR_WORK_POOL_TYPE
  value: {{ .Values.worker.type | quote }}
{{- with .Values.worker.poolConcurrency }}
- name: CONVEYOR_WORK_POOL_CONCURRENCY
  value: {{ . | quote }}
{{- end }}
- name: CONVEYOR_DEFAULT_WORK_QUEUE
  value: {{ .Values.conveyor.defaultWorkQueue | quote }}
- name: CONVEYOR_RECONCILE_INTERVAL
  value: {{ .Values.conveyor.reconcileInterval | quote }}
- name: CONVEYOR_LOG_LEVEL
  value: {{ .Values.conveyor.logLevel | quote }}
- name: CONVEYOR_LOG_JSON
  value: {{ .Values.conveyor.logJson | quote }}
- name: CONVEYOR_SESSION_SECURE_COOKIE
  value: {{ and .Values.ingress.enabled .Values.ingress.tls.enabled | quote }}
{{- if include "conveyor.lakeOnVolume" . }}
# The default DuckLake's data folder (the lake volume) is a place connectors may write.
- name: CONVEYOR_ALLOWED_PATHS
  value: {{ .Values.lake.volume.mountPath | quote }}
{{- end }}
- name: CONVEYOR_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "conveyor.databaseSecretName" . }}
      key: {{ .Values.database.urlKey }}
- name: CONVEYOR_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "conveyor.appSecretName" . }}
      key: {{ .Values.conveyor.secretKeyKey }}
{{- include "conveyor.prefectAuthEnv" . }}
{{- with .Values.conveyor.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "conveyor.envFrom" -}}
{{- with .Values.conveyor.extraEnvFrom }}
envFrom:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Writable scratch space for read-only root filesystems. */}}
{{- define "conveyor.scratchVolumeMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "conveyor.scratchVolumes" -}}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{/* Waits for the bundled PostgreSQL to accept TCP connections (init container). */}}
{{- define "conveyor.waitForDatabase" -}}
{{- if .Values.postgresql.enabled }}
- name: wait-for-database
  image: {{ include "conveyor.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - python
    - -c
    - |
      import socket, sys, time
      host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + 300
      while True:
          try:
              socket.create_connection((host, port), timeout=3).close()
              print(f"{host}:{port} accepts connections"); break
          except OSError as exc:
              if time.monotonic() > deadline:
                  sys.exit(f"{host}:{port} still unreachable after 300 s: {exc}")
              print(f"waiting for {host}:{port}: {exc}", flush=True); time.sleep(2)
    - {{ include "conveyor.postgresqlHost" . }}
    - "5432"
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 32Mi}
    limits: {cpu: 100m, memory: 64Mi}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- end -}}

{{/* Seed deployment files as a YAML map (file name -> content); empty when there are none.
     values.seedDeployments wins over a file of the same name in seed-deployments/. */}}
{{- define "conveyor.seedFiles" -}}
{{- $files := dict -}}
{{- range $path, $_ := .Files.Glob "seed-deployments/*.{yaml,yml}" -}}
{{- $_ := set $files (base $path) ($.Files.Get $path) -}}
{{- end -}}
{{- range $name, $content := .Values.seedDeployments -}}
{{- $_ := set $files $name (ternary $content (toYaml $content) (kindIs "string" $content)) -}}
{{- end -}}
{{- if $files -}}
{{- toYaml $files -}}
{{- end -}}
{{- end -}}

{{/* HorizontalPodAutoscaler on CPU: (dict "ctx" $ "component" "web" "autoscaling" values) */}}
{{- define "conveyor.hpa" -}}
{{- $a := .autoscaling }}
{{- $name := printf "%s-%s" (include "conveyor.fullname" .ctx) .component }}
{{- /* autoscaling/v2 is GA from 1.23 (v2beta2 is gone in 1.26). */}}
{{- $v2 := semverCompare ">=1.23.0-0" .ctx.Capabilities.KubeVersion.Version }}
apiVersion: {{ ternary "autoscaling/v2" "autoscaling/v2beta2" $v2 }}
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  labels:
    {{- include "conveyor.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
{{- end -}}

{{/* PodDisruptionBudget: (dict "ctx" $ "component" "worker" "maxUnavailable" 1) */}}
{{- define "conveyor.pdb" -}}
apiVersion: {{ if .ctx.Capabilities.APIVersions.Has "policy/v1" }}policy/v1{{ else }}policy/v1beta1{{ end }}
kind: PodDisruptionBudget
metadata:
  name: {{ include "conveyor.fullname" .ctx }}-{{ .component }}
  labels:
    {{- include "conveyor.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  maxUnavailable: {{ .maxUnavailable }}
  selector:
    matchLabels:
      {{- include "conveyor.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end -}}

{{/* NetworkPolicy peers: pods of this release with one of the given components. */}}
{{- define "conveyor.np.peers" -}}
- podSelector:
    matchExpressions:
      - key: app.kubernetes.io/instance
        operator: In
        values: [{{ .ctx.Release.Name | quote }}]
      - key: app.kubernetes.io/component
        operator: In
        values: {{ toJson .components }}
{{- end -}}
