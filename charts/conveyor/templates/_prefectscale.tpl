{{/* Prefect scaled out the way prefect-helm does it: API replicas behind the Service, the
     background services in their own Deployment, Redis for messaging (prefect-redis). */}}

{{/* "true" when the background services run in their own Deployment (replicas > 1 or asked). */}}
{{- define "conveyor.prefectServicesSeparate" -}}
{{- $ps := .Values.prefectServer -}}
{{- if or (gt (int $ps.replicas) 1) $ps.services.separate -}}true{{- end -}}
{{- end -}}

{{/* "true" when Prefect uses Redis (a Redis run by the chart, or a URL from an existing Secret). */}}
{{- define "conveyor.prefectRedis" -}}
{{- $r := .Values.prefectServer.redis -}}
{{- if or $r.enabled $r.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "conveyor.prefectRedisName" -}}
{{- printf "%s-prefect-redis" (include "conveyor.fullname" .) -}}
{{- end -}}

{{- define "conveyor.prefectRedisImage" -}}
{{- include "conveyor.imageRef" (dict "image" .Values.prefectServer.redis.image "tag" "") -}}
{{- end -}}

{{/* Settings checks for a scaled-out Prefect (rendered from prefect-services.yaml). */}}
{{- define "conveyor.validatePrefectScale" -}}
{{- $ps := .Values.prefectServer -}}
{{- $why := ternary (printf "prefectServer.replicas=%d" (int $ps.replicas)) "prefectServer.services.separate=true" (gt (int $ps.replicas) 1) -}}
{{- if include "conveyor.prefectServicesSeparate" . -}}
{{- /* PostgreSQL: the chart's, or database.external.prefectUrl (the schema takes only
     postgresql+asyncpg://); a URL in database.existingSecret is checked at start
     (conveyor.requirePostgresql). */ -}}
{{- if not (include "conveyor.prefectRedis" .) -}}
{{- fail (printf "%s needs Redis for Prefect's messaging, event ordering and lease storage (prefect-redis): set prefectServer.redis.enabled=true (a Redis run by the chart) or prefectServer.redis.existingSecret (a Secret whose %q key holds redis://host:6379/0)" $why $ps.redis.urlKey) -}}
{{- end -}}
{{- end -}}
{{- if and $ps.redis.enabled $ps.redis.existingSecret -}}
{{- fail "prefectServer.redis.enabled and prefectServer.redis.existingSecret are both set: use the chart's Redis or your own, not both" -}}
{{- end -}}
{{- end -}}

{{/* Prefect's messaging, causal ordering and lease storage in Redis (API pods and services). */}}
{{- define "conveyor.prefectRedisEnv" -}}
{{- if include "conveyor.prefectRedis" . }}
- name: PREFECT_MESSAGING_BROKER
  value: prefect_redis.messaging
- name: PREFECT_MESSAGING_CACHE
  value: prefect_redis.messaging
- name: PREFECT_SERVER_EVENTS_CAUSAL_ORDERING
  value: prefect_redis.ordering
- name: PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE
  value: prefect_redis.lease_storage
{{- if .Values.prefectServer.redis.existingSecret }}
- name: PREFECT_REDIS_MESSAGING_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.prefectServer.redis.existingSecret }}
      key: {{ .Values.prefectServer.redis.urlKey }}
{{- else }}
- name: PREFECT_REDIS_MESSAGING_URL
  value: {{ printf "redis://%s:6379/0" (include "conveyor.prefectRedisName" .) | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* With a database URL from an existing Secret the chart cannot read it: a scaled-out Prefect
     checks at start that it is PostgreSQL (init container) and says why it stops otherwise. */}}
{{- define "conveyor.requirePostgresql" -}}
{{- if and (include "conveyor.prefectServicesSeparate" .) (not .Values.postgresql.enabled) .Values.database.existingSecret }}
- name: require-postgresql
  image: {{ include "conveyor.prefectServerImage" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - python
    - -c
    - |
      import os, sys
      url = os.environ["PREFECT_API_DATABASE_CONNECTION_URL"]
      if not url.startswith("postgresql"):
          sys.exit(
              "prefectServer.replicas > 1 or prefectServer.services.separate needs PostgreSQL "
              "for Prefect's database: the URL in database.existingSecret is "
              + url.split(":", 1)[0] + ", not postgresql"
          )
  env:
    - name: PREFECT_API_DATABASE_CONNECTION_URL
      valueFrom:
        secretKeyRef:
          name: {{ include "conveyor.databaseSecretName" . }}
          key: {{ .Values.database.prefectUrlKey }}
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
