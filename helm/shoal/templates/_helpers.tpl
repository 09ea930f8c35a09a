{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "shoal.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "shoal.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The headless Service: stable DNS names of the pods, and the discovery name. */}}
{{- define "shoal.headless" -}}
{{- printf "%s-headless" (include "shoal.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The front ends' headless Service: their stable DNS names (they advertise them). */}}
{{- define "shoal.frontendHeadless" -}}
{{- printf "%s-frontend-headless" (include "shoal.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name the nodes resolve to find each other: every broker pod, ready or not. */}}
{{- define "shoal.discovery" -}}
{{- printf "dns:%s.%s.svc.%s:%v" (include "shoal.headless" .) .Release.Namespace .Values.cluster.domain .Values.cluster.port -}}
{{- end -}}

{{- define "shoal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shoal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "shoal.tlsSecret" -}}
{{- default (printf "%s-tls" (include "shoal.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "shoal.authSecret" -}}
{{- default (printf "%s-auth" (include "shoal.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "shoal.adminSecret" -}}
{{- default (printf "%s-admin" (include "shoal.fullname" .)) .Values.admin.existingSecret -}}
{{- end -}}

{{- define "shoal.needsTLS" -}}
{{- if or .Values.listeners.tls.enabled .Values.listeners.wss.enabled .Values.listeners.quic.enabled -}}true{{- end -}}
{{- end -}}

{{- define "shoal.hasPasswords" -}}
{{- if or .Values.auth.passwordFile .Values.auth.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "shoal.hasToken" -}}
{{- if or .Values.admin.token .Values.admin.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Container ports of a broker pod. */}}
{{- define "shoal.containerPorts" -}}
- name: mqtt
  containerPort: {{ .Values.listeners.mqtt.port }}
  protocol: TCP
{{- if .Values.listeners.tls.enabled }}
- name: mqtts
  containerPort: {{ .Values.listeners.tls.port }}
  protocol: TCP
{{- end }}
{{- if .Values.listeners.ws.enabled }}
- name: ws
  containerPort: {{ .Values.listeners.ws.port }}
  protocol: TCP
{{- end }}
{{- if .Values.listeners.wss.enabled }}
- name: wss
  containerPort: {{ .Values.listeners.wss.port }}
  protocol: TCP
{{- end }}
{{- if .Values.listeners.quic.enabled }}
- name: quic
  containerPort: {{ .Values.listeners.quic.port }}
  protocol: UDP
{{- end }}
- name: admin
  containerPort: {{ .Values.admin.port }}
  protocol: TCP
{{- if .Values.cluster.enabled }}
- name: cluster
  containerPort: {{ .Values.cluster.port }}
  protocol: TCP
{{- end }}
{{- end -}}

{{/* The broker container, shared by the StatefulSet and the front ends. */}}
{{- define "shoal.container" -}}
- name: shoal
  image: {{ include "shoal.image" .root | quote }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args:
    - --config
    - /etc/shoal/config/shoal.toml
  env:
    # The pod's name is also its host name (HOSTNAME), from which a broker derives its node
    # id: the ordinal plus one (pod <name>-2 is node 3).
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- if .root.Values.cluster.enabled }}
    - name: SHOAL_CLUSTER_LISTEN
      value: {{ printf "0.0.0.0:%v" .root.Values.cluster.port | quote }}
    # Every broker pod, ready or not (the headless Service publishes not-ready addresses),
    # looked up again at every join attempt.
    - name: SHOAL_DISCOVERY
      value: {{ include "shoal.discovery" .root | quote }}
    # This pod's stable DNS name under its headless Service: the same across restarts.
    - name: SHOAL_CLUSTER_ADVERTISE
      value: {{ printf "$(POD_NAME).%s.%s.svc.%s:%v" .service .root.Release.Namespace .root.Values.cluster.domain .root.Values.cluster.port | quote }}
    # Every pod of the cluster has the same number of session shards.
    - name: SHOAL_SESSION_SHARDS
      value: {{ .root.Values.cluster.sessionShards | quote }}
    {{- with .root.Values.cluster.mqttAdvertise }}
    # Where this pod's MQTT clients reach it: other nodes name it when they send clients away.
    - name: SHOAL_MQTT_ADVERTISE
      value: {{ . | quote }}
    {{- end }}
    {{- if .frontend }}
    - name: SHOAL_ROLE
      value: frontend
    # Front-end node ids: the digits 100 then the ordinal (1000, 1001, ..., 10010), clear
    # of the brokers' 1, 2, 3, ... A front end never starts a cluster.
    - name: POD_INDEX
      valueFrom:
        fieldRef:
          fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
    - name: SHOAL_NODE_ID
      value: "100$(POD_INDEX)"
    {{- else }}
    # Only the first pod starts a new cluster (and only while its volume is empty); the
    # others join it through the discovery name.
    - name: SHOAL_BOOTSTRAP_HOST
      value: {{ printf "%s-0" (include "shoal.fullname" .root) | quote }}
    {{- end }}
    {{- end }}
    {{- if include "shoal.hasToken" .root }}
    - name: SHOAL_ADMIN_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ include "shoal.adminSecret" .root }}
          key: token
    {{- end }}
    {{- with .root.Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- include "shoal.containerPorts" .root | nindent 4 }}
  startupProbe:
    httpGet:
      path: /healthz
      port: admin
    periodSeconds: {{ .root.Values.probes.startup.periodSeconds }}
    failureThreshold: {{ .root.Values.probes.startup.failureThreshold }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin
    periodSeconds: {{ .root.Values.probes.liveness.periodSeconds }}
    failureThreshold: {{ .root.Values.probes.liveness.failureThreshold }}
    timeoutSeconds: {{ .root.Values.probes.liveness.timeoutSeconds }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin
    periodSeconds: {{ .root.Values.probes.readiness.periodSeconds }}
    failureThreshold: {{ .root.Values.probes.readiness.failureThreshold }}
    timeoutSeconds: {{ .root.Values.probes.readiness.timeoutSeconds }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ .root.Values.preStopSleepSeconds }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: data
      mountPath: /data
    - name: config
      mountPath: /etc/shoal/config
      readOnly: true
    - name: tmp
      mountPath: /tmp
    {{- if include "shoal.needsTLS" .root }}
    - name: tls
      mountPath: /etc/shoal/tls
      readOnly: true
    {{- end }}
    {{- if include "shoal.hasPasswords" .root }}
    - name: auth
      mountPath: /etc/shoal/auth
      readOnly: true
    {{- end }}
{{- end -}}

{{/* Pod volumes besides the data folder. */}}
{{- define "shoal.volumes" -}}
- name: config
  configMap:
    name: {{ include "shoal.fullname" . }}
- name: tmp
  emptyDir: {}
{{- if include "shoal.needsTLS" . }}
- name: tls
  secret:
    secretName: {{ include "shoal.tlsSecret" . }}
{{- end }}
{{- if include "shoal.hasPasswords" . }}
- name: auth
  secret:
    secretName: {{ include "shoal.authSecret" . }}
{{- end }}
{{- end -}}

{{- define "shoal.affinity" -}}
{{- if .root.Values.affinity }}
{{- toYaml .root.Values.affinity }}
{{- else if eq .root.Values.podAntiAffinity "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "shoal.selectorLabels" .root | nindent 10 }}
          app.kubernetes.io/component: {{ .component }}
{{- else if eq .root.Values.podAntiAffinity "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "shoal.selectorLabels" .root | nindent 12 }}
            app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}
