package httpcodec

import (
	"bufio"
)

// writeHead writes start (the start line without its line end), CRLF, every header that is
// forwarded (hop-by-hop and Connection-named fields removed; with dropTE, Transfer-Encoding
// too), then extra (complete header lines or nothing) and the blank line.
func writeHead(bw *bufio.Writer, start []byte, hs []Header, dropTE bool, extra string) error {
	bw.Write(start)
	bw.WriteString("\r\n")
	for _, h := range hs {
		if h.hop || dropTE && equalFold(h.Name, "transfer-encoding") {
			continue
		}
		bw.Write(h.Name)
		bw.WriteString(": ")
		bw.Write(h.Value)
		bw.WriteString("\r\n")
	}
	bw.WriteString(extra)
	_, err := bw.WriteString("\r\n")
	return err
}

// WriteRequestHead writes r towards the upstream in normal form: CRLF line ends, hop-by-hop
// fields and the fields named in Connection removed (the proxy manages the client and the
// upstream connection separately). An upgrade request keeps "Connection: upgrade" and its
// Upgrade field; an HTTP/1.0 request that asked for keep-alive keeps asking for it. A head that
// is already in normal form is written as it came.
func WriteRequestHead(bw *bufio.Writer, r *Request) error {
	if r.canonical {
		_, err := bw.Write(r.Raw)
		return err
	}
	line, _ := nextLine(r.Raw)
	extra := ""
	switch {
	case r.Upgrade:
		extra = "Connection: upgrade\r\n"
	case r.KeepAlive:
		extra = "Connection: keep-alive\r\n"
	}
	return writeHead(bw, line, r.Headers, false, extra)
}

// ResponseMode says how the proxy passes a response on to its client.
type ResponseMode struct {
	// Close: the client connection closes after this response ("Connection: close").
	Close bool
	// KeepAlive10: the client speaks HTTP/1.0 and its connection stays open
	// ("Connection: keep-alive").
	KeepAlive10 bool
	// Dechunk: the body is passed on without its chunked framing (Transfer-Encoding removed;
	// the body then ends with the connection, so Close must be set too).
	Dechunk bool
}

// WriteResponseHead writes r towards the client in normal form (see WriteRequestHead) with the
// connection handling of mode. A 101 answer keeps "Connection: upgrade" and Upgrade.
func WriteResponseHead(bw *bufio.Writer, r *Response, mode ResponseMode) error {
	var extra string
	switch {
	case r.Upgrade && r.Status == 101:
		extra = "Connection: upgrade\r\n"
	case mode.Close:
		extra = "Connection: close\r\n"
	case mode.KeepAlive10:
		extra = "Connection: keep-alive\r\n"
	}
	if r.canonical && extra == "" && !mode.Dechunk {
		_, err := bw.Write(r.Raw)
		return err
	}
	return writeHead(bw, r.line, r.Headers, mode.Dechunk, extra)
}

// IsInterim reports whether r is a 1xx interim response other than 101.
func (r *Response) IsInterim() bool { return r.Status < 200 && r.Status != 101 }
