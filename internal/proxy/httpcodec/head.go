// Package httpcodec is the proxy's small HTTP/1.1 codec: it reads and validates request and
// response heads into reusable values whose fields are slices of one per-connection buffer (no
// per-header allocation), decides how each message's body is framed (RFC 9112 section 6), and
// copies bodies between buffered connections without ever holding a whole body in memory.
//
// It is deliberately strict where leniency lets requests be smuggled past a proxy: folded
// header lines, whitespace before a header colon, conflicting Content-Length values and
// Content-Length together with Transfer-Encoding are refused.
package httpcodec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
)

// Errors that map to specific responses.
var (
	// ErrHeaderTooLarge means the head exceeded the configured limit (431).
	ErrHeaderTooLarge = errors.New("httpcodec: header section too large")
	// ErrMalformed wraps every syntax error in a head (400).
	ErrMalformed = errors.New("httpcodec: malformed message")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Header is one header field; Name and Value are slices into the head's buffer.
type Header struct {
	Name, Value []byte
}

// Framing says how a message body is delimited.
type Framing uint8

// Body framings.
const (
	NoBody     Framing = iota // no body at all
	Length                    // Content-Length bytes
	Chunked                   // chunked transfer coding
	UntilClose                // everything until the connection closes (responses only)
)

// common is what requests and responses share.
type common struct {
	// Raw is the whole head as read, request/status line to the blank line included.
	Raw     []byte
	Headers []Header
	// Minor is the HTTP/1.x minor version (0 or 1).
	Minor         int
	Framing       Framing
	ContentLength int64
	// Close is true when the sender will close (or asks to close) the connection after
	// this message: "Connection: close", or HTTP/1.0 without "Connection: keep-alive".
	Close bool
	// ConnHeader is true when a Connection header is present (hop-by-hop rewriting needed).
	ConnHeader bool
	// Upgrade is true when "Connection: upgrade" and an Upgrade header are present.
	Upgrade bool
}

// Request is a parsed request head. Reuse one per connection: Reset keeps its storage.
type Request struct {
	common
	Method, Target []byte
	// Host is the Host header value (empty when absent).
	Host []byte
	// ExpectContinue is true for "Expect: 100-continue".
	ExpectContinue bool
}

// Response is a parsed response head.
type Response struct {
	common
	Status int
}

// readHead reads lines into buf until the blank line that ends a head. It never reads past
// the head. max bounds the total size.
func readHead(br *bufio.Reader, buf []byte, max int) ([]byte, error) {
	buf = buf[:0]
	for {
		line, err := br.ReadSlice('\n')
		if len(buf)+len(line) > max {
			return buf, ErrHeaderTooLarge
		}
		buf = append(buf, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return buf, err
		}
		// A line is complete: is it the blank line?
		n := len(buf)
		if n == 1 || n == 2 && buf[0] == '\r' {
			// Leading blank lines before a request line are ignored (RFC 9112 2.2).
			buf = buf[:0]
			continue
		}
		if buf[n-2] == '\n' || (n >= 3 && buf[n-2] == '\r' && buf[n-3] == '\n') {
			return buf, nil
		}
	}
}

// splitLines calls fn for each line of head without its line ending, stopping at the blank line.
func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, rest
}

// ReadRequest reads and parses one request head from br into r, using buf (which it may grow
// up to max bytes) as storage. It returns the storage for reuse. On io.EOF before any byte the
// error is io.EOF itself.
func ReadRequest(br *bufio.Reader, r *Request, buf []byte, max int) ([]byte, error) {
	buf, err := readHead(br, buf, max)
	if err != nil {
		return buf, err
	}
	return buf, r.Parse(buf)
}

// ReadResponse reads and parses one response head; see ReadRequest.
func ReadResponse(br *bufio.Reader, r *Response, buf []byte, max int, method []byte) ([]byte, error) {
	buf, err := readHead(br, buf, max)
	if err != nil {
		return buf, err
	}
	return buf, r.Parse(buf, method)
}

// Parse parses a complete request head (as read by ReadRequest).
func (r *Request) Parse(raw []byte) error {
	hs := r.Headers[:0]
	*r = Request{}
	r.Headers = hs
	r.Raw = raw
	line, rest := nextLine(raw)
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return malformed("request line %q", clip(line))
	}
	r.Method = line[:sp1]
	if !isToken(r.Method) {
		return malformed("method %q", clip(r.Method))
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 <= 0 {
		return malformed("request line %q", clip(line))
	}
	r.Target = line[sp1+1 : sp1+1+sp2]
	for _, c := range r.Target {
		if c <= ' ' || c == 0x7f {
			return malformed("request target %q", clip(r.Target))
		}
	}
	minor, ok := parseVersion(line[sp1+1+sp2+1:])
	if !ok {
		return malformed("version %q", clip(line[sp1+1+sp2+1:]))
	}
	r.Minor = minor
	if err := r.parseHeaders(rest, true); err != nil {
		return err
	}
	var hostSeen bool
	for _, h := range r.Headers {
		switch {
		case equalFold(h.Name, "host"):
			if hostSeen {
				return malformed("more than one Host header")
			}
			hostSeen = true
			r.Host = h.Value
		case equalFold(h.Name, "expect"):
			r.ExpectContinue = equalFold(h.Value, "100-continue")
		}
	}
	if r.Minor == 1 && !hostSeen {
		return malformed("HTTP/1.1 request without Host")
	}
	if r.Framing == UntilClose {
		return malformed("request Transfer-Encoding without final chunked")
	}
	return nil
}

// Parse parses a complete response head; method is the request's method (HEAD responses
// have no body).
func (r *Response) Parse(raw []byte, method []byte) error {
	hs := r.Headers[:0]
	*r = Response{}
	r.Headers = hs
	r.Raw = raw
	line, rest := nextLine(raw)
	if len(line) < 12 || line[8] != ' ' {
		return malformed("status line %q", clip(line))
	}
	minor, ok := parseVersion(line[:8])
	if !ok {
		return malformed("status line %q", clip(line))
	}
	r.Minor = minor
	c := line[9:12]
	if c[0] < '1' || c[0] > '5' || c[1] < '0' || c[1] > '9' || c[2] < '0' || c[2] > '9' {
		return malformed("status code %q", c)
	}
	if len(line) > 12 && line[12] != ' ' {
		return malformed("status line %q", clip(line))
	}
	r.Status = int(c[0]-'0')*100 + int(c[1]-'0')*10 + int(c[2]-'0')
	if err := r.parseHeaders(rest, false); err != nil {
		return err
	}
	if string(method) == "HEAD" || r.Status < 200 || r.Status == 204 || r.Status == 304 {
		r.Framing = NoBody
		r.ContentLength = 0
	}
	return nil
}

// parseHeaders parses header lines and derives framing and connection handling.
func (m *common) parseHeaders(b []byte, request bool) error {
	var (
		clSeen, teSeen, chunkedLast bool
		upgradeHdr, connUpgrade     bool
		connKeepAlive, connClose    bool
	)
	m.ContentLength = 0
	for {
		var line []byte
		line, b = nextLine(b)
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return malformed("folded header line")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return malformed("header line %q", clip(line))
		}
		name := line[:colon]
		if !isToken(name) {
			return malformed("header name %q", clip(name))
		}
		value := trimOWS(line[colon+1:])
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return malformed("header %s value has a control character", clip(name))
			}
		}
		m.Headers = append(m.Headers, Header{Name: name, Value: value})
		switch {
		case equalFold(name, "content-length"):
			n, ok := parseLength(value)
			if !ok {
				return malformed("Content-Length %q", clip(value))
			}
			if clSeen && n != m.ContentLength {
				return malformed("conflicting Content-Length values")
			}
			clSeen = true
			m.ContentLength = n
		case equalFold(name, "transfer-encoding"):
			teSeen = true
			chunkedLast = lastTokenIs(value, "chunked")
		case equalFold(name, "connection"):
			m.ConnHeader = true
			forTokens(value, func(t []byte) {
				switch {
				case equalFold(t, "close"):
					connClose = true
				case equalFold(t, "keep-alive"):
					connKeepAlive = true
				case equalFold(t, "upgrade"):
					connUpgrade = true
				}
			})
		case equalFold(name, "upgrade"):
			upgradeHdr = true
		}
	}
	if teSeen && clSeen {
		return malformed("both Content-Length and Transfer-Encoding")
	}
	switch {
	case teSeen && chunkedLast:
		m.Framing = Chunked
	case teSeen:
		m.Framing = UntilClose
	case clSeen:
		m.Framing = Length
		if m.ContentLength == 0 {
			m.Framing = NoBody
		}
	case request:
		m.Framing = NoBody
	default:
		m.Framing = UntilClose
	}
	m.Close = connClose || (m.Minor == 0 && !connKeepAlive)
	m.Upgrade = connUpgrade && upgradeHdr
	return nil
}

func parseVersion(v []byte) (int, bool) {
	if len(v) != 8 || string(v[:7]) != "HTTP/1." {
		return 0, false
	}
	switch v[7] {
	case '0':
		return 0, true
	case '1':
		return 1, true
	}
	return 0, false
}

func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func forTokens(v []byte, fn func([]byte)) {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var t []byte
		if i < 0 {
			t, v = v, nil
		} else {
			t, v = v[:i], v[i+1:]
		}
		if t = trimOWS(t); len(t) > 0 {
			fn(t)
		}
	}
}

func lastTokenIs(v []byte, want string) bool {
	var last []byte
	forTokens(v, func(t []byte) { last = t })
	return equalFold(last, want)
}

// equalFold compares b with the lower-case ASCII string s, ignoring ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// EqualFold reports whether b equals the lower-case ASCII string s, ignoring ASCII case.
func EqualFold(b []byte, s string) bool { return equalFold(b, s) }

var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenTable[c] {
			return false
		}
	}
	return true
}

func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
