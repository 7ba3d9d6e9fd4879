package h2relay

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzRelay sends the client preface and then arbitrary bytes through a relay to a real
// x/net/http2 server: the relay never panics, never hangs, and ends once the client is gone.
// The seed corpus (testdata/fuzz/FuzzRelay: a request, trailers, resets, a CONTINUATION
// chain, bad frames, and upstream_error_while_client_gone, which once hung the relay: the
// upstream pump ended on a write error without closing, leaving the client pump blocked
// writing to an upstream that had stopped reading) runs with every `go test`; fuzz longer with
// `go test -fuzz FuzzRelay ./internal/proxy/h2relay`.
func FuzzRelay(f *testing.F) {
	f.Add(seedRequest())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		clientEnd, relayEnd := net.Pipe()
		upRelayEnd, upEnd := net.Pipe()
		srv := &http2.Server{}
		go srv.ServeConn(upEnd, &http2.ServeConnOpts{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(w, r.Body)
		})})
		var streams int
		r := New(relayEnd, nil, Limits{IdleTimeout: time.Second, PrefaceTimeout: time.Second}, func(*Stream) { streams++ })
		go io.Copy(io.Discard, clientEnd)
		go func() {
			clientEnd.Write([]byte(ClientPreface))
			clientEnd.Write(data)
			// The client is done: what it sent is all there is.
			clientEnd.Close()
		}()
		done := make(chan struct{})
		go func() {
			r.Serve(func() (net.Conn, error) { return upRelayEnd, nil })
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("relay did not end after the client closed:\n%s", buf[:runtime.Stack(buf, true)])
		}
		upEnd.Close()
	})
}

// seedRequest is a well-formed exchange: SETTINGS, a POST with a body, trailers.
func seedRequest() []byte {
	var b, hb bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	enc := hpack.NewEncoder(&hb)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/p"}, {"content-type", "application/grpc"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true, BlockFragment: hb.Bytes()})
	fr.WriteData(1, false, []byte("\x00\x00\x00\x00\x03abc"))
	hb.Reset()
	enc.WriteField(hpack.HeaderField{Name: "x-trailer", Value: "t"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, EndHeaders: true, BlockFragment: hb.Bytes()})
	fr.WriteWindowUpdate(0, 1000)
	fr.WritePing(false, [8]byte{1})
	fr.WriteRSTStream(1, http2.ErrCodeCancel)
	fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	return b.Bytes()
}
