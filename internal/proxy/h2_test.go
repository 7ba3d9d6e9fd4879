package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sidelane/sidelane/internal/proxy/h2relay"
)

// h2cServer is an upstream that speaks HTTP/2 with prior knowledge (and HTTP/1.1).
func h2cServer(t *testing.T, h http.Handler) string {
	t.Helper()
	up := httptest.NewUnstartedServer(h)
	up.Config.Protocols = new(http.Protocols)
	up.Config.Protocols.SetHTTP1(true)
	up.Config.Protocols.SetUnencryptedHTTP2(true)
	up.Start()
	t.Cleanup(up.Close)
	return upstreamAddr(up)
}

// h2cClient speaks HTTP/2 with prior knowledge to addr, whatever the URL says.
func h2cClient(addr string) *http.Client {
	tr := &http.Transport{
		Protocols: new(http.Protocols),
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
	}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}
}

func h2Handler(calls *atomic.Int64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/grpc-like", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		io.WriteString(w, "\x00\x00\x00\x00\x02hi")
		w.Header().Set("Grpc-Status", "5")
		w.Header().Set("Grpc-Message", "not%20found")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.ProtoMajor != 2 {
			http.Error(w, "not HTTP/2", 500)
			return
		}
		io.WriteString(w, "hello h2")
	})
	return mux
}

func TestHTTP2Proxying(t *testing.T) {
	var calls atomic.Int64
	h := startProxy(t, h2cServer(t, h2Handler(&calls)), nil)
	cl := h2cClient(h.out)
	tests := []struct {
		name, method, path, body string
		wantBody                 string
		wantTrailer              http.Header
		wantLog                  map[string]any
	}{
		{name: "GET", method: "GET", path: "/x?y=1", wantBody: "hello h2",
			wantLog: map[string]any{"method": "GET", "path": "/x?y=1", "status": 200.0, "protocol": "HTTP/2", "response_bytes": 8.0}},
		{name: "POST streamed", method: "POST", path: "/echo", body: strings.Repeat("b", 300000), wantBody: strings.Repeat("b", 300000),
			wantLog: map[string]any{"method": "POST", "path": "/echo", "request_bytes": 300000.0, "response_bytes": 300000.0}},
		{name: "trailers and grpc-status", method: "POST", path: "/grpc-like", body: "\x00\x00\x00\x00\x00", wantBody: "\x00\x00\x00\x00\x02hi",
			wantTrailer: http.Header{"Grpc-Status": {"5"}, "Grpc-Message": {"not%20found"}},
			wantLog:     map[string]any{"grpc_status": "5", "grpc_message": "not%20found", "status": 200.0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(h.log.lines())
			req, _ := http.NewRequest(tt.method, "http://svc.example"+tt.path, strings.NewReader(tt.body))
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != tt.wantBody || resp.ProtoMajor != 2 {
				t.Fatalf("answer %s %q (%v), want HTTP/2 %q", resp.Proto, clipStr(string(b)), err, clipStr(tt.wantBody))
			}
			for k, v := range tt.wantTrailer {
				if got := resp.Trailer.Get(k); got != v[0] {
					t.Errorf("trailer %s = %q, want %q", k, got, v[0])
				}
			}
			l := waitLogLine(t, h.log, n)
			if l["authority"] != "svc.example" || l["direction"] != "outbound" {
				t.Errorf("log line %v", l)
			}
			for k, v := range tt.wantLog {
				if l[k] != v {
					t.Errorf("log %s = %v, want %v (line %v)", k, l[k], v, l)
				}
			}
		})
	}
	rec := httptest.NewRecorder()
	h.s.promMux().ServeHTTP(rec, httptest.NewRequest("GET", "/stats/prometheus", nil))
	for _, want := range []string{
		`sidelane_proxy_requests_total{code="200",direction="outbound",grpc_status="5",method="POST"} 1`,
		`sidelane_proxy_requests_total{code="200",direction="outbound",grpc_status="",method="GET"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// All three requests shared one client connection and so one upstream connection.
	if d := h.s.Stats().UpstreamDials; d != 1 {
		t.Errorf("%d upstream dials, want 1", d)
	}
}

// h2Conn is a hand-driven HTTP/2 client connection.
type h2Conn struct {
	c    net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

func dialH2(t *testing.T, addr string, preface string) *h2Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	hc := &h2Conn{c: c, fr: http2.NewFramer(c, c)}
	hc.enc = hpack.NewEncoder(&hc.hbuf)
	hc.fr.SetMaxReadFrameSize(1 << 20)
	io.WriteString(c, preface)
	return hc
}

func (hc *h2Conn) headerBlock(fields ...string) []byte {
	hc.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		hc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(hc.hbuf.Bytes())
}

func (hc *h2Conn) get(id uint32, path string) error {
	return hc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndStream: true, EndHeaders: true,
		BlockFragment: hc.headerBlock(":method", "GET", ":scheme", "http", ":authority", "x", ":path", path)})
}

// waitGoAway reads frames until a GOAWAY (returned) or the end of the connection (error).
// onFrame sees every frame before.
func (hc *h2Conn) waitGoAway(onFrame func(http2.Frame)) (*http2.GoAwayFrame, error) {
	for {
		f, err := hc.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g, nil
		}
		if onFrame != nil {
			onFrame(f)
		}
	}
}

func TestHTTP2BadInput(t *testing.T) {
	var calls atomic.Int64
	h := startProxy(t, h2cServer(t, h2Handler(&calls)), nil)
	// flood keeps writing (frame: one batch of frames) until the proxy stops reading, at most
	// floodMax batches; it reports how many batches went out.
	const floodMax = 1 << 16
	flood := func(hc *h2Conn, frame func() error) chan int64 {
		done := make(chan int64, 1)
		go func() {
			var n int64
			for n < floodMax && frame() == nil {
				n++
			}
			done <- n
		}()
		return done
	}
	tests := []struct {
		name     string
		preface  string
		drive    func(t *testing.T, hc *h2Conn) chan int64 // nil channel: nothing to wait for
		wantCode http2.ErrCode
		maxCalls int64 // upstream handler calls the case may cause
	}{
		{name: "bad preface", preface: "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", wantCode: http2.ErrCodeProtocol},
		{name: "first frame not SETTINGS", drive: func(t *testing.T, hc *h2Conn) chan int64 {
			hc.fr.WritePing(false, [8]byte{})
			return nil
		}, wantCode: http2.ErrCodeProtocol},
		{name: "oversized frame", drive: func(t *testing.T, hc *h2Conn) chan int64 {
			hc.fr.WriteSettings()
			// Larger than the upstream's SETTINGS_MAX_FRAME_SIZE (x/net: 1 MiB) and the relay's cap.
			hc.fr.WriteRawFrame(http2.FrameData, 0, 1, make([]byte, h2relay.MaxFrameSize+1))
			return nil
		}, wantCode: http2.ErrCodeFrameSize},
		{name: "HEADERS on a closed stream", drive: func(t *testing.T, hc *h2Conn) chan int64 {
			hc.fr.WriteSettings()
			hc.get(1, "/")
			// Wait for the whole answer: stream 1 is closed on both sides.
			for {
				f, err := hc.fr.ReadFrame()
				if err != nil {
					t.Fatal(err)
				}
				if f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream) {
					break
				}
			}
			hc.get(1, "/")
			return nil
		}, wantCode: http2.ErrCodeStreamClosed, maxCalls: 1},
		{name: "HEADERS on an even stream", drive: func(t *testing.T, hc *h2Conn) chan int64 {
			hc.fr.WriteSettings()
			hc.get(2, "/")
			return nil
		}, wantCode: http2.ErrCodeProtocol},
		{name: "window overflow (answered by the upstream, relayed)", drive: func(t *testing.T, hc *h2Conn) chan int64 {
			hc.fr.WriteSettings()
			hc.fr.WriteWindowUpdate(0, 1<<31-1)
			return nil
		}, wantCode: http2.ErrCodeFlowControl},
		{name: "CONTINUATION flood", drive: func(t *testing.T, hc *h2Conn) chan int64 {
			hc.fr.WriteSettings()
			hc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hc.headerBlock(":method", "GET", ":scheme", "http", ":path", "/")})
			// Each fragment adds new literal fields: the decoded list grows without end.
			frag := hc.headerBlock("x-flood", strings.Repeat("a", 16000))
			return flood(hc, func() error { return hc.fr.WriteContinuation(1, false, frag) })
		}, wantCode: http2.ErrCodeProtocol},
		{name: "empty CONTINUATION flood", drive: func(t *testing.T, hc *h2Conn) chan int64 {
			hc.fr.WriteSettings()
			hc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hc.headerBlock(":method", "GET", ":scheme", "http", ":path", "/")})
			batch := bytes.Repeat([]byte{0, 0, 0, byte(http2.FrameContinuation), 0, 0, 0, 0, 1}, (16<<10)/9)
			return flood(hc, func() error { _, err := hc.c.Write(batch); return err })
		}, wantCode: http2.ErrCodeEnhanceYourCalm},
		{name: "rapid reset (CVE-2023-44487)", drive: func(t *testing.T, hc *h2Conn) chan int64 {
			hc.fr.WriteSettings()
			id := uint32(1)
			return flood(hc, func() error {
				if err := hc.get(id, "/"); err != nil {
					return err
				}
				err := hc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
				id += 2
				return err
			})
		}, wantCode: http2.ErrCodeEnhanceYourCalm, maxCalls: 2 * rapidResetBound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := calls.Load()
			preface := tt.preface
			if preface == "" {
				preface = http2.ClientPreface
			}
			hc := dialH2(t, h.out, preface)
			var sent chan int64
			if tt.drive != nil {
				sent = tt.drive(t, hc)
			}
			g, err := hc.waitGoAway(nil)
			if err != nil {
				t.Fatalf("no GOAWAY: %v", err)
			}
			if g.ErrCode != tt.wantCode {
				t.Errorf("GOAWAY %v (%q), want %v", g.ErrCode, g.DebugData(), tt.wantCode)
			}
			// The proxy closes the connection after its GOAWAY.
			if _, err := hc.waitGoAway(nil); !errors.Is(err, io.EOF) && !isReset(err) {
				t.Errorf("after GOAWAY: %v, want the connection closed", err)
			}
			if sent != nil {
				n := <-sent
				t.Logf("client wrote %d batches before the proxy stopped reading", n)
				if n >= floodMax {
					t.Errorf("the proxy read the whole flood (%d batches)", n)
				}
			}
			if c := calls.Load() - before; c > tt.maxCalls {
				t.Errorf("upstream handled %d requests, want at most %d", c, tt.maxCalls)
			}
			// Others are still served.
			cl := h2cClient(h.out)
			resp, err := cl.Get("http://x/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			cl.CloseIdleConnections()
		})
	}
	// Every relay ended: the active-connection count returns to zero.
	for deadline := time.Now().Add(10 * time.Second); h.s.Stats().ActiveConnections != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still active", h.s.Stats().ActiveConnections)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTLSSeenBySNI(t *testing.T) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls %s %s", r.Proto, r.TLS.ServerName)
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	defer up.Close()
	h := startProxy(t, upstreamAddr(up), nil)
	_, port, _ := net.SplitHostPort(h.out)
	tests := []struct {
		name     string
		args     []string
		wantBody string
		wantSNI  string
		wantALPN string // log
		label    string // metric
	}{
		{"curl h2", []string{"--http2"}, "tls HTTP/2.0 api.example", "api.example", "h2,http/1.1", "h2"},
		{"curl http/1.1", []string{"--http1.1"}, "tls HTTP/1.1 api.example", "api.example", "http/1.1", "http/1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(h.log.lines())
			args := append([]string{"-sS", "-k", "--max-time", "20", "--connect-to", "api.example:443:127.0.0.1:" + port}, tt.args...)
			out, err := exec.Command("curl", append(args, "https://api.example/")...).CombinedOutput()
			if err != nil || string(out) != tt.wantBody {
				t.Fatalf("curl: %q (%v), want %q", out, err, tt.wantBody)
			}
			l := waitLogLine(t, h.log, n)
			if l["protocol"] != "TLS" || l["tls_sni"] != tt.wantSNI || l["tls_alpn"] != tt.wantALPN || l["direction"] != "outbound" {
				t.Errorf("log line %v, want SNI %q ALPN %q", l, tt.wantSNI, tt.wantALPN)
			}
			rec := httptest.NewRecorder()
			h.s.promMux().ServeHTTP(rec, httptest.NewRequest("GET", "/stats/prometheus", nil))
			if want := fmt.Sprintf(`sidelane_proxy_tls_connections_total{alpn=%q,direction="outbound"} 1`, tt.label); !strings.Contains(rec.Body.String(), want) {
				t.Errorf("metrics lack %s", want)
			}
		})
	}
}

// rapidResetBound is about how many streams a rapid-reset client gets through.
const rapidResetBound = 300

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(err.Error(), "reset")
}

// TestHTTP2FlowControl: a client that stops reading stops the upstream's writer (the windows
// are end to end; the relay holds one frame per direction), and everything arrives once it
// reads again.
func TestHTTP2FlowControl(t *testing.T) {
	const total, chunk = 256 << 20, 1 << 20
	var written atomic.Int64
	up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := bytes.Repeat([]byte("f"), chunk)
		for written.Load() < total {
			if _, err := w.Write(buf); err != nil {
				return
			}
			written.Add(chunk)
		}
	}))
	h := startProxy(t, up, nil)
	resp, err := h2cClient(h.out).Get("http://x/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Not reading: the writer must come to a stop well short of the whole body.
	// Stopped = no progress over three samples 200 ms apart.
	var last int64 = -1
	for same, deadline := 0, time.Now().Add(20*time.Second); same < 3; {
		time.Sleep(200 * time.Millisecond) // sampling the writer's progress, not synchronisation
		n := written.Load()
		if n == last {
			same++
		} else {
			same = 0
		}
		last = n
		if time.Now().After(deadline) {
			t.Fatalf("the writer never stopped (%d MiB written)", n>>20)
		}
	}
	t.Logf("writer stopped after %d MiB while the client did not read", last>>20)
	if last >= 64<<20 {
		t.Errorf("writer got %d MiB ahead of a client that reads nothing", last>>20)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != total {
		t.Fatalf("read %d bytes (%v), want %d", n, err, total)
	}
}

// TestHTTP2DrainHandDriven follows the drain frame by frame: GOAWAY(2^31-1) and PING, the
// final GOAWAY once the PING is answered, a stream opened after it refused (REFUSED_STREAM,
// retryable), the stream in flight finished, then the connection closed.
func TestHTTP2DrainHandDriven(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 4)
	up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	}))
	h := startProxy(t, up, nil)
	hc := dialH2(t, h.out, http2.ClientPreface)
	hc.fr.WriteSettings()
	hc.get(1, "/slow")
	<-started
	h.s.Drain()
	var events []string
	sawEnd1 := false
	for {
		f, err := hc.fr.ReadFrame()
		if err != nil {
			events = append(events, "closed")
			break
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			events = append(events, fmt.Sprintf("GOAWAY %d %v", f.LastStreamID, f.ErrCode))
			if f.LastStreamID == 1 {
				// After the final GOAWAY: a stream the client still had queued.
				hc.get(3, "/late")
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				events = append(events, "PING")
				hc.fr.WritePing(true, f.Data)
			}
		case *http2.RSTStreamFrame:
			events = append(events, fmt.Sprintf("RST_STREAM %d %v", f.StreamID, f.ErrCode))
			if f.StreamID == 3 {
				close(release) // now let stream 1 finish
			}
		case *http2.DataFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				sawEnd1 = true
				events = append(events, "stream 1 ended")
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				hc.fr.WriteSettingsAck()
			}
		}
	}
	want := []string{"GOAWAY 2147483647 NO_ERROR", "PING", "GOAWAY 1 NO_ERROR", "RST_STREAM 3 REFUSED_STREAM", "stream 1 ended", "closed"}
	if strings.Join(events, "; ") != strings.Join(want, "; ") || !sawEnd1 {
		t.Errorf("drain:\n got %v\nwant %v", events, want)
	}
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not finish its drain")
	}
}

// TestHTTP2DroppedFrameFlushes: frames that arrive together are forwarded together; when the
// last of them is one the relay drops (here a WINDOW_UPDATE with a zero increment, a stream
// error answered with RST_STREAM), the ones before it still go out at once.
func TestHTTP2DroppedFrameFlushes(t *testing.T) {
	var calls atomic.Int64
	h := startProxy(t, h2cServer(t, h2Handler(&calls)), nil)
	hc := dialH2(t, h.out, http2.ClientPreface)
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, EndHeaders: true,
		BlockFragment: hc.headerBlock(":method", "GET", ":scheme", "http", ":authority", "x", ":path", "/")})
	fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 5, []byte{0, 0, 0, 0}) // zero increment
	if _, err := hc.c.Write(b.Bytes()); err != nil {                    // one write: all three arrive together
		t.Fatal(err)
	}
	sawRST, sawAnswer := false, false
	for !sawRST || !sawAnswer {
		f, err := hc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("rst %v, answer %v: %v", sawRST, sawAnswer, err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			sawRST = f.StreamID == 5 && f.ErrCode == http2.ErrCodeProtocol
		case *http2.DataFrame:
			sawAnswer = sawAnswer || f.StreamID == 1 && f.StreamEnded()
		case *http2.SettingsFrame:
			if !f.IsAck() {
				hc.fr.WriteSettingsAck()
			}
		}
	}
}

// TestHTTP2UpstreamGoAway: an upstream connection that shuts down gracefully (GOAWAY, then it
// finishes its streams) reaches the client through the relay: the request in flight completes,
// the client takes new requests to a new connection, nothing fails. Each upstream connection
// has an HTTP/2 server of its own, so that the first one's shutdown touches no other.
func TestHTTP2UpstreamGoAway(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok "+r.URL.Path)
	})
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	servers := make(chan *http.Server, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			hs := &http.Server{Handler: handler}
			h2s := &http2.Server{}
			http2.ConfigureServer(hs, h2s)
			servers <- hs
			go h2s.ServeConn(c, &http2.ServeConnOpts{BaseConfig: hs, Handler: handler})
		}
	}()
	h := startProxy(t, l.Addr().String(), nil)
	cl := h2cClient(h.out)
	slow := make(chan error, 1)
	go func() {
		b, err := get(cl, "http://x/slow")
		if err == nil && b != "ok /slow" {
			err = fmt.Errorf("answer %q", b)
		}
		slow <- err
	}()
	<-started
	first := <-servers
	shut := make(chan error, 1)
	go func() { shut <- first.Shutdown(context.Background()) }()
	// The upstream's GOAWAY reaches the client: its next request goes to a new connection.
	for deadline := time.Now().Add(10 * time.Second); h.s.Stats().UpstreamDials < 2; {
		if b, err := get(cl, "http://x/next"); err != nil || b != "ok /next" {
			t.Fatalf("request during the upstream's shutdown: %q %v", b, err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the client never left the connection the upstream sent GOAWAY on")
		}
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("request in flight at the upstream's GOAWAY: %v", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("upstream shutdown: %v", err)
	}
}
