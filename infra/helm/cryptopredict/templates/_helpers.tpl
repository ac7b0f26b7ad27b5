{{/* Names and labels. */}}
{{- define "cryptopredict.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cryptopredict.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cryptopredict.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "cryptopredict.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cryptopredict
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "stream"). */}}
{{- define "cryptopredict.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cryptopredict.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cryptopredict.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Ports the project's settings give (settings defaults where the values leave them out). */}}
{{- define "cryptopredict.grpcPort" -}}{{ (.Values.settings.grpc | default dict).port | default 50051 }}{{- end -}}
{{- define "cryptopredict.edgePort" -}}{{ (.Values.settings.grpc | default dict).edge_port | default 50052 }}{{- end -}}
{{/* (dict "root" $ "job" JOB ["venue" VENUE]): a feed of another venue than Kraken serves on
metrics.<venue>_feed_port (MetricsSettings.feed_metrics_port). */}}
{{- define "cryptopredict.metricsPort" -}}
{{- $defaults := dict "feed" 9101 "stream" 9102 "worker" 9103 "grpc" 9104 "edge" 9105 "coinbase_feed" 9106 "binance_feed" 9107 -}}
{{- $metrics := .root.Values.settings.metrics | default dict -}}
{{- $job := .job -}}
{{- if and (eq .job "feed") .venue (ne .venue "kraken") -}}{{- $job = printf "%s_feed" .venue -}}{{- end -}}
{{- $key := printf "%s_port" $job -}}
{{- if hasKey $metrics $key -}}{{ index $metrics $key }}{{- else -}}{{ index $defaults $job }}{{- end -}}
{{- end -}}

{{/* The pair sets of one venue's feeds: (dict "root" $ "venue" VENUE) -> JSON {"key": ..., "sets": [...]}.
Kraken's are feed.pairSets (as before venues existed), another venue's feed.<venue>.pairSets. */}}
{{- define "cryptopredict.pairSets" -}}
{{- if eq .venue "kraken" -}}
{{- toJson (dict "key" "feed.pairSets" "sets" .root.Values.feed.pairSets) -}}
{{- else -}}
{{- $venue := index .root.Values.feed .venue | default dict -}}
{{- toJson (dict "key" (printf "feed.%s.pairSets" .venue) "sets" ($venue.pairSets | default list)) -}}
{{- end -}}
{{- end -}}

{{/* The pairs of every feed of one venue, in order, each once: (dict "root" $ "venue" VENUE). A pair in
two sets of one venue fails (it would be published twice). */}}
{{- define "cryptopredict.allPairs" -}}
{{- $sets := include "cryptopredict.pairSets" . | fromJson -}}
{{- $pairs := list -}}
{{- range $sets.sets -}}
{{- range .pairs -}}
{{- if has . $pairs -}}{{- fail (printf "%s: %s is in two sets; each pair has exactly one feed" $sets.key .) -}}{{- end -}}
{{- $pairs = append $pairs . -}}
{{- end -}}
{{- end -}}
{{- if not $pairs -}}{{- fail (printf "%s: name at least one pair (%s is in venues)" $sets.key .venue) -}}{{- end -}}
{{- toJson $pairs -}}
{{- end -}}

{{/* A setting's value as its environment variable holds it: strings as they are, the rest as JSON
(numbers stay numbers: 1000000, never 1e+06; lists and maps as pydantic-settings reads them). */}}
{{- define "cryptopredict.envValue" -}}
{{- if kindIs "string" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "cryptopredict.mountRoot" -}}/etc/cryptopredict{{- end -}}

{{/* The settings of every role, as CRYPTOPREDICT_* variables (YAML map). Secret settings are refused. */}}
{{- define "cryptopredict.settingsEnv" -}}
{{- $root := . -}}
{{- $secret := dict "kafka" (list "sasl_password") "temporal" (list "api_key") "postgres" (list "url" "metadata_url") "news" (list "cryptopanic_token") "grpc" (list "tokens" "client_token") "llm" (list "api_key") -}}
{{- $owned := dict "kraken" (list "pairs") "coinbase" (list "pairs") "binance" (list "pairs") "store" (list "sink_enabled" "dialect") -}}
{{- $env := dict -}}
{{- range $section, $fields := .Values.settings -}}
{{- if kindIs "map" $fields -}}
{{- range $field, $value := $fields -}}
{{- if has $field (get $secret $section | default list) -}}
{{- fail (printf "settings.%s.%s is a secret: reference a Secret under `secrets` instead" $section $field) -}}
{{- end -}}
{{- if has $field (get $owned $section | default list) -}}
{{- fail (printf "settings.%s.%s is set by the chart (feed.pairSets, featureStore)" $section $field) -}}
{{- end -}}
{{- $_ := set $env (printf "CRYPTOPREDICT_%s__%s" (upper $section) (upper $field)) (include "cryptopredict.envValue" $value) -}}
{{- end -}}
{{- else if eq $section "venues" -}}
{{- fail "settings.venues is set by the chart: list the venues under `venues`" -}}
{{- else -}}
{{- $_ := set $env (printf "CRYPTOPREDICT_%s" (upper $section)) (include "cryptopredict.envValue" $fields) -}}
{{- end -}}
{{- end -}}
{{- $kafka := .Values.settings.kafka | default dict -}}
{{- if and (eq ($kafka.security_protocol | default "PLAINTEXT") "SASL_SSL") (not .Values.secrets.kafkaSaslPassword.name) -}}
{{- fail "settings.kafka.security_protocol SASL_SSL needs settings.kafka.sasl_username and secrets.kafkaSaslPassword" -}}
{{- end -}}
{{- $partitions := int ($kafka.partitions | default 3) -}}
{{- if gt (int .Values.stream.replicas) $partitions -}}
{{- fail (printf "stream.replicas (%d) is above settings.kafka.partitions (%d): the extra workers would get no partition" (int .Values.stream.replicas) $partitions) -}}
{{- end -}}
{{- $m := include "cryptopredict.mountRoot" . -}}
{{- $_ := set $env "CRYPTOPREDICT_VENUES" (toJson .Values.venues) -}}
{{- range $venue := .Values.venues -}}
{{- $_ := set $env (printf "CRYPTOPREDICT_%s__PAIRS" (upper $venue)) (include "cryptopredict.allPairs" (dict "root" $root "venue" $venue)) -}}
{{- end -}}
{{- $_ := set $env "CRYPTOPREDICT_GRPC__HOST" "0.0.0.0" -}}
{{- $_ := set $env "CRYPTOPREDICT_METRICS__HOST" "0.0.0.0" -}}
{{- if eq .Values.featureStore "risingwave" -}}
{{- if not .Values.secrets.postgresMetadataUrl.name -}}
{{- fail "featureStore risingwave needs secrets.postgresMetadataUrl: the Optuna studies need a PostgreSQL server" -}}
{{- end -}}
{{- $_ := set $env "CRYPTOPREDICT_STORE__DIALECT" "risingwave" -}}
{{- $_ := set $env "CRYPTOPREDICT_STORE__SINK_ENABLED" "false" -}}
{{- else if eq .Values.featureStore "postgres" -}}
{{- $_ := set $env "CRYPTOPREDICT_STORE__DIALECT" "postgres" -}}
{{- $_ := set $env "CRYPTOPREDICT_STORE__SINK_ENABLED" "true" -}}
{{- else -}}
{{- fail (printf "featureStore is %q: postgres or risingwave" .Values.featureStore) -}}
{{- end -}}
{{- if .Values.mlflow.enabled -}}
{{- $_ := set $env "CRYPTOPREDICT_MLFLOW__TRACKING_URI" (printf "http://%s-mlflow:5000" (include "cryptopredict.fullname" .)) -}}
{{- else if .Values.mlflow.externalTrackingUri -}}
{{- $_ := set $env "CRYPTOPREDICT_MLFLOW__TRACKING_URI" .Values.mlflow.externalTrackingUri -}}
{{- end -}}
{{- with .Values.tls.kafka -}}
{{- if .caSecret -}}{{- $_ := set $env "CRYPTOPREDICT_KAFKA__SSL_CA_FILE" (printf "%s/kafka-ca/ca.crt" $m) -}}{{- end -}}
{{- if .clientSecret -}}
{{- $_ := set $env "CRYPTOPREDICT_KAFKA__SSL_CERT_FILE" (printf "%s/kafka-client/tls.crt" $m) -}}
{{- $_ := set $env "CRYPTOPREDICT_KAFKA__SSL_KEY_FILE" (printf "%s/kafka-client/tls.key" $m) -}}
{{- end -}}
{{- end -}}
{{- with .Values.tls.temporal -}}
{{- if .enabled -}}{{- $_ := set $env "CRYPTOPREDICT_TEMPORAL__TLS" "true" -}}{{- end -}}
{{- if and .secret .caKey -}}{{- $_ := set $env "CRYPTOPREDICT_TEMPORAL__TLS_CA_FILE" (printf "%s/temporal-tls/ca.crt" $m) -}}{{- end -}}
{{- if and .secret .mutual -}}
{{- $_ := set $env "CRYPTOPREDICT_TEMPORAL__TLS_CERT_FILE" (printf "%s/temporal-tls/tls.crt" $m) -}}
{{- $_ := set $env "CRYPTOPREDICT_TEMPORAL__TLS_KEY_FILE" (printf "%s/temporal-tls/tls.key" $m) -}}
{{- end -}}
{{- if .serverName -}}{{- $_ := set $env "CRYPTOPREDICT_TEMPORAL__TLS_SERVER_NAME" .serverName -}}{{- end -}}
{{- end -}}
{{- if .Values.tls.postgres.caSecret -}}
{{- $_ := set $env "CRYPTOPREDICT_POSTGRES__SSL_ROOT_CERT" (printf "%s/store-ca/ca.crt" $m) -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}

{{/* A Secret-backed variable, when the reference names a Secret: (dict "env" NAME "ref" REF). */}}
{{- define "cryptopredict.secretEnv" -}}
{{- if .ref.name }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .ref.name }}
      key: {{ .ref.key }}
{{- end }}
{{- end -}}

{{/* The Secret-backed settings every role reads (the settings refuse SASL_SSL without its password). */}}
{{- define "cryptopredict.commonSecretEnv" -}}
{{- $_ := required "secrets.postgresUrl.name: the Secret with the feature store's URL" .Values.secrets.postgresUrl.name }}
{{- include "cryptopredict.secretEnv" (dict "env" "CRYPTOPREDICT_POSTGRES__URL" "ref" .Values.secrets.postgresUrl) }}
{{- include "cryptopredict.secretEnv" (dict "env" "CRYPTOPREDICT_KAFKA__SASL_PASSWORD" "ref" .Values.secrets.kafkaSaslPassword) }}
{{- include "cryptopredict.secretEnv" (dict "env" "CRYPTOPREDICT_TEMPORAL__API_KEY" "ref" .Values.secrets.temporalApiKey) }}
{{- include "cryptopredict.secretEnv" (dict "env" "CRYPTOPREDICT_LLM__API_KEY" "ref" .Values.secrets.llmApiKey) }}
{{- end -}}

{{/* gRPC of the server: its bearer tokens and its certificate. */}}
{{- define "cryptopredict.grpcEnv" -}}
{{- include "cryptopredict.secretEnv" (dict "env" "CRYPTOPREDICT_GRPC__TOKENS" "ref" .Values.secrets.grpcTokens) }}
{{- include "cryptopredict.grpcTlsEnv" . }}
{{- end -}}

{{/* gRPC's certificate (and its CA), which the server and the edge serve with and the edge checks the
server against. */}}
{{- define "cryptopredict.grpcTlsEnv" -}}
{{- if .Values.tls.grpc.secret }}
- name: CRYPTOPREDICT_GRPC__TLS_CERT_FILE
  value: {{ include "cryptopredict.mountRoot" . }}/grpc-tls/tls.crt
- name: CRYPTOPREDICT_GRPC__TLS_KEY_FILE
  value: {{ include "cryptopredict.mountRoot" . }}/grpc-tls/tls.key
{{- if .Values.tls.grpc.caKey }}
- name: CRYPTOPREDICT_GRPC__TLS_CA_FILE
  value: {{ include "cryptopredict.mountRoot" . }}/grpc-tls/ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes of every project pod: writable /tmp and home on a read-only root, and the certificates. */}}
{{- define "cryptopredict.volumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- include "cryptopredict.kafkaVolumes" . }}
{{- with .Values.tls.temporal }}
{{- if and .secret (or .caKey .mutual) }}
- name: temporal-tls
  secret:
    secretName: {{ .secret }}
    items:
      {{- if .caKey }}
      - {key: {{ .caKey }}, path: ca.crt}
      {{- end }}
      {{- if .mutual }}
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      {{- end }}
{{- end }}
{{- end }}
{{- if .Values.tls.postgres.caSecret }}
- name: store-ca
  secret:
    secretName: {{ .Values.tls.postgres.caSecret }}
    items: [{key: {{ .Values.tls.postgres.caKey }}, path: ca.crt}]
{{- end }}
{{- end -}}

{{/* The Kafka CA and client certificate, where set: every Kafka client's, the stream edge's among them. */}}
{{- define "cryptopredict.kafkaVolumes" -}}
{{- with .Values.tls.kafka }}
{{- if .caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .caSecret }}
    items: [{key: {{ .caKey }}, path: ca.crt}]
{{- end }}
{{- if .clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ .clientSecret }}
    items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]
{{- end }}
{{- end }}
{{- end -}}

{{- define "cryptopredict.kafkaVolumeMounts" -}}
{{- $m := include "cryptopredict.mountRoot" . }}
{{- range $name, $secret := dict "kafka-ca" .Values.tls.kafka.caSecret "kafka-client" .Values.tls.kafka.clientSecret }}
{{- if $secret }}
- name: {{ $name }}
  mountPath: {{ $m }}/{{ $name }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "cryptopredict.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /var/lib/cryptopredict
{{- include "cryptopredict.kafkaVolumeMounts" . }}
{{- $m := include "cryptopredict.mountRoot" . }}
{{- $temporal := .Values.tls.temporal }}
{{- $on := dict "temporal-tls" (and $temporal.secret (or $temporal.caKey $temporal.mutual)) "store-ca" .Values.tls.postgres.caSecret }}
{{- range $name := list "temporal-tls" "store-ca" }}
{{- if get $on $name }}
- name: {{ $name }}
  mountPath: {{ $m }}/{{ $name }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "cryptopredict.grpcVolume" -}}
{{- if .Values.tls.grpc.secret }}
- name: grpc-tls
  secret:
    secretName: {{ .Values.tls.grpc.secret }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      {{- if .Values.tls.grpc.caKey }}
      - {key: {{ .Values.tls.grpc.caKey }}, path: ca.crt}
      {{- end }}
{{- end }}
{{- end -}}

{{- define "cryptopredict.grpcVolumeMount" -}}
{{- if .Values.tls.grpc.secret }}
- name: grpc-tls
  mountPath: {{ include "cryptopredict.mountRoot" . }}/grpc-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Pod-level fields every project pod shares: (dict "root" $ "component" NAME). */}}
{{- define "cryptopredict.podCommon" -}}
{{- $root := .root -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $root.Values.affinity }}
affinity:
  {{- toYaml $root.Values.affinity | nindent 2 }}
{{- else if $root.Values.spreadReplicas }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "cryptopredict.selectorLabels" (dict "root" $root "component" .component) | nindent 14 }}
{{- end }}
{{- end -}}

{{/* Pod template metadata: (dict "root" $ "component" NAME "job" METRICS-JOB-or-"" ["venue" VENUE]). */}}
{{- define "cryptopredict.podMetadata" -}}
{{- $root := .root -}}
labels:
  {{- include "cryptopredict.selectorLabels" (dict "root" $root "component" .component) | nindent 2 }}
  app.kubernetes.io/part-of: cryptopredict
  {{- if .job }}
  cryptopredict.io/job: {{ .job }}
  {{- end }}
  {{- with $root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/settings: {{ include "cryptopredict.settingsEnv" $root | sha256sum }}
  {{- if and .job $root.Values.monitoring.podAnnotations }}
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ include "cryptopredict.metricsPort" (dict "root" $root "job" .job "venue" .venue) | quote }}
  prometheus.io/path: /metrics
  {{- end }}
  {{- with $root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* The readiness probe of a gRPC role: Kubernetes' own gRPC probe in plaintext; with TLS (which the
kubelet's probe does not speak) a health check from Python in the pod, against the certificate's CA. */}}
{{- define "cryptopredict.grpcReadiness" -}}
{{- $root := .root -}}
{{- if $root.Values.tls.grpc.secret }}
exec:
  command:
    - python
    - -c
    - >-
      import sys, grpc;
      from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g;
      ca = open(sys.argv[1], "rb").read();
      channel = grpc.secure_channel(sys.argv[2], grpc.ssl_channel_credentials(ca),
      options=[("grpc.ssl_target_name_override", sys.argv[3])]);
      reply = g.HealthStub(channel).Check(h.HealthCheckRequest(service=sys.argv[4]), timeout=3);
      sys.exit(0 if reply.status == h.HealthCheckResponse.SERVING else 1)
    - {{ include "cryptopredict.mountRoot" $root }}/grpc-tls/{{ if $root.Values.tls.grpc.caKey }}ca.crt{{ else }}tls.crt{{ end }}
    - 127.0.0.1:{{ .port }}
    - {{ include "cryptopredict.fullname" $root }}-grpc
    - cryptopredict.v1.PredictionService
timeoutSeconds: 5
{{- else }}
grpc:
  port: {{ .port }}
  service: cryptopredict.v1.PredictionService
{{- end }}
periodSeconds: 10
failureThreshold: 3
{{- end -}}

{{/* Liveness from the /metrics endpoint of a worker process (the port the settings give). */}}
{{- define "cryptopredict.metricsProbes" -}}
{{- $port := include "cryptopredict.metricsPort" . | int -}}
{{- if ge $port 0 }}
startupProbe:
  httpGet: {path: /metrics, port: metrics}
  periodSeconds: 10
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /metrics, port: metrics}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 6
{{- end }}
{{- end -}}

{{- define "cryptopredict.metricsContainerPort" -}}
{{- $port := include "cryptopredict.metricsPort" . | int -}}
{{- if ge $port 0 }}
- name: metrics
  containerPort: {{ $port }}
  protocol: TCP
{{- end }}
{{- end -}}
