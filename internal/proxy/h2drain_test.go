package proxy

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sidelane/sidelane/internal/proxy/grpcecho"
)

// TestHTTP2Drain: a drain sends GOAWAY to HTTP/2 clients, lets the calls in flight finish
// (a long one included) and then ends the connection; no call is lost.
func TestHTTP2Drain(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &grpcecho.Handler{Started: make(chan struct{}, 16)}
	gs := grpc.NewServer()
	grpcecho.Register(gs, app)
	go gs.Serve(l)
	defer gs.Stop()
	h := startProxy(t, l.Addr().String(), nil)
	cc, err := grpc.NewClient("passthrough:///"+h.in, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ok := newLoadCount(100)
	var mu sync.Mutex
	var failed []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
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
				_, err := grpcecho.Unary(context.Background(), cc, []byte("x"))
				if err == nil {
					ok.answered()
					continue
				}
				if strings.Contains(err.Error(), "connection refused") {
					time.Sleep(5 * time.Millisecond)
					continue // a new connection after the listener closed: never accepted
				}
				mu.Lock()
				failed = append(failed, err.Error())
				mu.Unlock()
			}
		}()
	}
	slow := make(chan error, 1)
	go func() {
		_, err := grpcecho.Unary(context.Background(), cc, []byte("sleep:1s"))
		slow <- err
	}()
	select {
	case <-app.Started:
	case err := <-slow:
		t.Fatalf("the long call ended before it started at the app: %v", err)
	}
	ok.wait(t, 30*time.Second)
	h.s.Drain()
	select {
	case <-h.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the drain did not end")
	}
	close(stop)
	wg.Wait()
	if err := <-slow; err != nil {
		t.Errorf("long call in flight: %v", err)
	}
	if len(failed) > 0 {
		t.Errorf("%d calls lost: %v", len(failed), failed[:min(3, len(failed))])
	}
	t.Log(fmt.Sprintf("%d calls answered", ok.Load()))
}
