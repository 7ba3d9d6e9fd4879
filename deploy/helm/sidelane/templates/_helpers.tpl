{{/*
The namespace Sidelane runs in. kubectl-sidelane, the CNI plugin and the agent's defaults look
for Sidelane in sidelane-system (internal/contract.SystemNamespace), so the chart refuses any
other release namespace instead of installing something half-working.
*/}}
{{- define "sidelane.namespace" -}}
{{- if ne .Release.Namespace "sidelane-system" -}}
{{- fail (printf "release namespace %q: install Sidelane into the namespace sidelane-system (helm install --namespace sidelane-system --create-namespace); kubectl-sidelane and the CNI plugin look for it there" .Release.Namespace) -}}
{{- end -}}
{{- .Release.Namespace -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "sidelane.labels" -}}
app.kubernetes.io/part-of: sidelane
{{- end -}}

{{/*
An image reference: (list $ .Values.agent.image) → <registry>/<name>:<tag>, or
<registry>/<name>@<digest> when the image has a digest. The tag defaults to image.tag.
*/}}
{{- define "sidelane.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- $ref := $img.name -}}
{{- with $root.Values.image.registry -}}
{{- $ref = printf "%s/%s" (trimSuffix "/" .) $img.name -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $ref $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (default $root.Values.image.tag $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* The pull policy of an image: (list $ .Values.agent.image). */}}
{{- define "sidelane.pullPolicy" -}}
{{- $root := index . 0 -}}
{{- default $root.Values.image.pullPolicy (index . 1).pullPolicy -}}
{{- end -}}

{{/* Namespaces never captured nor injected, comma-separated: excludeNamespaces + the release namespace. */}}
{{- define "sidelane.excludeNamespaces" -}}
{{- $ns := list -}}
{{- range .Values.excludeNamespaces -}}
{{- $ns = append $ns . -}}
{{- end -}}
{{- $ns = append $ns (include "sidelane.namespace" .) -}}
{{- join "," (uniq $ns) -}}
{{- end -}}
