package inject

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/sidelane/sidelane/internal/contract"
)

// podTemplatePaths says where each workload kind keeps its pod (template), by API group.
var podTemplatePaths = map[string]struct {
	groups []string // accepted API groups ("" is core)
	path   []string // path of the pod template from the document root
}{
	"Pod":                   {[]string{""}, nil},
	"ReplicationController": {[]string{""}, []string{"spec", "template"}},
	"Deployment":            {[]string{"apps", "extensions"}, []string{"spec", "template"}},
	"StatefulSet":           {[]string{"apps"}, []string{"spec", "template"}},
	"DaemonSet":             {[]string{"apps", "extensions"}, []string{"spec", "template"}},
	"ReplicaSet":            {[]string{"apps", "extensions"}, []string{"spec", "template"}},
	"Job":                   {[]string{"batch"}, []string{"spec", "template"}},
	"CronJob":               {[]string{"batch"}, []string{"spec", "jobTemplate", "spec", "template"}},
}

// InjectYAML reads a multi-document YAML (or JSON) stream of Kubernetes objects and writes it
// back with the proxy injected into every Pod and into the pod template of every Deployment,
// StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job and CronJob (and the items of
// a List), through the same Select and Patch as the webhook. The namespace is taken as opted
// in; excluded namespaces, pods opted out, hostNetwork pods and pods already injected are
// left alone. Documents keep their order; documents that are not changed are written back
// byte for byte, changed ones are re-encoded as YAML (keys sorted). Nothing is written when
// any document is malformed or refused: the error names the document.
func InjectYAML(in io.Reader, out io.Writer, tpl Template) error {
	if err := tpl.Validate(); err != nil {
		return err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(in))
	var buf bytes.Buffer
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("document %d: %w", n, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			n--
			continue
		}
		res, err := injectDocument(doc, tpl)
		if err != nil {
			return fmt.Errorf("document %d%s: %w", n, describe(doc), err)
		}
		if buf.Len() > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(res)
		if !bytes.HasSuffix(res, []byte("\n")) {
			buf.WriteByte('\n')
		}
	}
	_, err := out.Write(buf.Bytes())
	return err
}

// injectDocument returns the document with the proxy injected, or the document itself when
// nothing is to be injected.
func injectDocument(doc []byte, tpl Template) ([]byte, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := json.Unmarshal(js, &obj); err != nil || obj == nil {
		// Not an object (a comment-only document, a scalar): not ours to judge.
		return doc, nil
	}
	changed, err := injectObject(obj, tpl)
	if err != nil || !changed {
		return doc, err
	}
	return yaml.Marshal(obj)
}

// injectObject injects into obj in place and reports whether it changed.
func injectObject(obj map[string]any, tpl Template) (bool, error) {
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	group := ""
	if i := strings.Index(apiVersion, "/"); i >= 0 {
		group = apiVersion[:i]
	}
	if kind == "List" && group == "" {
		items, _ := obj["items"].([]any)
		changed := false
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				continue
			}
			c, err := injectObject(m, tpl)
			if err != nil {
				return false, fmt.Errorf("item %d%s: %w", i, describeObject(m), err)
			}
			changed = changed || c
		}
		return changed, nil
	}
	where, ok := podTemplatePaths[kind]
	if !ok || !slices.Contains(where.groups, group) {
		return false, nil
	}
	parent := obj
	for _, key := range where.path {
		next, ok := parent[key].(map[string]any)
		if !ok {
			return false, fmt.Errorf("%s has no %s", kind, strings.Join(where.path, "."))
		}
		parent = next
	}
	podObj := parent
	meta, _ := obj["metadata"].(map[string]any)
	ns, _ := meta["namespace"].(string)

	if _, ok := podObj["metadata"].(map[string]any); !ok {
		podObj["metadata"] = map[string]any{}
	}
	raw, err := json.Marshal(podObj)
	if err != nil {
		return false, err
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		return false, fmt.Errorf("decoding the pod: %w", err)
	}
	d, err := Select(&pod, ns, contract.DefaultExcludeNamespaces, func() (map[string]string, error) {
		return map[string]string{contract.InjectLabel: contract.InjectEnabled}, nil
	})
	if err != nil || !d.Inject {
		return false, err
	}
	ops, err := Patch(&pod, tpl)
	if err != nil {
		return false, err
	}
	patchJSON, err := json.Marshal(ops)
	if err != nil {
		return false, err
	}
	p, err := jsonpatch.DecodePatch(patchJSON)
	if err != nil {
		return false, err
	}
	patched, err := p.Apply(raw)
	if err != nil {
		return false, fmt.Errorf("applying the patch: %w", err)
	}
	var out map[string]any
	if err := json.Unmarshal(patched, &out); err != nil {
		return false, err
	}
	clear(podObj)
	for k, v := range out {
		podObj[k] = v
	}
	return true, nil
}

// describe names a document for errors: " (Kind namespace/name)" when it can be read.
func describe(doc []byte) string {
	var obj map[string]any
	if err := yaml.Unmarshal(doc, &obj); err != nil {
		return ""
	}
	return describeObject(obj)
}

func describeObject(obj map[string]any) string {
	kind, _ := obj["kind"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if name == "" {
		name, _ = meta["generateName"].(string)
	}
	if ns, _ := meta["namespace"].(string); ns != "" {
		name = ns + "/" + name
	}
	if kind == "" && name == "" {
		return ""
	}
	return fmt.Sprintf(" (%s %s)", kind, name)
}
