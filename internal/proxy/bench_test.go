package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkKeepAlive proxies small keep-alive GETs in process (for profiling; the speed
// targets are checked by bench/proxybench).
func BenchmarkKeepAlive(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the benchmark app\n")
	}))
	defer up.Close()
	h := startProxy(b, upstreamAddr(up), func(c *Config) { c.AccessLog = true })
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", h.out)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req := "GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: x\r\n\r\n"
		for pb.Next() {
			if _, err := io.WriteString(c, req); err != nil {
				b.Error(err)
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if !strings.HasPrefix(resp.Status, "200") {
				b.Error(resp.Status)
				return
			}
		}
	})
}
