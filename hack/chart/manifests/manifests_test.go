package manifests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	chartDir = "../../../deploy/helm/sidelane"
	baseDir  = "../../../deploy/base"
)

// The checked-in kustomize base is exactly the chart rendered with its default values.
func TestBaseIsTheRenderedChart(t *testing.T) {
	files, err := RenderBase(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	diffs, err := Diff(baseDir, files)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("deploy/base is not the chart rendered with its default values (run make manifests):\n  %s", strings.Join(diffs, "\n  "))
	}
}

// Diff notices a changed, a missing and an extra file (the drift test can fail).
func TestDiffNamesEveryDifference(t *testing.T) {
	dir := t.TempDir()
	files := map[string][]byte{"a.yaml": []byte("x: 1\ny: 2\n"), "b.yaml": []byte("b\n")}
	if err := Write(dir, files); err != nil {
		t.Fatal(err)
	}
	if d, err := Diff(dir, files); err != nil || len(d) != 0 {
		t.Fatalf("Diff after Write = %v, %v; want none", d, err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "a.yaml"), []byte("x: 1\ny: 3\n"), 0o644))
	must(t, os.Remove(filepath.Join(dir, "b.yaml")))
	must(t, os.WriteFile(filepath.Join(dir, "c.yaml"), []byte("c\n"), 0o644))
	d, err := Diff(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`a.yaml: line 2 is "y: 3", the chart renders "y: 2"`, "b.yaml: missing", "c.yaml: not rendered by the chart"}
	if strings.Join(d, "|") != strings.Join(want, "|") {
		t.Errorf("Diff = %q, want %q", d, want)
	}
	// Write removes the stale file and restores the others.
	must(t, Write(dir, files))
	if d, err := Diff(dir, files); err != nil || len(d) != 0 {
		t.Fatalf("Diff after a second Write = %v, %v; want none", d, err)
	}
}

func TestLint(t *testing.T) {
	if err := Lint(chartDir, Namespace, nil); err != nil {
		t.Fatal(err)
	}
}

// A wrong value is refused at install, naming the value.
func TestWrongValuesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name, namespace string
		set             []string
		want            []string // all in the error
	}{
		{"unknown backend", Namespace, []string{"agent.backend=ebpf"}, []string{"/agent/backend", "auto", "nftables", "iptables"}},
		{"string for a number", Namespace, []string{"injector.replicas=two"}, []string{"/injector/replicas", "integer"}},
		{"timeout out of range", Namespace, []string{"injector.webhook.timeoutSeconds=45"}, []string{"/injector/webhook/timeoutSeconds", "30"}},
		{"failure policy", Namespace, []string{"injector.webhook.failurePolicy=fail"}, []string{"/injector/webhook/failurePolicy", "Fail"}},
		{"log level", Namespace, []string{"proxy.logLevel=verbose"}, []string{"/proxy/logLevel"}},
		{"repair mode", Namespace, []string{"agent.repairMode=restart"}, []string{"/agent/repairMode"}},
		{"agent TLS", Namespace, []string{"agent.api.tls=on"}, []string{"/agent/api/tls", "self-signed"}},
		{"native sidecar not a boolean", Namespace, []string{"proxy.nativeSidecar=yes"}, []string{"/proxy/nativeSidecar", "boolean"}},
		{"bad digest", Namespace, []string{"agent.image.digest=sha256:abc"}, []string{"/agent/image/digest"}},
		{"pull policy", Namespace, []string{"image.pullPolicy=always"}, []string{"/image/pullPolicy"}},
		{"typo in a key", Namespace, []string{"agent.logLevle=debug"}, []string{"/agent", "logLevle"}},
		{"relative CNI dir", Namespace, []string{"agent.cni.confDir=etc/cni"}, []string{"/agent/cni/confDir"}},
		{"bad resource quantity", Namespace, []string{"proxy.resources.limits.memory=lots"}, []string{"/proxy/resources/limits/memory"}},
		{"another namespace", "mesh", nil, []string{`"mesh"`, "sidelane-system"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals, err := Set(tc.set...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Render(chartDir, tc.namespace, vals)
			if err == nil {
				t.Fatalf("--set %v rendered; want it refused", tc.set)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

// Each value ends up where it acts.
func TestValuesRender(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name string
		set  []string
		// check returns what is wrong with the rendered objects, by "Kind/name".
		check func(objs map[string]map[string]any) string
	}{
		{"defaults are the base's", nil, func(o map[string]map[string]any) string {
			return expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.image", "sidelane/agent:dev") +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.readinessProbe.httpGet.port", float64(15080)) +
				expect(o, "Deployment/sidelane-injector", "spec.replicas", float64(2)) +
				expect(o, "MutatingWebhookConfiguration/sidelane-injector", "webhooks.0.namespaceSelector.matchExpressions.1.values", []any{"kube-system", "sidelane-system"}) +
				expect(o, "Namespace/sidelane-system", "metadata.labels.pod-security\\.kubernetes\\.io/enforce", "privileged")
		}},
		{"private registry, tag, pull policy", []string{"image.registry=registry.example:5000/mesh/sidelane", "image.tag=v1.2.3", "image.pullPolicy=Always", "image.pullSecrets={regcred}"}, func(o map[string]map[string]any) string {
			return expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.image", "registry.example:5000/mesh/sidelane/agent:v1.2.3") +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.imagePullPolicy", "Always") +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.imagePullSecrets.0.name", "regcred") +
				expect(o, "Deployment/sidelane-injector", "spec.template.spec.containers.0.image", "registry.example:5000/mesh/sidelane/injector:v1.2.3") +
				expect(o, "Deployment/sidelane-injector", "spec.template.spec.imagePullSecrets.0.name", "regcred") +
				proxyTemplate(o, "image", "registry.example:5000/mesh/sidelane/proxy:v1.2.3") +
				proxyTemplate(o, "imagePullPolicy", "Always")
		}},
		{"digest and per-image tag", []string{"agent.image.digest=" + digest, "injector.image.tag=canary", "proxy.image.pullPolicy=Never"}, func(o map[string]map[string]any) string {
			return expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.image", "sidelane/agent@"+digest) +
				expect(o, "Deployment/sidelane-injector", "spec.template.spec.containers.0.image", "sidelane/injector:canary") +
				proxyTemplate(o, "imagePullPolicy", "Never") + proxyTemplate(o, "image", "sidelane/proxy:dev")
		}},
		{"agent settings", []string{"agent.backend=iptables", "agent.repairMode=off", "agent.logLevel=debug", "excludeNamespaces={kube-system,monitoring}", "agent.cni.confDir=/var/lib/cni/conf", "agent.priorityClassName=", "agent.tolerations=null"}, func(o map[string]map[string]any) string {
			args := []any{"run", "--cni-conf-dir=/var/lib/cni/conf", "--cni-bin-dir=/opt/cni/bin", "--plugin-binary=/usr/local/bin/sidelane-cni",
				"--backend=iptables", "--repair-mode=off", "--exclude-namespaces=kube-system,monitoring,sidelane-system", "--log-level=debug", "--tls=off"}
			return expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.args", args) +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.volumes.0.hostPath.path", "/var/lib/cni/conf") +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.volumeMounts.0.mountPath", "/var/lib/cni/conf") +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.priorityClassName", nil) +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.tolerations", nil) +
				expect(o, "Deployment/sidelane-injector", "spec.template.spec.containers.0.args.7", "--exclude-namespaces=kube-system,monitoring,sidelane-system") +
				expect(o, "MutatingWebhookConfiguration/sidelane-injector", "webhooks.1.namespaceSelector.matchExpressions.1.values", []any{"kube-system", "monitoring", "sidelane-system"})
		}},
		{"agent API with TLS", []string{"agent.api.tls=self-signed"}, func(o map[string]map[string]any) string {
			return expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.args.8", "--tls=self-signed") +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.readinessProbe.httpGet.scheme", "HTTPS") +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.livenessProbe.httpGet.scheme", "HTTPS")
		}},
		{"agent API off", []string{"agent.api.enabled=false"}, func(o map[string]map[string]any) string {
			return expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.args.8", "--listen=off") +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.readinessProbe", nil) +
				expect(o, "DaemonSet/sidelane-agent", "spec.template.spec.containers.0.ports", nil)
		}},
		{"webhook and injector", []string{"injector.webhook.failurePolicy=Ignore", "injector.webhook.timeoutSeconds=3", "injector.webhook.namespaceSelector.matchLabels.env=staging", "injector.replicas=3", "injector.logLevel=warn", "injector.nodeSelector.pool=system"}, func(o map[string]map[string]any) string {
			s := ""
			for _, i := range []string{"0", "1"} {
				s += expect(o, "MutatingWebhookConfiguration/sidelane-injector", "webhooks."+i+".failurePolicy", "Ignore") +
					expect(o, "MutatingWebhookConfiguration/sidelane-injector", "webhooks."+i+".timeoutSeconds", float64(3)) +
					expect(o, "MutatingWebhookConfiguration/sidelane-injector", "webhooks."+i+".namespaceSelector.matchLabels.env", "staging")
			}
			return s + expect(o, "Deployment/sidelane-injector", "spec.replicas", float64(3)) +
				expect(o, "Deployment/sidelane-injector", "spec.template.spec.containers.0.args.8", "--log-level=warn") +
				expect(o, "Deployment/sidelane-injector", "spec.template.spec.nodeSelector.pool", "system")
		}},
		{"proxy template", []string{"proxy.nativeSidecar=false", "proxy.logLevel=error", "proxy.resources.limits.memory=1Gi"}, func(o map[string]map[string]any) string {
			return proxyTemplate(o, "nativeSidecar", false) + proxyTemplate(o, "logLevel", "error") +
				proxyTemplate(o, "resources.limits.memory", "1Gi") + proxyTemplate(o, "resources.requests.cpu", "10m")
		}},
		{"no namespace", []string{"namespace.create=false"}, func(o map[string]map[string]any) string {
			if _, ok := o["Namespace/sidelane-system"]; ok {
				return "the Namespace is rendered; "
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals, err := Set(tc.set...)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Render(chartDir, Namespace, vals)
			if err != nil {
				t.Fatal(err)
			}
			objs := map[string]map[string]any{}
			for doc := range strings.SplitSeq(m, "\n---\n") {
				var o map[string]any
				if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
					t.Fatalf("rendered YAML: %v\n%s", err, doc)
				}
				if o == nil {
					continue
				}
				objs[o["kind"].(string)+"/"+lookup(o, "metadata.name").(string)] = o
			}
			if problem := tc.check(objs); problem != "" {
				t.Error(problem)
			}
		})
	}
}

// expect returns "" when the field at the dotted path of object key is want (nil: absent).
func expect(objs map[string]map[string]any, key, path string, want any) string {
	o, ok := objs[key]
	if !ok {
		return key + " not rendered; "
	}
	got := lookup(o, path)
	if gy, wy := mustYAML(got), mustYAML(want); gy != wy {
		return key + " " + path + " = " + gy + ", want " + wy + "; "
	}
	return ""
}

// proxyTemplate checks a field of the injector's template (the ConfigMap's template.yaml).
func proxyTemplate(objs map[string]map[string]any, path string, want any) string {
	cm, ok := objs["ConfigMap/sidelane-injector-template"]
	if !ok {
		return "ConfigMap/sidelane-injector-template not rendered; "
	}
	var tmpl map[string]any
	if err := yaml.Unmarshal([]byte(lookup(cm, "data.template\\.yaml").(string)), &tmpl); err != nil {
		return "template.yaml: " + err.Error() + "; "
	}
	return expect(map[string]map[string]any{"template": tmpl}, "template", path, want)
}

// lookup follows a dotted path ("a.0.b"; "\." is a literal dot) through maps and lists.
func lookup(v any, path string) any {
	for _, p := range splitPath(path) {
		switch c := v.(type) {
		case map[string]any:
			v = c[p]
		case []any:
			i := 0
			for _, r := range p {
				i = i*10 + int(r-'0')
			}
			if i >= len(c) {
				return nil
			}
			v = c[i]
		default:
			return nil
		}
	}
	return v
}

func splitPath(path string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(path); i++ {
		switch {
		case path[i] == '\\' && i+1 < len(path) && path[i+1] == '.':
			cur.WriteByte('.')
			i++
		case path[i] == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(path[i])
		}
	}
	return append(parts, cur.String())
}

func mustYAML(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(string(b))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
