// Package httpcodec is the proxy's small HTTP/1.1 codec: it reads and validates request and
// response heads into reusable values whose fields are slices of one per-connection buffer (no
// per-header allocation), decides how each message's body is framed (RFC 9112 section 6), and
// copies bodies between buffered connections without ever holding a whole body in memory.
//
// One rule holds for everything it passes on: a message is either forwarded in a form that
// conforms to RFC 9112 and RFC 9110 — CRLF line ends, hop-by-hop fields and the fields named
// in Connection removed, chunked bodies re-framed from their parsed chunks — or it is refused
// with an error that names the rule it broke (ParseError). Nothing ambiguous is passed through
// as it came: the grammar is applied strictly wherever leniency would let two parsers see two
// different messages (folded lines, bare CR, whitespace before a colon, Content-Length together
// with Transfer-Encoding, conflicting lengths, Transfer-Encoding in HTTP/1.0, bare LF inside
// chunked framing, malformed chunk extensions and trailers).
package httpcodec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Errors that map to specific responses.
var (
	// ErrHeaderTooLarge means the head exceeded the configured limit (431).
	ErrHeaderTooLarge = errors.New("httpcodec: header section too large")
	// ErrMalformed matches every *ParseError (errors.Is).
	ErrMalformed = errors.New("httpcodec: malformed message")
)

// ParseError is a message refused for breaking the grammar or a framing rule of RFC 9112 or
// RFC 9110. It matches ErrMalformed.
type ParseError struct {
	// Status is the answer a server gives to such a request: 400, 417, 501 or 505. For
	// responses the proxy answers 502 whatever Status says.
	Status int
	// Rule is a short name of the rule broken (for logs, metrics and tests).
	Rule string
	// Detail says what was found, quoted and clipped.
	Detail string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("httpcodec: malformed message: %s: %s", e.Rule, e.Detail)
}

// Is makes errors.Is(err, ErrMalformed) true for every ParseError.
func (e *ParseError) Is(target error) bool { return target == ErrMalformed }

func refuse(rule, format string, args ...any) error {
	return &ParseError{Status: 400, Rule: rule, Detail: fmt.Sprintf(format, args...)}
}

// The rules a message can break (ParseError.Rule).
const (
	RuleBareCR           = "bare-cr"        // a CR not followed by LF (RFC 9112 2.2)
	RuleRequestLine      = "request-line"   // not method SP request-target SP HTTP-version
	RuleMethod           = "method"         // method is not a token
	RuleTarget           = "request-target" // request-target of no form of RFC 9112 3.2
	RuleVersion          = "version"        // not HTTP/1.0 or HTTP/1.1 (505 for other HTTP versions)
	RuleStatusLine       = "status-line"    // not HTTP-version SP 3DIGIT [SP reason-phrase]
	RuleObsFold          = "obs-fold"       // a header line starting with whitespace (RFC 9112 5.2)
	RuleFieldName        = "field-name"     // no colon, empty name, or a name that is not a token (also whitespace before the colon)
	RuleFieldValue       = "field-value"    // a control character (NUL, CR, ...) in a field value
	RuleHost             = "host"           // HTTP/1.1 without Host, several Host lines, or an invalid Host
	RuleContentLength    = "content-length" // a Content-Length that is not 1*DIGIT, or several different ones
	RuleLengthAndChunked = "content-length+transfer-encoding"
	RuleTransferEncoding = "transfer-encoding" // a request transfer coding other than chunked (501)
	RuleTEInHTTP10       = "transfer-encoding-in-http/1.0"
	RuleConnection       = "connection"      // Connection names a framing field
	RuleExpect           = "expect"          // an expectation other than 100-continue (417)
	RuleChunk            = "chunked-framing" // see body.go
	RuleTrailer          = "trailer"         // a malformed or forbidden trailer field
)

// Header is one header field; Name and Value are slices into the head's buffer.
type Header struct {
	Name, Value []byte
	// hop marks a field that is not forwarded: a hop-by-hop field or one named in Connection.
	hop bool
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
	// KeepAlive is true for an HTTP/1.0 message with "Connection: keep-alive".
	KeepAlive bool
	// Upgrade is true when "Connection: upgrade" and an Upgrade header are present.
	Upgrade bool
	// DeclaresBody is true when Content-Length > 0 or Transfer-Encoding is present, whether
	// or not the message may have a body (a HEAD, 204 or 304 response may declare one).
	DeclaresBody bool

	// bareLF is true when some line of Raw ends in LF alone; canonical when Raw can be
	// forwarded as it is (CRLF line ends, no field to remove).
	bareLF    bool
	canonical bool
}

// Request is a parsed request head. Reuse one per connection: Parse keeps its storage.
type Request struct {
	common
	Method, Target []byte
	// Host is the Host header value (empty when absent).
	Host []byte
	// ExpectContinue is true for "Expect: 100-continue" in an HTTP/1.1 request (RFC 9110
	// 10.1.1: an HTTP/1.0 server ignores the expectation, and so does the proxy).
	ExpectContinue bool
}

// Response is a parsed response head.
type Response struct {
	common
	Status int
	line   []byte // the status line without its line end
}

// readHead reads lines into buf until the blank line that ends a head. It never reads past
// the head. With skipBlank, leading empty lines are skipped, counted against max: RFC 9112
// 2.2 asks it of a server before a request-line, and grants it nowhere else (an empty line
// before a status line is returned as the head, which then fails to parse). A bare CR
// anywhere in the head is refused. io.EOF before any byte is returned as io.EOF, a head cut
// off by the end of the stream as io.ErrUnexpectedEOF.
func readHead(br *bufio.Reader, buf []byte, max int, skipBlank bool) ([]byte, bool, error) {
	buf = buf[:0]
	skipped := 0
	bareLF := false
	lineStart := 0
	for {
		line, err := br.ReadSlice('\n')
		if skipped+len(buf)+len(line) > max {
			return buf, bareLF, ErrHeaderTooLarge
		}
		buf = append(buf, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && (len(buf) > 0 || skipped > 0) {
				err = io.ErrUnexpectedEOF
			}
			return buf, bareLF, err
		}
		// A whole line is at buf[lineStart:], ending in LF.
		l := buf[lineStart:]
		n := len(l)
		crlf := n >= 2 && l[n-2] == '\r'
		if i := bytes.IndexByte(l[:n-1], '\r'); i >= 0 && i != n-2 {
			return buf, bareLF, refuse(RuleBareCR, "a CR not followed by LF in %q", clip(l))
		}
		blank := n == 1 || n == 2 && crlf
		if blank && lineStart == 0 && skipBlank {
			// Leading blank lines before a request line are ignored (RFC 9112 2.2).
			skipped += n
			buf = buf[:0]
			continue
		}
		if !crlf {
			bareLF = true
		}
		if blank {
			return buf, bareLF, nil
		}
		lineStart = len(buf)
	}
}

// nextLine splits b at its first line end and strips the line end.
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
	buf, bareLF, err := readHead(br, buf, max, true)
	if err != nil {
		return buf, err
	}
	err = r.Parse(buf)
	r.bareLF = bareLF
	r.canonical = r.canonical && !bareLF
	return buf, err
}

// ReadResponse reads and parses one response head; see ReadRequest. method is the request's
// method (HEAD and CONNECT change what a response may carry).
func ReadResponse(br *bufio.Reader, r *Response, buf []byte, max int, method []byte) ([]byte, error) {
	buf, bareLF, err := readHead(br, buf, max, false)
	if err != nil {
		return buf, err
	}
	err = r.Parse(buf, method)
	r.bareLF = bareLF
	r.canonical = r.canonical && !bareLF
	return buf, err
}

// Parse parses a complete request head (as read by ReadRequest). Its line ends may be CRLF or
// LF; a head read by ReadRequest has no bare CR.
func (r *Request) Parse(raw []byte) error {
	hs := r.Headers[:0]
	*r = Request{}
	r.Headers = hs
	r.Raw = raw
	line, rest := nextLine(raw)
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return refuse(RuleRequestLine, "%q", clip(line))
	}
	r.Method = line[:sp1]
	if !isToken(r.Method) {
		return refuse(RuleMethod, "%q", clip(r.Method))
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 <= 0 {
		return refuse(RuleRequestLine, "%q", clip(line))
	}
	r.Target = line[sp1+1 : sp1+1+sp2]
	version := line[sp1+1+sp2+1:]
	minor, err := parseVersion(version)
	if err != nil {
		return err
	}
	r.Minor = minor
	if err := checkTarget(r.Method, r.Target); err != nil {
		return err
	}
	if err := r.parseHeaders(rest, true); err != nil {
		return err
	}
	var hostSeen bool
	for _, h := range r.Headers {
		switch {
		case equalFold(h.Name, "host"):
			if hostSeen {
				return refuse(RuleHost, "more than one Host header")
			}
			hostSeen = true
			r.Host = h.Value
			if !validHost(h.Value) {
				return refuse(RuleHost, "Host %q", clip(h.Value))
			}
		case equalFold(h.Name, "expect") && len(h.Value) > 0:
			// An empty list is no expectation (RFC 9110 5.6.1: empty elements are accepted).
			if !equalFold(h.Value, "100-continue") {
				return &ParseError{Status: 417, Rule: RuleExpect, Detail: fmt.Sprintf("Expect %q", clip(h.Value))}
			}
			// RFC 9110 10.1.1: 100-continue in an HTTP/1.0 request is ignored.
			r.ExpectContinue = r.Minor == 1
		}
	}
	if r.Minor == 1 && !hostSeen {
		return refuse(RuleHost, "HTTP/1.1 request without Host")
	}
	return nil
}

// checkTarget checks the request-target against the four forms of RFC 9112 3.2: origin-form
// ("/path?query"), absolute-form ("scheme:..."), authority-form (CONNECT only) and
// asterisk-form (OPTIONS only). Every byte must be visible ASCII or obs-text, '#' is never
// part of a request-target, and each '%' in the path starts a percent-encoded octet.
func checkTarget(method, t []byte) error {
	bad := func(why string) error { return refuse(RuleTarget, "%q: %s", clip(t), why) }
	for _, c := range t {
		if c <= ' ' || c == 0x7f {
			return bad("control character or space")
		}
		if c == '#' {
			return bad("a fragment is not part of a request-target")
		}
	}
	connect := string(method) == "CONNECT"
	switch {
	case connect:
		// authority-form: uri-host ":" port, neither of them empty. validHost checks both;
		// here the port must be there: a last ':' after any ']' and not at either end.
		i := bytes.LastIndexByte(t, ':')
		if i <= 0 || i == len(t)-1 || i < bytes.LastIndexByte(t, ']') || t[0] == '/' || !validHost(t) {
			return bad("CONNECT needs host:port")
		}
		return nil
	case string(t) == "*":
		if string(method) != "OPTIONS" {
			return bad("asterisk-form is for OPTIONS only")
		}
		return nil
	case t[0] == '/':
	default:
		// absolute-form: scheme ":" hier-part.
		i := bytes.IndexByte(t, ':')
		if i <= 0 || !isScheme(t[:i]) {
			return bad("neither origin-form nor absolute-form")
		}
		// An authority ("//" host [":" port]) is a uri-host as in Host, without userinfo
		// (RFC 9110 4.2.4: treat its presence as an error); http and https need a non-empty
		// one (RFC 9110 4.2.1, 4.2.2).
		rest := t[i+1:]
		web := equalFold(t[:i], "http") || equalFold(t[:i], "https")
		if bytes.HasPrefix(rest, []byte("//")) {
			auth := rest[2:]
			if j := bytes.IndexAny(auth, "/?"); j >= 0 {
				auth = auth[:j]
			}
			if !validHost(auth) || web && (len(auth) == 0 || auth[0] == ':') {
				return bad("the authority is not host[:port]")
			}
		} else if web {
			return bad("an http(s) URI needs an authority")
		}
	}
	path := t
	if q := bytes.IndexByte(t, '?'); q >= 0 {
		path = t[:q]
	}
	for i := 0; i < len(path); i++ {
		if path[i] == '%' {
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return bad("'%' not followed by two hex digits")
			}
		}
	}
	return nil
}

func isScheme(s []byte) bool {
	if len(s) == 0 || !('a' <= s[0]|0x20 && s[0]|0x20 <= 'z') {
		return false
	}
	for _, c := range s[1:] {
		if !('a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// validHost accepts uri-host [ ":" port ] (RFC 3986 3.2.2, 3.2.3; RFC 9110 7.2): an
// IP-literal in brackets (an IPv6 address without a zone, or IPvFuture), or a reg-name or
// IPv4address of unreserved characters, sub-delims and percent-encoded non-ASCII octets; the port is
// digits. An empty Host is valid (RFC 9112 3.2 allows it when the target has no authority).
func validHost(h []byte) bool {
	host, port := h, []byte(nil)
	if len(h) > 0 && h[0] == '[' {
		end := bytes.IndexByte(h, ']')
		if end < 0 || !validIPLiteral(h[1:end]) {
			return false
		}
		host = nil
		if rest := h[end+1:]; len(rest) > 0 {
			if rest[0] != ':' {
				return false
			}
			port = rest[1:]
		}
	} else if i := bytes.IndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
	}
	for i, c := range host {
		if !regNameChar[c] {
			return false
		}
		// pct-encoded = "%" HEXDIG HEXDIG, and in a host only for the bytes of a UTF-8
		// sequence (RFC 3986 3.2.2): "%00" or "%41" is refused.
		if c == '%' && (i+2 >= len(host) || !isHex(host[i+1]) || host[i+1] < '8' || !isHex(host[i+2])) {
			return false
		}
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// regNameChar: unreserved, sub-delims and '%' (RFC 3986 reg-name).
var regNameChar = charTable("-._~!$&'()*+,;=%")

// validIPLiteral accepts what RFC 3986's IP-literal holds between its brackets: an IPv6
// address (no zone: RFC 9110 URIs carry none) or IPvFuture ("v" 1*HEXDIG "." 1*( unreserved /
// sub-delims / ":" )).
func validIPLiteral(b []byte) bool {
	if len(b) > 0 && (b[0] == 'v' || b[0] == 'V') {
		dot := bytes.IndexByte(b, '.')
		if dot < 2 || dot == len(b)-1 {
			return false
		}
		for _, c := range b[1:dot] {
			if !isHex(c) {
				return false
			}
		}
		for _, c := range b[dot+1:] {
			if c == '%' || !regNameChar[c] && c != ':' {
				return false
			}
		}
		return true
	}
	a, err := netip.ParseAddr(string(b))
	return err == nil && a.Is6() && a.Zone() == ""
}

// Parse parses a complete response head; method is the request's method (HEAD responses
// have no body, nor have 2xx answers to CONNECT).
func (r *Response) Parse(raw []byte, method []byte) error {
	hs := r.Headers[:0]
	*r = Response{}
	r.Headers = hs
	r.Raw = raw
	line, rest := nextLine(raw)
	r.line = line
	if len(line) < 12 || line[8] != ' ' || len(line) > 12 && line[12] != ' ' {
		return refuse(RuleStatusLine, "%q", clip(line))
	}
	minor, err := parseVersion(line[:8])
	if err != nil {
		return refuse(RuleStatusLine, "%q", clip(line))
	}
	r.Minor = minor
	c := line[9:12]
	if c[0] < '1' || c[0] > '5' || c[1] < '0' || c[1] > '9' || c[2] < '0' || c[2] > '9' {
		return refuse(RuleStatusLine, "status code %q", c)
	}
	if len(line) > 12 {
		// reason-phrase = *( HTAB / SP / VCHAR / obs-text )
		for _, b := range line[13:] {
			if b < ' ' && b != '\t' || b == 0x7f {
				return refuse(RuleStatusLine, "control character in reason phrase %q", clip(line))
			}
		}
	}
	r.Status = int(c[0]-'0')*100 + int(c[1]-'0')*10 + int(c[2]-'0')
	if err := r.parseHeaders(rest, false); err != nil {
		return err
	}
	tunnel := string(method) == "CONNECT" && r.Status/100 == 2
	if string(method) == "HEAD" || r.Status < 200 || r.Status == 204 || r.Status == 304 || tunnel {
		r.Framing = NoBody
		r.ContentLength = 0
	}
	return nil
}

// parseHeaders parses header lines and derives framing and connection handling.
func (m *common) parseHeaders(b []byte, request bool) error {
	var (
		clSeen, teSeen, chunkedLast bool
		clValue                     []byte // the first Content-Length value
		teLines, teTokens           int
		upgradeHdr, connUpgrade     bool
		connKeepAlive, connClose    bool
		connLines                   [][]byte
	)
	m.ContentLength = 0
	for {
		var line []byte
		line, b = nextLine(b)
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return refuse(RuleObsFold, "folded header line %q", clip(line))
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return refuse(RuleFieldName, "header line %q", clip(line))
		}
		name := line[:colon]
		if !isToken(name) {
			return refuse(RuleFieldName, "header name %q", clip(name))
		}
		value := trimOWS(line[colon+1:])
		if !validFieldValue(value) {
			return refuse(RuleFieldValue, "header %s has a control character", clip(name))
		}
		m.Headers = append(m.Headers, Header{Name: name, Value: value})
		switch {
		case equalFold(name, "content-length"):
			n, ok := parseLength(value)
			if !ok {
				return refuse(RuleContentLength, "Content-Length %q", clip(value))
			}
			// Repeats must be the same digits (RFC 9110 8.6's "identical decimal values"):
			// "0" and "00" are not, and a peer may pick either line.
			if clSeen && !bytes.Equal(value, clValue) {
				return refuse(RuleContentLength, "conflicting Content-Length values %q and %q", clip(clValue), clip(value))
			}
			clSeen, clValue = true, value
			m.ContentLength = n
		case equalFold(name, "transfer-encoding"):
			teSeen = true
			teLines++
			forTokens(value, func([]byte) { teTokens++ })
			chunkedLast = lastTokenIs(value, "chunked")
		case equalFold(name, "connection"):
			connLines = append(connLines, value)
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
		return refuse(RuleLengthAndChunked, "both Content-Length and Transfer-Encoding")
	}
	if teSeen && m.Minor == 0 {
		// RFC 9112 6.1: a recipient of an HTTP/1.0 message with Transfer-Encoding MUST treat
		// its framing as faulty; the proxy refuses it, a request with 400, a response with 502.
		return refuse(RuleTEInHTTP10, "Transfer-Encoding in an HTTP/1.0 message")
	}
	if request && teSeen {
		if teLines != 1 || teTokens != 1 || !chunkedLast {
			return &ParseError{Status: 501, Rule: RuleTransferEncoding, Detail: "only Transfer-Encoding: chunked is accepted in a request"}
		}
	}
	m.DeclaresBody = teSeen || clSeen && m.ContentLength > 0
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
	m.KeepAlive = m.Minor == 0 && connKeepAlive && !connClose
	m.Upgrade = connUpgrade && upgradeHdr
	// Hop-by-hop fields and the fields Connection names are not forwarded (RFC 9110 7.6.1).
	// Connection may not name a field that frames the message: dropping it would change
	// where the message ends.
	for _, v := range connLines {
		var bad []byte
		forTokens(v, func(t []byte) {
			if equalFold(t, "content-length") || equalFold(t, "transfer-encoding") || equalFold(t, "host") {
				bad = t
			}
		})
		if bad != nil {
			return refuse(RuleConnection, "Connection names %q", clip(bad))
		}
	}
	m.canonical = true
	for i := range m.Headers {
		h := &m.Headers[i]
		if equalFold(h.Name, "connection") || equalFold(h.Name, "keep-alive") || equalFold(h.Name, "proxy-connection") {
			h.hop = true
		} else if m.Upgrade && equalFold(h.Name, "upgrade") {
			continue
		} else {
			for _, v := range connLines {
				forTokens(v, func(t []byte) {
					if equalFoldBytes(h.Name, t) {
						h.hop = true
					}
				})
			}
		}
		if h.hop {
			m.canonical = false
		}
	}
	return nil
}

// equalFoldBytes compares a and b ignoring ASCII case.
func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// validFieldValue reports whether v holds only HTAB, SP, VCHAR and obs-text (RFC 9110 5.5).
func validFieldValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// parseVersion accepts HTTP/1.0 and HTTP/1.1; any other HTTP-version is refused with 505,
// anything that is no HTTP-version with 400.
func parseVersion(v []byte) (int, error) {
	if len(v) == 8 && string(v[:7]) == "HTTP/1." {
		switch v[7] {
		case '0':
			return 0, nil
		case '1':
			return 1, nil
		}
	}
	if len(v) == 8 && string(v[:5]) == "HTTP/" && isDigit(v[5]) && v[6] == '.' && isDigit(v[7]) {
		return 0, &ParseError{Status: 505, Rule: RuleVersion, Detail: fmt.Sprintf("%q is not supported", v)}
	}
	return 0, refuse(RuleVersion, "%q", clip(v))
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

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

// tokenTable holds tchar (RFC 9110 5.6.2).
var tokenTable = charTable("!#$%&'*+-.^_`|~")

// charTable returns the table of ASCII letters, digits and the characters of extra.
func charTable(extra string) (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range extra {
		t[c] = true
	}
	return t
}

// IsTokenChar reports whether c may appear in a token (RFC 9110 5.6.2).
func IsTokenChar(c byte) bool { return tokenTable[c] }

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
