{{/* Names, labels and the cluster's addresses, shared by every template. */}}

{{- define "mq9cluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mq9cluster.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mq9cluster.headlessName" -}}
{{- printf "%s-headless" (include "mq9cluster.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mq9cluster.serviceAccountName" -}}
{{- default (include "mq9cluster.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "mq9cluster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mq9cluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mq9cluster.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mq9cluster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mq9cluster.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The DNS domain under which each pod has a name: <pod>.<headless>.<namespace>.svc.<domain> */}}
{{- define "mq9cluster.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "mq9cluster.headlessName" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* The initial members' addresses on one port (dict "root" $ "port" N), comma-separated: on the
Raft port the static peers and every joiner's seeds, on the route port every pod's first routes. */}}
{{- define "mq9cluster.initialMembers" -}}
{{- $addresses := list -}}
{{- range $i := until (int .root.Values.cluster.initialMembers) -}}
{{- $addresses = append $addresses (printf "%s-%d.%s:%d" (include "mq9cluster.fullname" $.root) $i (include "mq9cluster.podDomain" $.root) (int $.port)) -}}
{{- end -}}
{{- join "," $addresses -}}
{{- end -}}

{{/* The ports every pod listens on, by name, each from config.<name>.port: the container's ports
and the headless Service's. peerPorts are open to the release's own pods only (NetworkPolicy):
Raft and the core-NATS routes ("cluster"), neither of which authenticates its peers. */}}
{{- define "mq9cluster.portNames" -}}
{{- list "nats" "raft" "cluster" "monitor" | toJson -}}
{{- end -}}

{{- define "mq9cluster.peerPorts" -}}
{{- list "raft" "cluster" | toJson -}}
{{- end -}}

{{- define "mq9cluster.ports" -}}
{{- $ports := list -}}
{{- range $name := include "mq9cluster.portNames" . | fromJsonArray -}}
{{- $ports = append $ports (dict "name" $name "port" (int (get $.Values.config $name).port)) -}}
{{- end -}}
{{- toJson (dict "ports" $ports) -}}
{{- end -}}

{{/* The broker's config file: chart-owned options over the user's config.options. */}}
{{- define "mq9cluster.brokerConfig" -}}
{{- $owned := dict "host" "0.0.0.0" "port" (int .Values.config.nats.port) "http_port" (int .Values.config.monitor.port) "data_dir" "/data" "cluster_addr" (printf "0.0.0.0:%d" (int .Values.config.cluster.port)) -}}
{{- toPrettyJson (merge $owned (deepCopy .Values.config.options)) -}}
{{- end -}}
