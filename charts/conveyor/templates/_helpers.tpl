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

{{- define "conveyor.prefectServerImage" -}}
{{- if .Values.prefectServer.image.repository -}}
{{- printf "%s:%s" .Values.prefectServer.image.repository (default .Chart.AppVersion .Values.prefectServer.image.tag) -}}
{{- else -}}
{{- include "conveyor.image" . -}}
{{- end -}}
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
{{- end -}}

{{/* Keep a generated secret value across upgrades: (dict "ctx" $ "name" N "key" K "value" V)
     returns the base64 value to store. An explicit value wins, then the value already in the
     cluster, then a new one (value). */}}
{{- define "conveyor.secretData" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if .explicit -}}
{{- .explicit | b64enc -}}
{{- else if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- .value | b64enc -}}
{{- end -}}
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
