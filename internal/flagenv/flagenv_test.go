package flagenv

import (
	"bytes"
	"flag"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestName(t *testing.T) {
	for _, tc := range []struct{ binary, flag, want string }{
		{"agent", "node-name", "SIDELANE_AGENT_NODE_NAME"},
		{"injector", "tls-cert", "SIDELANE_INJECTOR_TLS_CERT"},
		{"kubectl-sidelane", "f", "SIDELANE_KUBECTL_SIDELANE_F"},
	} {
		if got := Name(tc.binary, tc.flag); got != tc.want {
			t.Errorf("Name(%q, %q) = %q, want %q", tc.binary, tc.flag, got, tc.want)
		}
	}
}

func TestBind(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		want    string // "s|n|d|b"
		wantErr string
	}{
		{name: "defaults", want: "def|1|1s|false"},
		{name: "environment", env: map[string]string{"SIDELANE_T_S_FLAG": "env", "SIDELANE_T_N": "7", "SIDELANE_T_D": "2m", "SIDELANE_T_B": "true"}, want: "env|7|2m0s|true"},
		{name: "command line wins", env: map[string]string{"SIDELANE_T_S_FLAG": "env", "SIDELANE_T_N": "7"}, args: []string{"--s-flag=cli"}, want: "cli|7|1s|false"},
		{name: "bad value names the variable", env: map[string]string{"SIDELANE_T_N": "seven"}, wantErr: `environment SIDELANE_T_N="seven"`},
		{name: "bad duration", env: map[string]string{"SIDELANE_T_D": "soon"}, wantErr: `SIDELANE_T_D="soon"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			var help bytes.Buffer
			fs.SetOutput(&help)
			s := fs.String("s-flag", "def", "a string")
			n := fs.Int("n", 1, "a number")
			d := fs.Duration("d", time.Second, "a duration")
			b := fs.Bool("b", false, "a switch")
			err := Bind(fs, "t")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			got := strings.Join([]string{*s, itoa(*n), d.String(), boolS(*b)}, "|")
			if got != tc.want {
				t.Errorf("flags %s, want %s", got, tc.want)
			}
			fs.PrintDefaults()
			if !strings.Contains(help.String(), "(env SIDELANE_T_S_FLAG)") {
				t.Errorf("usage does not name the variable:\n%s", help.String())
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func boolS(b bool) string { return strconv.FormatBool(b) }
