{{/*
The default DuckLake destination (values: lake). See lake.yaml and files/lake-init.py.
*/}}

{{/* "true" when the chart sets up the lake: auto = with the kubernetes worker. */}}
{{- define "conveyor.lakeEnabled" -}}
{{- $e := .Values.lake.enabled -}}
{{- if or (eq (toString $e) "true") (and (eq (toString $e) "auto") (eq .Values.worker.type "kubernetes")) -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when the lake's data is on a volume (mounted at lake.volume.mountPath). */}}
{{- define "conveyor.lakeOnVolume" -}}
{{- if and (include "conveyor.lakeEnabled" .) (or .Values.lake.volume.existingClaim .Values.lake.volume.storageClass) -}}
true
{{- end -}}
{{- end -}}

{{/* The chart makes the catalog database, role and Secret (its PostgreSQL, no Secret given). */}}
{{- define "conveyor.lakeOwnCatalog" -}}
{{- if and (include "conveyor.lakeEnabled" .) .Values.postgresql.enabled (not .Values.lake.catalog.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{- define "conveyor.lakeCatalogSecretName" -}}
{{- default (printf "%s-lake" (include "conveyor.fullname" .)) .Values.lake.catalog.existingSecret -}}
{{- end -}}

{{- define "conveyor.lakeClaimName" -}}
{{- default (printf "%s-lake" (include "conveyor.fullname" .)) .Values.lake.volume.existingClaim -}}
{{- end -}}

{{/* The catalog's Secret for the secrets Job (files/kube-ops.py ensure-secrets): a password
     made once in the cluster, and the URL built from it. */}}
{{- define "conveyor.lakeSecretSpec" -}}
{{- $c := .Values.lake.catalog -}}
{{- $host := printf "%s:5432" (include "conveyor.postgresqlHost" .) -}}
{{- $url := printf "postgresql://%s:{password}@%s/%s" ($c.username | urlquery) $host $c.database -}}
{{- dict "password" (dict "generate" "token:32") $c.urlKey (dict "template" $url) | toJson -}}
{{- end -}}

{{/* Checks of the lake values (called from conveyor.validate). */}}
{{- define "conveyor.lakeValidate" -}}
{{- if include "conveyor.lakeEnabled" . -}}
{{- $l := .Values.lake -}}
{{- $vol := or $l.volume.existingClaim $l.volume.storageClass -}}
{{- if and $l.s3.dataPath $vol -}}
{{- fail "lake: give its data either on S3 (lake.s3.dataPath) or on a volume (lake.volume.existingClaim or lake.volume.storageClass), not both" -}}
{{- end -}}
{{- if not (or $l.s3.dataPath $vol) -}}
{{- fail "lake: the default destination (a DuckLake, on with worker.type=kubernetes or lake.enabled=true) needs a place shared by every flow-run pod for its data: set lake.s3.dataPath=s3://bucket/prefix with lake.s3.existingSecret, or a ReadWriteMany volume (lake.volume.existingClaim, or lake.volume.storageClass for a PVC made by the chart); or lake.enabled=false to install without a default destination (a DuckDB file would be lost with each flow-run pod)" -}}
{{- end -}}
{{- if and $l.s3.dataPath (not $l.s3.existingSecret) -}}
{{- fail (printf "lake.s3.existingSecret is required with lake.s3.dataPath: a Secret with keys %s and %s (the S3 access key DuckDB writes the files with)" $l.s3.accessKeyIdKey $l.s3.secretAccessKeyKey) -}}
{{- end -}}
{{- if and (not .Values.postgresql.enabled) (not $l.catalog.existingSecret) -}}
{{- fail (printf "lake.catalog.existingSecret is required with an external PostgreSQL: a Secret whose key %s holds postgresql://user:password@host:5432/<database> of a database made for the lake (not Conveyor's or Prefect's)" $l.catalog.urlKey) -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (not $l.catalog.existingSecret) (has $l.catalog.database (list .Values.postgresql.auth.database .Values.postgresql.auth.prefectDatabase "postgres" "template0" "template1")) -}}
{{- fail (printf "lake.catalog.database %q is taken (Conveyor's or Prefect's database, or PostgreSQL's own): give the lake a database of its own" $l.catalog.database) -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (not $l.catalog.existingSecret) (eq $l.catalog.username .Values.postgresql.auth.username) -}}
{{- fail "lake.catalog.username must differ from postgresql.auth.username: the lake gets a role of its own, which cannot reach Conveyor's and Prefect's databases" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The lake volume in a pod: volumeMounts and volumes entries (empty when not on a volume). */}}
{{- define "conveyor.lakeVolumeMounts" -}}
{{- if include "conveyor.lakeOnVolume" . }}
- name: lake
  mountPath: {{ .Values.lake.volume.mountPath }}
{{- end }}
{{- end -}}

{{- define "conveyor.lakeVolumes" -}}
{{- if include "conveyor.lakeOnVolume" . }}
- name: lake
  persistentVolumeClaim:
    claimName: {{ include "conveyor.lakeClaimName" . }}
{{- end }}
{{- end -}}
