{{/*
Base job template of the kubernetes work pool, as YAML (worker.yaml turns it into JSON).
Strings like "{{`{{ env }}`}}" are Prefect placeholders, filled by the worker for each flow run.
Prefect's own validation insists on spec.template.spec.parallelism/completions = 1 (it checks them
there, not under spec); Kubernetes ignores both fields in a pod spec.
*/}}
{{- define "conveyor.baseJobTemplate" -}}
{{- $fullname := include "conveyor.fullname" . -}}
{{- $k := .Values.worker.kubernetes -}}
job_configuration:
  command: "{{`{{ command }}`}}"
  env: "{{`{{ env }}`}}"
  labels: "{{`{{ labels }}`}}"
  name: "{{`{{ name }}`}}"
  namespace: "{{`{{ namespace }}`}}"
  job_watch_timeout_seconds: "{{`{{ job_watch_timeout_seconds }}`}}"
  pod_watch_timeout_seconds: "{{`{{ pod_watch_timeout_seconds }}`}}"
  stream_output: "{{`{{ stream_output }}`}}"
  job_manifest:
    apiVersion: batch/v1
    kind: Job
    metadata:
      generateName: "{{`{{ name }}`}}-"
      namespace: "{{`{{ namespace }}`}}"
      labels:
        {{- include "conveyor.flowRunLabels" . | nindent 8 }}
    spec:
      backoffLimit: 0
      ttlSecondsAfterFinished: "{{`{{ finished_job_ttl }}`}}"
      template:
        metadata:
          labels:
            {{- include "conveyor.flowRunLabels" . | nindent 12 }}
        spec:
          parallelism: 1
          completions: 1
          restartPolicy: Never
          serviceAccountName: {{ $fullname }}-flow-run
          automountServiceAccountToken: false
          {{- include "conveyor.imagePullSecrets" . | nindent 10 }}
          securityContext:
            {{- toYaml .Values.podSecurityContext | nindent 12 }}
          containers:
            - name: prefect-job
              image: "{{`{{ image }}`}}"
              imagePullPolicy: "{{`{{ image_pull_policy }}`}}"
              # The image's entrypoint is `conveyor`; Prefect passes its own command as args.
              command: [/usr/bin/env]
              args: "{{`{{ command }}`}}"
              env:
                {{- include "conveyor.env" . | nindent 16 }}
              {{- include "conveyor.envFrom" . | nindent 14 }}
              # Prefect job variables (a connector's job_variables; defaults below): a variable
              # with no value leaves its key out.
              resources:
                requests:
                  cpu: "{{`{{ cpu_request }}`}}"
                  memory: "{{`{{ memory_request }}`}}"
                limits:
                  cpu: "{{`{{ cpu_limit }}`}}"
                  memory: "{{`{{ memory_limit }}`}}"
              securityContext:
                {{- toYaml .Values.containerSecurityContext | nindent 16 }}
              volumeMounts:
                {{- include "conveyor.scratchVolumeMounts" . | nindent 16 }}
                {{- include "conveyor.lakeVolumeMounts" . | nindent 16 }}
          volumes:
            {{- include "conveyor.scratchVolumes" . | nindent 12 }}
            {{- include "conveyor.lakeVolumes" . | nindent 12 }}
          nodeSelector: "{{`{{ node_selector }}`}}"
          tolerations: "{{`{{ tolerations }}`}}"
variables:
  type: object
  description: Variables of Conveyor's kubernetes work pool (set by the Helm chart).
  properties:
    name:
      title: Name
      type: string
      description: Name given to the flow-run Job (Prefect fills it in).
    env:
      title: Environment variables
      type: object
      additionalProperties: {type: string}
      description: Extra plain environment variables for the flow-run container.
    labels:
      title: Labels
      type: object
      additionalProperties: {type: string}
      description: Extra labels for the flow-run Job.
    command:
      title: Command
      type: string
      description: Command the flow-run container runs (Prefect's default when empty).
    namespace:
      title: Namespace
      type: string
      default: {{ .Release.Namespace | quote }}
      description: Namespace of the flow-run Jobs (the worker may only create Jobs here).
    image:
      title: Image
      type: string
      default: {{ include "conveyor.image" . | quote }}
      description: Conveyor image that runs the flow.
    image_pull_policy:
      title: Image pull policy
      type: string
      enum: [IfNotPresent, Always, Never]
      default: {{ .Values.image.pullPolicy | quote }}
    finished_job_ttl:
      title: Finished job TTL
      type: integer
      default: {{ $k.finishedJobTtl }}
      description: Seconds Kubernetes keeps a finished Job.
    job_watch_timeout_seconds:
      title: Job watch timeout seconds
      type: integer
      description: Seconds to wait for each Job event (empty waits indefinitely).
    pod_watch_timeout_seconds:
      title: Pod watch timeout seconds
      type: integer
      default: {{ $k.podWatchTimeoutSeconds }}
      description: Seconds to wait for the flow-run pod to start.
    stream_output:
      title: Stream output
      type: boolean
      default: true
      description: Stream the flow-run pod's logs to the worker's log.
    {{- $req := $k.jobResources.requests | default dict }}
    {{- $lim := $k.jobResources.limits | default dict }}
    {{- range $var, $v := dict "cpu_request" $req.cpu "memory_request" $req.memory "cpu_limit" $lim.cpu "memory_limit" $lim.memory }}
    {{ $var }}:
      title: {{ $var | replace "_" " " | title | quote }}
      type: string
      {{- with $v }}
      default: {{ . | toString | quote }}
      {{- end }}
      description: Kubernetes quantity for the flow-run container (e.g. 500m, 2, 512Mi, 4Gi).
    {{- end }}
    node_selector:
      title: Node selector
      type: object
      additionalProperties: {type: string}
      default: {{ $k.jobNodeSelector | default dict | toJson }}
      description: Node labels the flow-run pod must run on.
    tolerations:
      title: Tolerations
      type: array
      items: {type: object}
      default: {{ $k.jobTolerations | default list | toJson }}
      description: Taints the flow-run pod tolerates (Kubernetes toleration objects).
{{- end -}}


{{/* Labels of flow-run Jobs and pods: created by the Prefect worker, not by Helm. */}}
{{- define "conveyor.flowRunLabels" -}}
{{ include "conveyor.selectorLabels" (dict "ctx" . "component" "flow-run") }}
app.kubernetes.io/part-of: conveyor
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: prefect-worker
{{- end -}}
