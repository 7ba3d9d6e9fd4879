package demoapp

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestServeAndGet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addr := freeAddr(t)
	logs, logger := newLogRecords()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, []string{addr}, logger) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	logs.waitFor(t, "serving HTTP", addr)
	client := &http.Client{Timeout: 5 * time.Second}
	tests := []struct {
		path     string
		wantCode int
		check    func(t *testing.T, body []byte)
	}{
		{"/healthz", 200, func(t *testing.T, body []byte) {
			if string(body) != "ok\n" {
				t.Errorf("healthz body %q", body)
			}
		}},
		{"/hello", 200, func(t *testing.T, body []byte) {
			var r Reply
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatalf("reply %q: %v", body, err)
			}
			if r.Path != "/hello" || r.Local != addr || !strings.HasPrefix(r.Client, "127.0.0.1:") || r.Server == "" {
				t.Errorf("reply %+v, want path /hello, local %s, a loopback client and a server name", r, addr)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			code, body, err := Get(ctx, client, "http://"+addr+tc.path)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if code != tc.wantCode {
				t.Fatalf("status %d, want %d", code, tc.wantCode)
			}
			tc.check(t, body)
		})
	}
}

func TestServeErrors(t *testing.T) {
	if err := Serve(context.Background(), nil, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))); err == nil {
		t.Error("Serve with no address succeeded")
	}
	err := Serve(context.Background(), []string{"127.0.0.1:notaport"}, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:notaport") {
		t.Errorf("Serve on a bad address: %v, want an error naming the address", err)
	}
}

func TestGetError(t *testing.T) {
	addr := freeAddr(t) // closed again: nothing listens
	_, _, err := Get(context.Background(), &http.Client{Timeout: 2 * time.Second}, "http://"+addr+"/")
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Get to a closed port: %v, want an error naming the URL", err)
	}
}

func TestLoopLogsEachCall(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addr := freeAddr(t)
	serveLogs, serveLogger := newLogRecords()
	go Serve(ctx, []string{addr}, serveLogger)
	defer cancel()
	serveLogs.waitFor(t, "serving HTTP", addr)
	logs, logger := newLogRecords()
	lctx, lcancel := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() {
		Loop(lctx, &http.Client{Timeout: 2 * time.Second}, "http://"+addr+"/x", 20*time.Millisecond, logger)
		close(loopDone)
	}()
	logs.waitFor(t, "msg=GET", "url=http://"+addr+"/x", "status=200")
	logs.waitFor(t, "msg=GET", "status=200") // and it goes on calling
	lcancel()
	<-loopDone
}

func TestMainCommand(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "hello")
	}))
	defer srv.Close()
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{args: []string{"get", srv.URL}, code: 0, stdout: "200 hello"},
		{args: []string{"get", srv.URL + "/missing"}, code: 1, stdout: "404"},
		{args: []string{"get"}, code: 2, stderr: "usage: demo-app"},
		{args: []string{"get", "-h"}, code: 0},
		{args: nil, code: 2, stderr: "usage: demo-app"},
		{args: []string{"dance"}, code: 2, stderr: "usage: demo-app"},
	} {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), tc.args, &out, &errb); code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
			t.Errorf("Main(%q) = %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out.String(), errb.String(), tc.code, tc.stdout, tc.stderr)
		}
	}
}
