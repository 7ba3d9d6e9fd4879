package proxy

// Privileged gRPC tests: a real grpc-go server and client on both sides of the real proxy
// binary (uid 1337, the project's capture rules), every call kind over HTTP/2 prior knowledge,
// inbound, outbound and pod-to-itself, then SIGTERM with calls in flight.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/proxy/grpcecho"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
	"github.com/sidelane/sidelane/internal/testenv"
)

const (
	grpcPort = 9090
	bigMsg   = 16 << 20
)

// grpcServeIn serves the echo service on grpcPort (IPv4) in the namespace at path.
func grpcServeIn(t *testing.T, path string, h *grpcecho.Handler) {
	t.Helper()
	l := listenIn(t, path, "tcp4", fmt.Sprintf("0.0.0.0:%d", grpcPort))
	s := grpc.NewServer(grpc.MaxRecvMsgSize(2*bigMsg), grpc.MaxSendMsgSize(2*bigMsg))
	grpcecho.Register(s, h)
	go s.Serve(l)
	t.Cleanup(s.Stop)
}

// grpcClientIn is a client connection whose TCP connections start in the namespace at path.
func grpcClientIn(t *testing.T, path, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dialIn(ctx, path, a) }),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(2*bigMsg), grpc.MaxCallSendMsgSize(2*bigMsg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestGRPC(t *testing.T) {
	testenv.RequireRoot(t)
	pod, peer := netnsPair(t)
	settings, err := redirect.FromAnnotations(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := capture.New(contract.BackendAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := capture.InNetns(pod, func() error { return b.Apply(rules.Build(settings, rules.IPv4, rules.IPv6)) }); err != nil {
		t.Fatal(err)
	}
	podApp := &grpcecho.Handler{Ended: make(chan grpcecho.Ended, 16), Started: make(chan struct{}, 16)}
	remoteApp := &grpcecho.Handler{Ended: make(chan grpcecho.Ended, 16), Started: make(chan struct{}, 16)}
	grpcServeIn(t, pod, podApp)
	grpcServeIn(t, peer, remoteApp)
	p := startProxyIn(t, pod, peer)

	paths := []struct {
		name    string
		from    string
		addr    string
		app     *grpcecho.Handler
		dirs    []string // access-log directions per call
		wantDst string
	}{
		{"inbound", peer, hostPort(podIPv4, grpcPort), podApp, []string{"inbound"}, hostPort(podIPv4, grpcPort)},
		{"outbound", pod, hostPort(peerIPv4, grpcPort), remoteApp, []string{"outbound"}, hostPort(peerIPv4, grpcPort)},
		{"pod to itself", pod, hostPort(podIPv4, grpcPort), podApp, []string{"outbound", "inbound"}, hostPort(podIPv4, grpcPort)},
	}
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			cc := grpcClientIn(t, path.from, path.addr)
			testGRPCCalls(t, p, peer, cc, path.app, path.dirs, path.wantDst)
		})
	}
	t.Run("SIGTERM with calls in flight loses none", func(t *testing.T) {
		testGRPCDrain(t, p, grpcClientIn(t, peer, hostPort(podIPv4, grpcPort)), podApp)
	})
}

// logLinesFor waits for n access-log lines of calls to path that started at or after since
// (the log is flushed every 100 ms: lines of earlier calls may still come in).
func logLinesFor(t *testing.T, p *proxyProc, since time.Time, path string, n int) []map[string]any {
	t.Helper()
	var got []map[string]any
	for deadline := time.Now().Add(10 * time.Second); ; {
		got = got[:0]
		for _, l := range p.stdout.lines() {
			start, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
			if l["path"] == path && !start.Before(since) {
				got = append(got, l)
			}
		}
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// grpcCount is the requests_total sum for direction and grpc_status from the proxy's metrics.
func grpcCount(t *testing.T, peer, dir, grpcStatus string) float64 {
	t.Helper()
	resp, err := clientIn(peer, false).Get(fmt.Sprintf("http://%s:%d%s", podIPv4, contract.PrometheusPort, contract.PrometheusPath))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "sidelane_proxy_requests_total{") && strings.Contains(line, `direction="`+dir+`"`) &&
			strings.Contains(line, `grpc_status="`+grpcStatus+`"`) {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}

func testGRPCCalls(t *testing.T, p *proxyProc, peer string, cc *grpc.ClientConn, app *grpcecho.Handler, dirs []string, wantDst string) {
	ctx := context.Background()
	method := func(m string) string { return "/" + grpcecho.Service + "/" + m }

	t.Run("unary with metadata and trailers", func(t *testing.T) {
		from := time.Now()
		var hdr, trl metadata.MD
		out, err := grpcecho.Unary(metadata.AppendToOutgoingContext(ctx, "x-echo", "meta-42"), cc, []byte("ping"),
			grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil || string(out) != "ping" {
			t.Fatalf("unary: %q %v", out, err)
		}
		if hdr.Get("x-echo-header")[0] != "meta-42" || len(trl.Get("x-echo-trailer")) == 0 || trl.Get("x-echo-trailer")[0] != "meta-42" {
			t.Errorf("header %v trailer %v, want x-echo-header and x-echo-trailer meta-42", hdr, trl)
		}
		lines := logLinesFor(t, p, from, method("Unary"), len(dirs))
		if len(lines) != len(dirs) {
			t.Fatalf("%d access-log lines for the call, want %d", len(lines), len(dirs))
		}
		for i, l := range lines {
			if l["direction"] != dirs[i] && l["direction"] != dirs[len(dirs)-1-i] || l["original_dst"] != wantDst ||
				l["method"] != "POST" || l["status"] != 200.0 || l["grpc_status"] != "0" || l["protocol"] != "HTTP/2" ||
				l["request_bytes"] != 11.0 || l["response_bytes"] != 11.0 {
				t.Errorf("access-log line %v", l)
			}
		}
	})

	t.Run("client streaming", func(t *testing.T) {
		st, err := grpcecho.Stream(ctx, cc, "ClientStream")
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 50; i++ {
			if err := grpcecho.Send(st, bytes.Repeat([]byte("c"), 1000)); err != nil {
				t.Fatal(err)
			}
		}
		st.CloseSend()
		out, err := grpcecho.Recv(st)
		if err != nil || string(out) != "50000" {
			t.Fatalf("client stream: %q %v", out, err)
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		st, err := grpcecho.Stream(ctx, cc, "ServerStream")
		if err != nil {
			t.Fatal(err)
		}
		grpcecho.Send(st, []byte("200:5000"))
		st.CloseSend()
		n := 0
		for {
			out, err := grpcecho.Recv(st)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil || len(out) != 5000 {
				t.Fatalf("message %d: %d bytes, %v", n, len(out), err)
			}
			n++
		}
		if n != 200 {
			t.Fatalf("%d messages, want 200", n)
		}
	})

	t.Run("bidi streaming, lock-step", func(t *testing.T) {
		st, err := grpcecho.Stream(ctx, cc, "Bidi")
		if err != nil {
			t.Fatal(err)
		}
		// Each answer arrives before the next message is sent: nothing is buffered whole.
		for i := 0; i < 100; i++ {
			msg := []byte(fmt.Sprintf("bidi-%d", i))
			if err := grpcecho.Send(st, msg); err != nil {
				t.Fatal(err)
			}
			out, err := grpcecho.Recv(st)
			if err != nil || !bytes.Equal(out, msg) {
				t.Fatalf("echo %d: %q %v", i, out, err)
			}
		}
		st.CloseSend()
		if _, err := grpcecho.Recv(st); !errors.Is(err, io.EOF) {
			t.Fatalf("end of stream: %v", err)
		}
	})

	t.Run("100 concurrent streams on one connection", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := grpcecho.Stream(ctx, cc, "Bidi")
				if err != nil {
					errs <- err
					return
				}
				for j := 0; j < 20; j++ {
					msg := []byte(fmt.Sprintf("s%d-m%d", i, j))
					if err := grpcecho.Send(st, msg); err != nil {
						errs <- err
						return
					}
					if out, err := grpcecho.Recv(st); err != nil || !bytes.Equal(out, msg) {
						errs <- fmt.Errorf("stream %d: %q %v", i, out, err)
						return
					}
				}
				st.CloseSend()
				if _, err := grpcecho.Recv(st); !errors.Is(err, io.EOF) {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("16 MiB message", func(t *testing.T) {
		big := bytes.Repeat([]byte("0123456789abcdef"), bigMsg/16)
		out, err := grpcecho.Unary(ctx, cc, big)
		if err != nil || !bytes.Equal(out, big) {
			t.Fatalf("16 MiB echo: %d bytes, %v", len(out), err)
		}
	})

	t.Run("deadline propagates", func(t *testing.T) {
		for len(app.Started) > 0 {
			<-app.Started
		}
		dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := grpcecho.Unary(dctx, cc, []byte("wait"))
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("call: %v, want DeadlineExceeded", err)
		}
		select {
		case e := <-app.Ended:
			if !e.HadDeadline || e.Err == nil {
				t.Errorf("server saw %+v, want the client's deadline", e)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the server's call never ended")
		}
	})

	t.Run("cancellation propagates", func(t *testing.T) {
		from := time.Now()
		cctx, cancel := context.WithCancel(ctx)
		for len(app.Started) > 0 {
			<-app.Started
		}
		done := make(chan error, 1)
		go func() {
			_, err := grpcecho.Unary(cctx, cc, []byte("wait"))
			done <- err
		}()
		// Cancel once the app holds the call.
		select {
		case <-app.Started:
		case <-time.After(10 * time.Second):
			t.Fatal("the call never reached the app")
		}
		cancel()
		if err := <-done; status.Code(err) != codes.Canceled {
			t.Fatalf("call: %v, want Canceled", err)
		}
		select {
		case e := <-app.Ended:
			if !errors.Is(e.Err, context.Canceled) {
				t.Errorf("server saw %v, want context.Canceled", e.Err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the cancel never reached the server")
		}
		lines := logLinesFor(t, p, from, method("Unary"), len(dirs))
		for _, l := range lines {
			if e, _ := l["error"].(string); !strings.Contains(e, "reset by the client") {
				t.Errorf("access-log line of the cancelled call: %v", l)
			}
		}
	})

	t.Run("non-zero grpc-status counted", func(t *testing.T) {
		before := grpcCount(t, peer, dirs[0], "5")
		from := time.Now()
		_, err := grpcecho.Unary(ctx, cc, []byte("status:5:no such thing"))
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such thing" {
			t.Fatalf("call: %v, want NotFound \"no such thing\"", err)
		}
		lines := logLinesFor(t, p, from, method("Unary"), len(dirs))
		if len(lines) != len(dirs) || lines[0]["grpc_status"] != "5" || lines[0]["grpc_message"] != "no such thing" && lines[0]["grpc_message"] != "no%20such%20thing" {
			t.Errorf("access-log lines %v", lines)
		}
		var after float64
		for deadline := time.Now().Add(10 * time.Second); ; {
			if after = grpcCount(t, peer, dirs[0], "5"); after > before || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if after-before != 1 {
			t.Errorf("requests_total{grpc_status=\"5\"} went from %v to %v, want +1", before, after)
		}
	})
}

// testGRPCDrain runs unary calls on one connection, sends SIGTERM with a long call in flight
// and checks that every call the proxy accepted got its answer: only calls that found no
// proxy listening any more (connection refused, never accepted) may fail.
func testGRPCDrain(t *testing.T, p *proxyProc, cc *grpc.ClientConn, app *grpcecho.Handler) {
	var refused atomic.Int64
	ok := newLoadCount(200)
	var lostMu sync.Mutex
	var lost []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for len(app.Started) > 0 {
		<-app.Started
	}
	slow := make(chan error, 1)
	go func() {
		out, err := grpcecho.Unary(context.Background(), cc, []byte("sleep:2s"))
		if err == nil && string(out) != "slept" {
			err = fmt.Errorf("answer %q", out)
		}
		slow <- err
	}()
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := grpcecho.Unary(context.Background(), cc, []byte("drain"))
				switch {
				case err == nil && string(out) == "drain":
					ok.answered()
				case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "connection refused"):
					refused.Add(1) // a new connection after the proxy closed its listeners
					time.Sleep(10 * time.Millisecond)
				default:
					lostMu.Lock()
					lost = append(lost, fmt.Sprintf("%q %v", out, err))
					lostMu.Unlock()
				}
			}
		}()
	}
	ok.wait(t, 30*time.Second)
	select {
	case <-app.Started:
	case err := <-slow:
		t.Fatalf("the slow call ended before it started at the app: %v", err)
	}
	atSignal := ok.Load()
	p.sigtermAndWait(t)
	close(stop)
	wg.Wait()
	if err := <-slow; err != nil {
		t.Errorf("call in flight at SIGTERM: %v", err)
	}
	if p.err != nil {
		t.Errorf("proxy exit: %v", p.err)
	}
	t.Logf("%d calls answered (%d before SIGTERM), %d refused after, %d lost", ok.Load(), atSignal, refused.Load(), len(lost))
	if len(lost) > 0 {
		t.Errorf("%d calls lost, e.g. %v", len(lost), lost[:min(len(lost), 5)])
	}
	if len(lost) > 0 || !strings.Contains(p.stderr.b.String(), "drained") {
		// The streams that ended with an error say where the drain stuck.
		for _, l := range p.stdout.lines() {
			if l["error"] != nil {
				t.Logf("access log: %v", l)
			}
		}
	}
	if !strings.Contains(p.stderr.b.String(), "drained") {
		t.Errorf("the proxy did not drain within its deadline:\n%s", p.stderr.b.String())
	}
}
