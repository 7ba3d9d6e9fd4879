package inject

import (
	"bufio"
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/sidelane/sidelane/internal/contract"
)

var update = flag.Bool("update", false, "rewrite the golden files of the manual mode")

// TestInjectYAMLGolden injects testdata/*.yaml and compares with testdata/*.golden
// (go test ./internal/inject -run Golden -update rewrites them). Files whose name contains
// "-regular" are injected with a regular container, the others as a native sidecar.
func TestInjectYAMLGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, in := range files {
		t.Run(filepath.Base(in), func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			tpl := testTemplate(!strings.Contains(in, "-regular"))
			var out bytes.Buffer
			if err := InjectYAML(bytes.NewReader(src), &out, tpl); err != nil {
				t.Fatalf("InjectYAML: %v", err)
			}
			golden := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("output differs from %s (run with -update after checking):\n%s", golden, out.String())
			}
			// Injecting the output again changes nothing.
			var again bytes.Buffer
			if err := InjectYAML(bytes.NewReader(out.Bytes()), &again, tpl); err != nil {
				t.Fatalf("second InjectYAML: %v", err)
			}
			if !bytes.Equal(again.Bytes(), out.Bytes()) {
				t.Errorf("injecting twice is not a no-op:\n%s", again.String())
			}
		})
	}
}

// TestInjectYAMLDocuments checks the golden output's meaning, not just its bytes.
func TestInjectYAMLDocuments(t *testing.T) {
	src, err := os.ReadFile("testdata/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := InjectYAML(bytes.NewReader(src), &out, testTemplate(true)); err != nil {
		t.Fatal(err)
	}
	docs := splitDocs(t, out.Bytes())
	wantKinds := []string{"Pod", "Deployment", "Service", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "ConfigMap"}
	if len(docs) != len(wantKinds) {
		t.Fatalf("%d documents, want %d", len(docs), len(wantKinds))
	}
	for i, doc := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		if obj["kind"] != wantKinds[i] {
			t.Errorf("document %d is %v, want %s (order kept)", i+1, obj["kind"], wantKinds[i])
		}
		var path []string
		switch wantKinds[i] {
		case "Service", "ConfigMap":
			continue
		case "Pod":
		case "CronJob":
			path = []string{"spec", "jobTemplate", "spec", "template"}
		default:
			path = []string{"spec", "template"}
		}
		m := obj
		for _, k := range path {
			m = m[k].(map[string]any)
		}
		b, _ := yaml.Marshal(m)
		var pod corev1.Pod
		if err := yaml.Unmarshal(b, &pod); err != nil {
			t.Fatal(err)
		}
		if !AlreadyInjected(&pod) || len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != contract.ProxyContainerName {
			t.Errorf("document %d (%s): pod template not injected: %s", i+1, wantKinds[i], b)
		}
	}
	if !bytes.Contains(out.Bytes(), []byte("# comments of untouched documents survive")) {
		t.Error("an untouched document was re-encoded")
	}
	if !bytes.Contains(out.Bytes(), []byte(`redirect.sidelane.io/exclude-inbound-ports: "9090"`)) {
		t.Error("the Deployment's own redirect annotation was not kept")
	}
}

func TestInjectYAMLSkippedUnchanged(t *testing.T) {
	src, err := os.ReadFile("testdata/skipped.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := InjectYAML(bytes.NewReader(src), &out, testTemplate(true)); err != nil {
		t.Fatal(err)
	}
	if got, want := splitDocs(t, out.Bytes()), splitDocs(t, src); len(got) != len(want) {
		t.Fatalf("%d documents, want %d", len(got), len(want))
	} else {
		for i := range got {
			if !bytes.Equal(bytes.TrimSpace(got[i]), bytes.TrimSpace(want[i])) {
				t.Errorf("document %d changed:\n%s", i+1, got[i])
			}
		}
	}
}

func TestInjectYAMLErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"refused pod names the document", `apiVersion: v1
kind: ConfigMap
metadata: {name: x}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  template:
    metadata:
      annotations: {redirect.sidelane.io/inbound-ports: "99999"}
    spec:
      containers: [{name: api, image: api:1}]
`, []string{"document 2 (Deployment shop/api)", "redirect.sidelane.io/inbound-ports", `"99999"`}},
		{"app as proxy uid", `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  securityContext: {runAsUser: 1337}
  containers: [{name: app, image: app:1}]
`, []string{"document 1 (Pod p)", `container "app"`, "uid 1337"}},
		{"malformed yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: [\n", []string{"document 1"}},
		{"workload without a template", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n", []string{"document 1 (Deployment d)", "spec.template"}},
		{"pod of the wrong shape", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n", []string{"document 1 (Pod p)", "decoding the pod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := InjectYAML(strings.NewReader(tc.in), &out, testTemplate(true))
			if err == nil {
				t.Fatalf("no error; output:\n%s", out.String())
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if out.Len() != 0 {
				t.Errorf("output written despite the error:\n%s", out.String())
			}
		})
	}
	var out bytes.Buffer
	bad := testTemplate(true)
	bad.Image = ""
	if err := InjectYAML(strings.NewReader("kind: Pod\n"), &out, bad); err == nil || !strings.Contains(err.Error(), "image is empty") {
		t.Errorf("bad template: error %v", err)
	}
}

func TestInjectYAMLJSONInput(t *testing.T) {
	in := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"a","image":"a:1"}]}}`
	var out bytes.Buffer
	if err := InjectYAML(strings.NewReader(in), &out, testTemplate(false)); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.Unmarshal(out.Bytes(), &pod); err != nil {
		t.Fatal(err)
	}
	if len(pod.Spec.Containers) != 2 || pod.Spec.Containers[1].Name != contract.ProxyContainerName {
		t.Errorf("JSON pod not injected:\n%s", out.String())
	}
}

func splitDocs(t *testing.T, b []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufioReader(b))
	var docs [][]byte
	for {
		d, err := r.Read()
		if err != nil {
			break
		}
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
