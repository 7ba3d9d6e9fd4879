package demoapp

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// logRecords is a logger whose records the test receives one by one, to wait for an event
// (the server listening, a call answered) instead of polling.
type logRecords chan string

func (r logRecords) Write(p []byte) (int, error) {
	select {
	case r <- string(p):
	default: // the test stopped reading: drop rather than block the code under test
	}
	return len(p), nil
}

func newLogRecords() (logRecords, *slog.Logger) {
	r := make(logRecords, 1024)
	return r, slog.New(slog.NewTextHandler(r, nil))
}

// waitFor returns the first record containing all of want; it fails the test after a minute.
func (r logRecords) waitFor(t *testing.T, want ...string) string {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case rec := <-r:
			if containsAll(rec, want) {
				return rec
			}
		case <-timeout:
			t.Fatalf("no log record with %q within a minute", want)
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
