package cnirpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/selection"
)

// rawAgent listens on a unix socket and answers every connection with answer(request bytes).
func rawAgent(t *testing.T, answer func(conn net.Conn)) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "slrpc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "cni.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); answer(c) }()
		}
	}()
	return sock
}

// frame builds a frame around body by hand.
func frame(body string) []byte {
	b := []byte(Magic)
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

func readRequest(t *testing.T, c net.Conn) Request {
	var req Request
	if err := ReadFrame(c, &req); err != nil {
		t.Errorf("agent: read request: %v", err)
	}
	return req
}

var decideReq = Request{Op: OpDecide, Decide: &DecideRequest{Namespace: "app", Name: "web", UID: "u1", SandboxIPs: []string{"10.0.0.5", "fd00::5"}}}

func TestCallAnswers(t *testing.T) {
	tests := []struct {
		name    string
		answer  []byte // raw bytes the agent writes back
		wantErr []string
		is      error
		check   func(t *testing.T, r Response)
	}{
		{name: "good answer", answer: frame(`{"v":1,"decision":{"capture":true,"reason":"injected pod","uid":"u1","settings":{"inboundCapturePort":15006},"families":["ipv4","ipv6"]}}`),
			check: func(t *testing.T, r Response) {
				if r.Decision == nil || !r.Decision.Capture || r.Decision.UID != "u1" || len(r.Decision.Families) != 2 || r.Decision.Settings == nil {
					t.Errorf("decision %+v", r.Decision)
				}
			}},
		{name: "unknown version", answer: frame(`{"v":2,"decision":{"capture":true}}`), wantErr: []string{"protocol version 2", "speaks version 1"}, is: ErrVersion},
		{name: "no version", answer: frame(`{"decision":{"capture":true}}`), wantErr: []string{"protocol version 0"}, is: ErrVersion},
		{name: "malformed JSON", answer: frame(`{"v":1,"decision":`), wantErr: []string{"invalid JSON"}, is: ErrMalformed},
		{name: "trailing data", answer: frame(`{"v":1} {"v":1}`), wantErr: []string{"data after the JSON object"}, is: ErrMalformed},
		{name: "wrong magic", answer: append([]byte("HTTP"), frame(`{"v":1}`)[4:]...), wantErr: []string{"starts with"}, is: ErrMalformed},
		{name: "oversize length", answer: binary.BigEndian.AppendUint32([]byte(Magic), MaxFrame+1), wantErr: []string{"larger than"}, is: ErrMalformed},
		{name: "cut short", answer: frame(`{"v":1}`)[:10], wantErr: []string{"cut short"}, is: ErrMalformed},
		{name: "agent error", answer: frame(`{"v":1,"error":"pod app/web not found"}`), wantErr: []string{"node agent: pod app/web not found"}},
		{name: "closed without answer", answer: nil, wantErr: []string{"unreachable", "cni.sock"}, is: ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := rawAgent(t, func(c net.Conn) {
				if req := readRequest(t, c); req.V != Version || req.Op != OpDecide || req.Decide.Name != "web" {
					t.Errorf("agent got %+v", req)
				}
				c.Write(tt.answer)
			})
			resp, err := Call(context.Background(), sock, decideReq, 2*time.Second)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, resp)
				return
			}
			if err == nil {
				t.Fatalf("no error, answer %+v", resp)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func TestCallAgentTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	sock := rawAgent(t, func(c net.Conn) {
		readRequest(t, c)
		<-release // never answers in time
	})
	start := time.Now()
	_, err := Call(context.Background(), sock, decideReq, 200*time.Millisecond)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "no answer within 200ms") || !strings.Contains(err.Error(), sock) {
		t.Fatalf("err = %v, want unreachable: no answer within 200ms naming %s", err, sock)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a slow agent held the call %v", d)
	}
}

func TestCallNoAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, err := Call(context.Background(), sock, decideReq, time.Second)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), sock) {
		t.Fatalf("err = %v, want unreachable naming %s", err, sock)
	}
}

// TestServeConn drives the server side with a Fake: decisions, reports, versions, bad frames.
func TestServeConn(t *testing.T) {
	f := &Fake{Excluded: contract.DefaultExcludeNamespaces}
	inj := map[string]string{contract.StatusAnnotation: "{}"}
	f.SetPod("web", "u1", selection.PodFacts{Namespace: "app", Annotations: inj, Containers: []string{contract.ProxyContainerName}})
	f.SetPod("bad", "u2", selection.PodFacts{Namespace: "app", Containers: []string{contract.ProxyContainerName},
		Annotations: map[string]string{contract.StatusAnnotation: "{}", contract.AnnotationInboundCapturePort: "x"}})
	f.SetPod("plain", "u3", selection.PodFacts{Namespace: "app", Containers: []string{"app"}})
	serve := func(raw []byte) Response {
		t.Helper()
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() { ServeConn(context.Background(), server, f, time.Second); close(done) }()
		go client.Write(raw)
		var resp Response
		if err := ReadFrame(client, &resp); err != nil {
			t.Fatalf("read answer: %v", err)
		}
		client.Close()
		<-done
		return resp
	}
	req := func(r Request) []byte {
		var b bytes.Buffer
		if err := WriteFrame(&b, r); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	tests := []struct {
		name    string
		raw     []byte
		wantErr string
		check   func(t *testing.T, d *Decision)
	}{
		{name: "capture dual stack", raw: req(Request{V: 1, Op: OpDecide, Decide: &DecideRequest{Namespace: "app", Name: "web", SandboxIPs: []string{"10.0.0.5", "fd00::5"}}}),
			check: func(t *testing.T, d *Decision) {
				if !d.Capture || d.Settings == nil || d.UID != "u1" || strings.Join(d.Families, ",") != "ipv4,ipv6" {
					t.Errorf("decision %+v", d)
				}
			}},
		{name: "invalid annotation", raw: req(Request{V: 1, Op: OpDecide, Decide: &DecideRequest{Namespace: "app", Name: "bad"}}),
			check: func(t *testing.T, d *Decision) {
				if !d.Capture || d.Settings != nil || !strings.Contains(d.Invalid, contract.AnnotationInboundCapturePort) {
					t.Errorf("decision %+v", d)
				}
			}},
		{name: "skip", raw: req(Request{V: 1, Op: OpDecide, Decide: &DecideRequest{Namespace: "app", Name: "plain"}}),
			check: func(t *testing.T, d *Decision) {
				if d.Capture || !strings.Contains(d.Reason, "not injected") {
					t.Errorf("decision %+v", d)
				}
			}},
		{name: "report", raw: req(Request{V: 1, Op: OpReport, Report: &agentapi.Report{Event: agentapi.EventAdd, Namespace: "app", Name: "web"}})},
		{name: "ping", raw: req(Request{V: 1, Op: OpPing})},
		{name: "unknown request version", raw: req(Request{V: 7, Op: OpPing}), wantErr: "request of protocol version 7, this agent speaks version 1"},
		{name: "unknown op", raw: req(Request{V: 1, Op: "dance"}), wantErr: `unknown operation "dance"`},
		{name: "decide without body", raw: req(Request{V: 1, Op: OpDecide}), wantErr: `without "decide"`},
		{name: "trailing garbage", raw: frame(`{"v":1,"op":"ping"}garbage`), wantErr: "data after the JSON object"},
		{name: "not JSON", raw: frame(`nope`), wantErr: "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := serve(tt.raw)
			if resp.V != Version {
				t.Errorf("answer version %d", resp.V)
			}
			if tt.wantErr != "" {
				if !strings.Contains(resp.Error, tt.wantErr) {
					t.Errorf("answer error %q, want %q", resp.Error, tt.wantErr)
				}
				return
			}
			if resp.Error != "" {
				t.Fatalf("answer error %q", resp.Error)
			}
			if tt.check != nil {
				if resp.Decision == nil {
					t.Fatal("no decision")
				}
				tt.check(t, resp.Decision)
			}
		})
	}
	if _, reports, _ := f.Snapshot(); len(reports) != 1 || reports[0].Name != "web" {
		t.Errorf("reports %+v", reports)
	}
}

func TestIsFrameStart(t *testing.T) {
	for _, s := range []string{"GET / HTTP/1.1", "POST /v1/reports", "PRI * HTTP/2.0"} {
		if IsFrameStart(s[0]) {
			t.Errorf("%q taken for a frame", s)
		}
	}
	if !IsFrameStart(frame("{}")[0]) {
		t.Error("a frame not recognised")
	}
}
