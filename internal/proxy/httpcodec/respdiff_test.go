package httpcodec

// Differential testing of the response side against net/http's client (http.ReadResponse):
// a response the proxy accepts must be one net/http reads with the same status and the same
// body, so that the proxy and an HTTP client never disagree on where a response ends.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"testing"
	"time"
)

// oursResponse reads the first response in data, the answer to a request with method, the
// way the proxy does, and returns it with the payload its client gets (decoded again from the
// proxy's re-framed output).
func oursResponse(data []byte, method string) (*Response, []byte, error) {
	br := bufio.NewReaderSize(bytes.NewReader(data), 4096)
	var resp Response
	if _, err := ReadResponse(br, &resp, nil, 64<<10, []byte(method)); err != nil {
		return nil, nil, err
	}
	var head, out bytes.Buffer
	hw := bufio.NewWriter(&head)
	if err := WriteResponseHead(hw, &resp, ResponseMode{}); err != nil {
		return nil, nil, err
	}
	hw.Flush()
	// What reaches the client must itself be a response that parses the same way.
	var fwd Response
	if err := fwd.Parse(head.Bytes(), []byte(method)); err != nil {
		return nil, nil, errors.New("forwarded head does not parse: " + err.Error())
	}
	if fwd.Status != resp.Status || fwd.Framing != resp.Framing {
		return nil, nil, errors.New("forwarded head changed the status or the framing")
	}
	bw := bufio.NewWriter(&out)
	if _, err := CopyBody(bw, br, resp.Framing, resp.ContentLength, make([]byte, 512)); err != nil {
		return nil, nil, err
	}
	bw.Flush()
	if resp.Framing == Chunked {
		payload, err := io.ReadAll(httputil.NewChunkedReader(&out))
		if err != nil {
			return nil, nil, errors.New("forwarded chunked body does not decode: " + err.Error())
		}
		return &resp, payload, nil
	}
	return &resp, out.Bytes(), nil
}

// otherTransferCoding reports whether r's Transfer-Encoding lists a coding before chunked.
func otherTransferCoding(r *Response) bool {
	for _, h := range r.Headers {
		if equalFold(h.Name, "transfer-encoding") && !equalFold(bytes.TrimSpace(h.Value), "chunked") {
			return true
		}
	}
	return false
}

// stdlibResponse is what net/http's client made of the first response in data.
type stdlibResponse struct {
	ok     bool // the head parsed and the whole body was read without error
	status int
	body   []byte
}

func readStdlibResponse(data []byte, method string) stdlibResponse {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), &http.Request{Method: method})
	if err != nil {
		return stdlibResponse{}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return stdlibResponse{ok: err == nil, status: resp.StatusCode, body: body}
}

func checkResponseDifferential(t *testing.T, data []byte, method string) {
	var (
		resp    *Response
		payload []byte
		err     error
	)
	done := make(chan struct{})
	go func() { resp, payload, err = oursResponse(data, method); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("the codec did not finish with %q", data)
	}
	if err != nil {
		return // refusing a response is always safe: the client gets a 502
	}
	std := readStdlibResponse(data, method)
	if !std.ok && !otherTransferCoding(resp) {
		t.Fatalf("the proxy accepts a response net/http refuses (to %s): %q", method, data)
	}
	if !std.ok {
		// RFC 9112 6.1: a response may apply other transfer codings before the final
		// chunked (say "gzip, chunked"); the proxy relays them, net/http's client does not
		// implement them.
		return
	}
	if std.status != resp.Status {
		t.Fatalf("status differs: proxy %d, net/http %d\ninput %q", resp.Status, std.status, data)
	}
	if !bytes.Equal(payload, std.body) {
		t.Fatalf("framing differs (to %s): proxy body %q, net/http body %q\ninput %q", method, payload, std.body, data)
	}
}

// FuzzResponseDifferential: see the file comment. The fuzzer's last byte picks the request's
// method, GET or HEAD. (CONNECT is left out: http.ReadResponse does not know that a 2xx to
// CONNECT starts a tunnel and has no body, RFC 9110 9.3.6; the codec tests cover it.)
func FuzzResponseDifferential(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
		"HTTP/1.1 200 OK\r\nA: b\r\n c\r\nContent-Length: 1\r\n\r\nx",
	} {
		for _, m := range []byte{0, 1} {
			f.Add(append([]byte(s), m))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		method := [...]string{"GET", "HEAD"}[int(data[len(data)-1])%2]
		checkResponseDifferential(t, data[:len(data)-1], method)
	})
}
