package httpcodec

import (
	"bufio"
)

// hopByHop reports whether a header is a connection-level header that a proxy does not pass on.
func hopByHop(name []byte) bool {
	return equalFold(name, "connection") || equalFold(name, "keep-alive") ||
		equalFold(name, "proxy-connection")
}

// writeRewritten writes the start line of raw and every header except hop-by-hop ones, then
// extra (a complete header line or nothing) and the blank line.
func writeRewritten(bw *bufio.Writer, raw []byte, hs []Header, extra string) error {
	line, _ := nextLine(raw)
	bw.Write(line)
	bw.WriteString("\r\n")
	for _, h := range hs {
		if hopByHop(h.Name) {
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

// WriteRequestHead writes r towards the upstream. An HTTP/1.1 request's Connection options
// are hop-by-hop: they are dropped so that the upstream connection can be kept and reused
// (the proxy decides about the client connection itself). Upgrade requests and HTTP/1.0
// requests are passed on as they came.
func WriteRequestHead(bw *bufio.Writer, r *Request) error {
	if !r.ConnHeader || r.Upgrade || r.Minor == 0 {
		_, err := bw.Write(r.Raw)
		return err
	}
	return writeRewritten(bw, r.Raw, r.Headers, "")
}

// WriteResponseHead writes r towards the client. With close set, the response tells the
// client that the connection closes after it ("Connection: close"), whatever the upstream said.
func WriteResponseHead(bw *bufio.Writer, r *Response, close bool) error {
	if !close || r.Close && r.Minor == 1 || r.Upgrade {
		_, err := bw.Write(r.Raw)
		return err
	}
	return writeRewritten(bw, r.Raw, r.Headers, "Connection: close\r\n")
}
