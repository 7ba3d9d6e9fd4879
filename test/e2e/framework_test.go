//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/agentapi/unixhttp"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
	"github.com/sidelane/sidelane/internal/testenv"
)

const (
	systemNS      = contract.SystemNamespace
	agentDS       = "sidelane-agent"
	agentSelector = "app.kubernetes.io/name=sidelane-agent"
	demoImage     = "sidelane/demo-app:dev"
	// podTimeout is generous: a loaded 2-core CI machine starts pods slowly.
	podTimeout = 3 * time.Minute
)

// env is what hack/e2e.sh (hack/cluster.sh env) tells the tests about the cluster.
type env struct {
	root       string // repository root
	kubectl    string
	kubeconfig string
	clusterDir string
	cniConfDir string
	cniBinDir  string
	kube       *kubernetes.Clientset
}

var cluster *env

// setup reads the environment once; every test calls it first.
func setup(t *testing.T) *env {
	t.Helper()
	testenv.RequireRoot(t)
	if cluster != nil {
		return cluster
	}
	e := &env{
		root:       os.Getenv("SIDELANE_ROOT"),
		kubectl:    os.Getenv("SIDELANE_KUBECTL"),
		kubeconfig: os.Getenv("KUBECONFIG"),
		clusterDir: os.Getenv("SIDELANE_CLUSTER_DIR"),
		cniConfDir: os.Getenv("SIDELANE_CNI_CONF_DIR"),
		cniBinDir:  os.Getenv("SIDELANE_CNI_BIN_DIR"),
	}
	ok := e.kubectl != "" && e.kubeconfig != "" && e.clusterDir != "" && e.cniConfDir != "" && e.root != ""
	testenv.Require(t, ok, "no local cluster environment: run hack/e2e.sh (or eval \"$(hack/cluster.sh env)\" with SIDELANE_ROOT and SIDELANE_KUBECTL set)")
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", e.kubeconfig, err)
	}
	cfg.Timeout = 30 * time.Second
	e.kube, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	cluster = e
	return e
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return c
}

// run runs a command and returns its standard output; an error carries both outputs.
// (Standard error is kept apart: kubectl exec writes stream warnings there.)
func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s%s", name, strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String(), nil
}

func (e *env) kubectlRun(args ...string) (string, error) {
	return run(e.kubectl, append([]string{"--kubeconfig", e.kubeconfig}, args...)...)
}

// plugin runs bin/kubectl-sidelane and returns its output and exit code.
func (e *env) plugin(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(e.root, "bin", "kubectl-sidelane"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("kubectl-sidelane %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), code
}

func randSuffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// namespace creates a namespace with a unique name and deletes it when the test ends.
// inject labels it for injection; restricted enforces the "restricted" Pod Security Standard.
func (e *env) namespace(t *testing.T, prefix string, inject, restricted bool) string {
	t.Helper()
	name := prefix + "-" + randSuffix()
	labels := map[string]string{}
	if inject {
		labels[contract.InjectLabel] = contract.InjectEnabled
	}
	if restricted {
		labels["pod-security.kubernetes.io/enforce"] = "restricted"
		labels["pod-security.kubernetes.io/enforce-version"] = "latest"
	}
	_, err := e.kube.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.dump(t, name)
		}
		e.kube.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// podOpts describe a demo-app pod.
type podOpts struct {
	args        []string
	labels      map[string]string
	annotations map[string]string
}

// demoPod is a demo-app pod that passes the "restricted" Pod Security Standard.
func demoPod(ns, name string, o podOpts) *corev1.Pod {
	no, yes := false, true
	labels := map[string]string{"app": name}
	for k, v := range o.labels {
		labels[k] = v
	}
	grace := int64(2)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: o.annotations},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &yes,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           demoImage,
				ImagePullPolicy: corev1.PullNever,
				Args:            o.args,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no,
					ReadOnlyRootFilesystem:   &yes,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

func serverPod(ns, name string, o podOpts) *corev1.Pod {
	if o.args == nil {
		o.args = []string{"serve", "-listen=:8080,:9090"}
	}
	return demoPod(ns, name, o)
}

// clientPod idles (pause mode); the tests make it call with kubectl exec.
func clientPod(ns, name string, o podOpts) *corev1.Pod {
	o.args = []string{"pause"}
	return demoPod(ns, name, o)
}

func (e *env) createPod(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	got, err := e.kube.CoreV1().Pods(p.Namespace).Create(ctx(t), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	return got
}

// waitPod polls until cond holds for the pod, or fails the test with a dump.
func (e *env) waitPod(t *testing.T, ns, name string, timeout time.Duration, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *corev1.Pod
	for {
		p, err := e.kube.CoreV1().Pods(ns).Get(ctx(t), name, metav1.GetOptions{})
		if err == nil {
			last = p
			if cond(p) {
				return p
			}
		} else if !apierrors.IsNotFound(err) {
			t.Logf("get pod %s/%s: %v", ns, name, err)
		}
		if time.Now().After(deadline) {
			phase := "absent"
			if last != nil {
				phase = string(last.Status.Phase)
			}
			e.dump(t, ns)
			t.Fatalf("pod %s/%s: not %s after %v (phase %s)", ns, name, what, timeout, phase)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func (e *env) waitReady(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	return e.waitPod(t, ns, name, podTimeout, "Ready", ready)
}

func hasContainer(p *corev1.Pod, name string) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range p.Spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.ContainerStatuses...), p.Status.InitContainerStatuses...) {
		n += s.RestartCount
	}
	return n
}

// exec runs a command in a container of a pod.
func (e *env) exec(ns, pod, container string, cmd ...string) (string, error) {
	return e.kubectlRun(append([]string{"-n", ns, "exec", pod, "-c", container, "--"}, cmd...)...)
}

// get makes the client pod call url with demo-app and returns what it printed.
func (e *env) get(t *testing.T, ns, pod, url string) string {
	t.Helper()
	var out string
	var err error
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err = e.exec(ns, pod, "app", "demo-app", "get", url)
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			e.dump(t, ns)
			t.Fatalf("GET %s from %s/%s kept failing: %v", url, ns, pod, err)
		}
		time.Sleep(time.Second)
	}
}

// metrics reads the Prometheus text of a pod's proxy and sums each metric by name and
// direction ("sidelane_proxy_requests_total/inbound" → value).
func metrics(t *testing.T, podIP string) map[string]float64 {
	t.Helper()
	url := fmt.Sprintf("http://%s:%d%s", podIP, contract.PrometheusPort, contract.PrometheusPath)
	var body []byte
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 {
				break
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy metrics at %s: %v", url, err)
		}
		time.Sleep(time.Second)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndex(line, " ")
		if sp < 0 {
			continue
		}
		series, val := line[:sp], line[sp+1:]
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		name, labels, _ := strings.Cut(series, "{")
		dir := ""
		if i := strings.Index(labels, `direction="`); i >= 0 {
			dir = labels[i+len(`direction="`):]
			dir = dir[:strings.Index(dir, `"`)]
		}
		out[name+"/"+dir] += v
	}
	return out
}

// waitMetric polls a pod's proxy metric until it exceeds min.
func waitMetric(t *testing.T, podIP, key string, min float64) float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := metrics(t, podIP)[key]
		if v > min {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy metric %s of pod %s stayed at %v, want > %v", key, podIP, v, min)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// podNetns finds the network namespace of a pod by its IP among the runtime's namespaces.
func podNetns(t *testing.T, podIP string) string {
	t.Helper()
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		t.Fatalf("list network namespaces: %v", err)
	}
	for _, en := range entries {
		out, err := run("ip", "-n", en.Name(), "-o", "addr", "show")
		if err == nil && strings.Contains(out, " "+podIP+"/") {
			return "/var/run/netns/" + en.Name()
		}
	}
	t.Fatalf("no network namespace under /var/run/netns holds %s", podIP)
	return ""
}

// netnsRules lists the nftables and iptables state inside a network namespace.
func netnsRules(netns string) string {
	nft, _ := run("nsenter", "--net="+netns, "nft", "list", "ruleset")
	ipt, _ := run("nsenter", "--net="+netns, "iptables-save", "-t", "nat")
	return nft + "\n" + ipt
}

// captured checks that a pod's network namespace holds exactly the rules the plugin installs
// for the pod (its redirect annotations, the families of its IPs): the backend's whole live
// listing, read back from the kernel, equals the expected one (rules.Diff is empty). The
// backend is the one whose rules are there (nftables when neither has any).
func captured(netns string, p *corev1.Pod) error {
	settings, err := redirect.FromAnnotations(p.Annotations)
	if err != nil {
		return fmt.Errorf("pod %s: %w", p.Name, err)
	}
	var ips []string
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 {
		ips = []string{p.Status.PodIP}
	}
	rs := rules.Build(settings, rules.FamiliesFor(ips)...)
	live, err := ourRules(netns)
	if err != nil {
		return err
	}
	name := contract.BackendNFTables
	if len(live[name]) == 0 && len(live[contract.BackendIPTables]) > 0 {
		name = contract.BackendIPTables
	}
	b, err := capture.New(name)
	if err != nil {
		return err
	}
	if d := rules.Diff(b.Expected(rs), live[name]); len(d) > 0 {
		return fmt.Errorf("pod %s: live %s rules in %s differ from the expected ones:\n%s", p.Name, name, netns, strings.Join(d, "\n"))
	}
	return nil
}

// ourRules reads Sidelane's rules in netns with each backend (canonical listings, empty when
// there are none).
func ourRules(netns string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, name := range []string{contract.BackendNFTables, contract.BackendIPTables} {
		b, err := capture.New(name)
		if err != nil {
			return nil, err
		}
		if err := capture.InNetns(netns, func() error {
			var err error
			out[name], err = b.Live()
			return err
		}); err != nil {
			return nil, fmt.Errorf("read %s rules: %w", name, err)
		}
	}
	return out, nil
}

// uncaptured says whether netns holds none of Sidelane's rules (either backend).
func uncaptured(netns string) (bool, error) {
	live, err := ourRules(netns)
	if err != nil {
		return false, err
	}
	return len(live[contract.BackendNFTables]) == 0 && len(live[contract.BackendIPTables]) == 0, nil
}

// agentPods asks the node agent for its records, over its unix socket on the host.
func agentPods(t *testing.T) (agentapi.PodList, error) {
	t.Helper()
	c := unixhttp.Client(contract.DefaultAgentSocket, 10*time.Second)
	resp, err := c.Get("http://sidelane-agent" + agentapi.PathPods)
	if err != nil {
		return agentapi.PodList{}, fmt.Errorf("GET %s on %s: %w", agentapi.PathPods, contract.DefaultAgentSocket, err)
	}
	defer resp.Body.Close()
	var l agentapi.PodList
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return l, fmt.Errorf("GET %s: status %d: %s", agentapi.PathPods, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return l, fmt.Errorf("decode pod list: %w", err)
	}
	return l, nil
}

func findRecord(l agentapi.PodList, ns, name string) (agentapi.PodRecord, bool) {
	for _, r := range l.Items {
		if r.Namespace == ns && r.Name == name {
			return r, true
		}
	}
	return agentapi.PodRecord{}, false
}

// waitAgentReady waits until the agent DaemonSet has a ready pod that is not being deleted.
func (e *env) waitAgentReady(t *testing.T) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(podTimeout)
	for {
		l, err := e.kube.CoreV1().Pods(systemNS).List(ctx(t), metav1.ListOptions{LabelSelector: agentSelector})
		if err == nil {
			for i := range l.Items {
				p := &l.Items[i]
				if p.DeletionTimestamp == nil && ready(p) {
					return p
				}
			}
		}
		if time.Now().After(deadline) {
			e.dump(t, systemNS)
			t.Fatalf("no ready agent pod after %v", podTimeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// conflist reads the primary conflist of the harness.
func (e *env) conflist(t *testing.T) (string, []byte) {
	t.Helper()
	p := filepath.Join(e.cniConfDir, "10-sidelane-local.conflist")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read primary conflist: %v", err)
	}
	return p, b
}

func hasOurEntry(conflist []byte) bool {
	var c struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if json.Unmarshal(conflist, &c) != nil {
		return false
	}
	for _, p := range c.Plugins {
		if p.Type == contract.PluginType {
			return true
		}
	}
	return false
}

// poll calls cond until it returns true or timeout passes; it reports the time it took.
func poll(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) time.Duration {
	t.Helper()
	start := time.Now()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return time.Since(start)
		}
		lastErr = err
		if time.Since(start) > timeout {
			t.Fatalf("%s: not true after %v (last error: %v)", what, timeout, lastErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dump logs what is needed to understand a failure: pods, events, container logs, the agent's
// log and the tail of the kubelet's.
func (e *env) dump(t *testing.T, ns string) {
	t.Helper()
	var b strings.Builder
	for _, n := range []string{ns, systemNS} {
		out, _ := e.kubectlRun("-n", n, "get", "pods", "-o", "wide")
		fmt.Fprintf(&b, "----- pods in %s\n%s", n, out)
		out, _ = e.kubectlRun("-n", n, "describe", "pods")
		fmt.Fprintf(&b, "----- describe pods in %s\n%s", n, tail(out, 120))
		out, _ = e.kubectlRun("-n", n, "logs", "--all-containers", "--prefix", "--tail=30", "-l", "app.kubernetes.io/part-of=sidelane")
		if n == ns {
			out, _ = e.kubectlRun("-n", n, "logs", "--all-containers", "--prefix", "--tail=30", "--max-log-requests=20", "-l", "app")
		}
		fmt.Fprintf(&b, "----- logs in %s\n%s", n, out)
	}
	kl, _ := os.ReadFile(filepath.Join(e.clusterDir, "logs", "kubelet.log"))
	fmt.Fprintf(&b, "----- kubelet log (tail)\n%s", tail(string(kl), 60))
	t.Log(b.String())
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// agentMetricSum sums every series of the agent's metric name (over its unix socket).
func agentMetricSum(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := unixhttp.Client(contract.DefaultAgentSocket, 10*time.Second).Get("http://sidelane-agent" + agentapi.PathMetrics)
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	defer resp.Body.Close()
	return sumSeries(t, resp.Body, name)
}

// apiserverPodGets is apiserver_request_total{resource="pods",verb="GET"} summed (all users).
func (e *env) apiserverPodGets(t *testing.T) float64 {
	t.Helper()
	b, err := e.kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx(t))
	if err != nil {
		t.Fatalf("API server metrics: %v", err)
	}
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "apiserver_request_total{") && strings.Contains(line, `resource="pods"`) &&
			strings.Contains(line, `verb="GET"`) && strings.Contains(line, `subresource=""`) {
			if f := strings.Fields(line); len(f) == 2 {
				v, _ := strconv.ParseFloat(f[1], 64)
				sum += v
			}
		}
	}
	return sum
}

// sumSeries sums the samples of metric name in a Prometheus text exposition.
func sumSeries(t *testing.T, r io.Reader, name string) float64 {
	var sum float64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// auditPodGets counts, by user, the GETs of pods in namespace ns that the API server's audit log
// recorded from byte offset from on.
func auditPodGets(t *testing.T, path string, from int64, ns string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Stage     string                    `json:"stage"`
			Verb      string                    `json:"verb"`
			User      struct{ Username string } `json:"user"`
			ObjectRef struct {
				Resource, Namespace, Subresource string
			} `json:"objectRef"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Stage != "ResponseComplete" || ev.Verb != "get" ||
			ev.ObjectRef.Resource != "pods" || ev.ObjectRef.Subresource != "" || ev.ObjectRef.Namespace != ns {
			continue
		}
		out[ev.User.Username]++
	}
	return out
}
