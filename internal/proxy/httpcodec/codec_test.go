package httpcodec

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
		method  string
		target  string
		host    string
		framing Framing
		length  int64
		close   bool
		upgrade bool
		expect  bool
	}{
		{name: "get", in: "GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n", method: "GET", target: "/a?b=c", host: "x", framing: NoBody},
		{name: "bare LF", in: "GET / HTTP/1.1\nHost: x\n\n", method: "GET", target: "/", host: "x"},
		{name: "leading blank line", in: "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", method: "GET", target: "/", host: "x"},
		{name: "post length", in: "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n", method: "POST", target: "/p", host: "x", framing: Length, length: 12},
		{name: "zero length", in: "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", method: "POST", target: "/p", host: "x", framing: NoBody},
		{name: "chunked", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", method: "POST", target: "/", host: "x", framing: Chunked},
		{name: "close", in: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", method: "GET", target: "/", host: "x", close: true},
		{name: "http/1.0 closes", in: "GET / HTTP/1.0\r\n\r\n", method: "GET", target: "/", close: true},
		{name: "http/1.0 keep-alive", in: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", method: "GET", target: "/"},
		{name: "upgrade", in: "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n", method: "GET", target: "/ws", host: "x", upgrade: true},
		{name: "expect", in: "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", method: "PUT", target: "/", host: "x", framing: Length, length: 3, expect: true},
		{name: "same length twice", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", method: "POST", target: "/", host: "x", framing: Length, length: 3},
		{name: "no host in 1.1", in: "GET / HTTP/1.1\r\n\r\n", wantErr: ErrMalformed},
		{name: "two hosts", in: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", wantErr: ErrMalformed},
		{name: "http/2 preface", in: "PRI * HTTP/2.0\r\n\r\n", wantErr: ErrMalformed},
		{name: "bad method", in: "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", wantErr: ErrMalformed},
		{name: "no target", in: "GET HTTP/1.1\r\nHost: x\r\n\r\n", wantErr: ErrMalformed},
		{name: "folded header", in: "GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n", wantErr: ErrMalformed},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost : x\r\n\r\n", wantErr: ErrMalformed},
		{name: "conflicting length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", wantErr: ErrMalformed},
		{name: "negative length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", wantErr: ErrMalformed},
		{name: "length and chunked", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", wantErr: ErrMalformed},
		{name: "te not chunked", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", wantErr: ErrMalformed},
		{name: "control char", in: "GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n", wantErr: ErrMalformed},
		{name: "too large", in: "GET / HTTP/1.1\r\nHost: x\r\nA: " + strings.Repeat("a", 9000) + "\r\n\r\n", wantErr: ErrHeaderTooLarge},
		{name: "truncated", in: "GET / HTTP/1.1\r\nHost: x\r\n", wantErr: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), 1024)
			var r Request
			_, err := ReadRequest(br, &r, nil, 8192)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(r.Method) != tt.method || string(r.Target) != tt.target || string(r.Host) != tt.host {
				t.Errorf("got %q %q host %q", r.Method, r.Target, r.Host)
			}
			if r.Framing != tt.framing || r.ContentLength != tt.length {
				t.Errorf("framing %v/%d, want %v/%d", r.Framing, r.ContentLength, tt.framing, tt.length)
			}
			if r.Close != tt.close || r.Upgrade != tt.upgrade || r.ExpectContinue != tt.expect {
				t.Errorf("close %v upgrade %v expect %v", r.Close, r.Upgrade, r.ExpectContinue)
			}
		})
	}
}

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		method  string
		wantErr bool
		status  int
		framing Framing
		length  int64
		close   bool
	}{
		{name: "ok length", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", method: "GET", status: 200, framing: Length, length: 5},
		{name: "no reason", in: "HTTP/1.1 204\r\n\r\n", method: "GET", status: 204, framing: NoBody},
		{name: "until close", in: "HTTP/1.1 200 OK\r\n\r\n", method: "GET", status: 200, framing: UntilClose},
		{name: "head has no body", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", method: "HEAD", status: 200, framing: NoBody},
		{name: "304", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", method: "GET", status: 304, framing: NoBody},
		{name: "100", in: "HTTP/1.1 100 Continue\r\n\r\n", method: "PUT", status: 100, framing: NoBody},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", method: "GET", status: 200, framing: Chunked},
		{name: "1.0 closes", in: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", method: "GET", status: 200, framing: Length, length: 1, close: true},
		{name: "bad status", in: "HTTP/1.1 2x0 OK\r\n\r\n", method: "GET", wantErr: true},
		{name: "bad version", in: "HTTP/2.0 200 OK\r\n\r\n", method: "GET", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			var r Response
			_, err := ReadResponse(br, &r, nil, 8192, []byte(tt.method))
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want malformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != tt.status || r.Framing != tt.framing || r.ContentLength != tt.length || r.Close != tt.close {
				t.Errorf("got status %d framing %v length %d close %v", r.Status, r.Framing, r.ContentLength, r.Close)
			}
		})
	}
}

func TestCopyBody(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		framing Framing
		n       int64
		want    string // bytes written to dst
		payload int64
		wantErr bool
		rest    string // what must remain unread in src
	}{
		{name: "length", in: "helloNEXT", framing: Length, n: 5, want: "hello", payload: 5, rest: "NEXT"},
		{name: "short length", in: "hel", framing: Length, n: 5, want: "hel", payload: 3, wantErr: true},
		{name: "chunked", in: "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\nNEXT", framing: Chunked,
			want: "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n", payload: 11, rest: "NEXT"},
		{name: "chunked trailers", in: "1\r\na\r\n0\r\nX-T: 1\r\n\r\n", framing: Chunked, want: "1\r\na\r\n0\r\nX-T: 1\r\n\r\n", payload: 1},
		{name: "chunked bad size", in: "zz\r\nhello\r\n", framing: Chunked, wantErr: true},
		{name: "chunked missing crlf", in: "1\r\nab\r\n0\r\n\r\n", framing: Chunked, want: "1\r\na", payload: 1, wantErr: true},
		{name: "chunked truncated", in: "5\r\nhel", framing: Chunked, want: "5\r\nhel", payload: 3, wantErr: true},
		{name: "until close", in: "all of it", framing: UntilClose, want: "all of it", payload: 9},
		{name: "none", in: "NEXT", framing: NoBody, rest: "NEXT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := bufio.NewReaderSize(strings.NewReader(tt.in), 16)
			var out bytes.Buffer
			dst := bufio.NewWriterSize(&out, 16)
			n, err := CopyBody(dst, src, tt.framing, tt.n, make([]byte, 4))
			dst.Flush()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if out.String() != tt.want || n != tt.payload {
				t.Errorf("wrote %q (%d), want %q (%d)", out.String(), n, tt.want, tt.payload)
			}
			if !tt.wantErr {
				rest, _ := io.ReadAll(src)
				if string(rest) != tt.rest {
					t.Errorf("left %q, want %q", rest, tt.rest)
				}
			}
		})
	}
}

func TestWriteHeads(t *testing.T) {
	var r Request
	raw := "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nKeep-Alive: 5\r\nA: b\r\n\r\n"
	if err := r.Parse([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	WriteRequestHead(bw, &r)
	bw.Flush()
	if want := "GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n\r\n"; out.String() != want {
		t.Errorf("request head %q, want %q", out.String(), want)
	}
	var resp Response
	if err := resp.Parse([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"), nil); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	WriteResponseHead(bw, &resp, true)
	bw.Flush()
	if want := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"; out.String() != want {
		t.Errorf("response head %q, want %q", out.String(), want)
	}
}

// FuzzParse feeds arbitrary bytes to the request and response parsers and the chunked body
// copier: none may panic, and a request that parses must be written back parseable.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
		"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 64)
		var req Request
		if _, err := ReadRequest(br, &req, nil, 4096); err == nil {
			var out bytes.Buffer
			bw := bufio.NewWriter(&out)
			if err := WriteRequestHead(bw, &req); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			var again Request
			if err := again.Parse(out.Bytes()); err != nil {
				t.Fatalf("rewritten head %q does not parse: %v", out.Bytes(), err)
			}
			if !bytes.Equal(again.Method, req.Method) || !bytes.Equal(again.Target, req.Target) || again.Framing != req.Framing {
				t.Fatalf("rewrite changed the request: %q", out.Bytes())
			}
			CopyBody(bufio.NewWriter(io.Discard), br, req.Framing, req.ContentLength, make([]byte, 16))
		}
		var resp Response
		ReadResponse(bufio.NewReaderSize(bytes.NewReader(data), 64), &resp, nil, 4096, []byte("GET"))
		CopyBody(bufio.NewWriter(io.Discard), bufio.NewReaderSize(bytes.NewReader(data), 16), Chunked, 0, make([]byte, 8))
	})
}
