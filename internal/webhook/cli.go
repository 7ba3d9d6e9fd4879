package webhook

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/flagenv"
	"github.com/sidelane/sidelane/internal/inject"
	"github.com/sidelane/sidelane/internal/inject/manualcmd"
	"github.com/sidelane/sidelane/internal/kubeclient"
)

// Main runs the sidelane-injector command line (args without the program name) and returns
// the exit code: `[serve] [flags]` runs the webhook until SIGTERM, `inject -f FILE` is the
// manual mode.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var err error
	name := "sidelane-injector"
	switch {
	case len(args) > 0 && args[0] == "inject":
		name += " inject"
		err = injectCmd(args[1:], stdin, stdout, stderr)
	case len(args) > 0 && args[0] == "serve":
		err = serveCmd(ctx, args[1:], stderr)
	default:
		err = serveCmd(ctx, args, stderr)
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

// templateFlags are the template flags of serve (manual injection has its own, package
// manualcmd).
func templateFlags(fs *flag.FlagSet) func() (inject.Template, string) {
	file := fs.String("template", "", "injection template file (YAML/JSON: image, imagePullPolicy, resources, nativeSidecar, logLevel); reloaded on change")
	image := fs.String("proxy-image", inject.DefaultImage, "proxy image, unless the template file names one")
	pull := fs.String("proxy-image-pull-policy", "", "proxy imagePullPolicy, unless the template file sets one")
	return func() (inject.Template, string) {
		t := inject.DefaultTemplate()
		t.Image = *image
		if *pull != "" {
			t.ImagePullPolicy = corev1.PullPolicy(*pull)
		}
		t.InjectorVersion = Version()
		return t, *file
	}
}

func serveCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sidelane-injector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":9443", "HTTPS address of /inject, /healthz, /readyz")
	metrics := fs.String("metrics-listen", ":9090", "plain-HTTP address of /metrics, /healthz, /readyz (\"\" disables)")
	cert := fs.String("tls-cert", "", "serving certificate file (reloaded on rotation)")
	key := fs.String("tls-key", "", "serving key file (reloaded on rotation)")
	self := fs.Bool("self-signed", false, "make a CA and serving certificate at start and patch the webhook configuration's caBundle")
	whc := fs.String("webhook-config", "sidelane-injector", "MutatingWebhookConfiguration whose caBundle --self-signed patches")
	svc := fs.String("service", "sidelane-injector", "Service name in the serving certificate")
	ns := fs.String("namespace", contract.SystemNamespace, "namespace of the Service")
	exclude := fs.String("exclude-namespaces", strings.Join(contract.DefaultExcludeNamespaces, ","), "namespaces never injected (comma-separated)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	tpl := templateFlags(fs)
	if err := flagenv.Bind(fs, "injector"); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	client, err := kubeclient.New(*kubeconfig, "sidelane-injector/"+Version())
	if err != nil {
		return fmt.Errorf("API server client: %w", err)
	}
	base, file := tpl()
	srv, err := New(Options{
		Listen: *listen, MetricsListen: *metrics,
		CertFile: *cert, KeyFile: *key,
		SelfSigned: *self, Service: *svc, Namespace: *ns, WebhookConfig: *whc,
		TemplateFile: file, Template: base,
		Exclude: splitList(*exclude),
		Client:  client,
		Log:     log,
	})
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

func injectCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sidelane-injector inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var m manualcmd.Flags
	m.Register(fs)
	if err := flagenv.Bind(fs, "injector"); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	base := inject.DefaultTemplate()
	base.InjectorVersion = Version()
	return m.Run(base, stdin, stdout)
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
