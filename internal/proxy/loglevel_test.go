package proxy

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestLogLevel(t *testing.T) {
	tests := []struct {
		level string
		shown []string // of debug, info, warn, error
	}{
		{"debug", []string{"info", "warn", "error"}},
		{"info", []string{"info", "warn", "error"}},
		{"warn", []string{"warn", "error"}},
		{"error", []string{"error"}},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			cfg := Defaults()
			cfg.LogLevel = tt.level
			var buf bytes.Buffer
			s, err := New(cfg, io.Discard, NewLogger(&buf, cfg.LogLevel))
			if err != nil {
				t.Fatal(err)
			}
			s.log.Info("msg-info")
			s.log.Warn("msg-warn")
			s.log.Error("msg-error")
			for _, l := range []string{"info", "warn", "error"} {
				want := strings.Contains(strings.Join(tt.shown, ","), l)
				if got := strings.Contains(buf.String(), "msg-"+l); got != want {
					t.Errorf("level %s: message at %s shown=%v, want %v", tt.level, l, got, want)
				}
			}
		})
	}
	cfg := Defaults()
	cfg.LogLevel = "loud"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `log-level "loud"`) {
		t.Errorf("bad log level: err = %v", err)
	}
}

func TestLogLevelFromEnvironment(t *testing.T) {
	t.Setenv("SIDELANE_PROXY_LOG_LEVEL", "warn")
	cfg := Defaults()
	if err := BindFlags(newFlagSet(), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.LogLevel != "warn" {
		t.Errorf("LogLevel = %q, want warn from SIDELANE_PROXY_LOG_LEVEL", cfg.LogLevel)
	}
}
