package httpcodec

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

const (
	// maxChunkLine bounds a chunk-size line (size plus extensions) and each trailer line.
	maxChunkLine = 4096
	// maxTrailerBytes bounds the whole trailer section.
	maxTrailerBytes = 64 << 10
	// maxChunkDigits bounds a chunk size (15 hex digits: sizes below 2^60).
	maxChunkDigits = 15
)

// WriteError wraps an error from the destination of a copy, so that a caller can tell a
// failing receiver from a failing (or malformed) sender.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "write: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

func writeErr(err error) error {
	if err == nil {
		return nil
	}
	return &WriteError{Err: err}
}

func chunkErr(format string, args ...any) error {
	return &ParseError{Status: 400, Rule: RuleChunk, Detail: fmt.Sprintf(format, args...)}
}

// CopyBody copies one message body framed as f (n bytes for Length) from src to dst and
// returns the number of body bytes copied (payload only for chunked bodies). dst is flushed
// whenever src has nothing buffered, so a streamed body is passed on as it arrives and
// never held whole. A chunked body is parsed strictly (RFC 9112 7.1) and written again from
// its parsed parts: each chunk as its size in hex, CRLF, the data, CRLF; chunk extensions are
// dropped; the trailer fields are validated and passed on. buf is scratch space.
// Errors writing to dst are *WriteError; a malformed chunked body is a *ParseError.
func CopyBody(dst *bufio.Writer, src *bufio.Reader, f Framing, n int64, buf []byte) (int64, error) {
	switch f {
	case NoBody:
		return 0, nil
	case Length:
		return copyN(dst, src, n, buf)
	case Chunked:
		return copyChunked(dst, src, buf, true)
	case UntilClose:
		return copyAll(dst, src, buf)
	}
	return 0, errors.New("httpcodec: unknown framing")
}

// DecodeChunked copies the payload of a chunked body from src to dst without its framing
// (for an HTTP/1.0 recipient, whose body then ends with the connection); trailers are read,
// validated and dropped.
func DecodeChunked(dst *bufio.Writer, src *bufio.Reader, buf []byte) (int64, error) {
	return copyChunked(dst, src, buf, false)
}

// copyN copies exactly n bytes; a short source is io.ErrUnexpectedEOF.
func copyN(dst *bufio.Writer, src *bufio.Reader, n int64, buf []byte) (int64, error) {
	var done int64
	for done < n {
		if src.Buffered() == 0 && dst.Buffered() > 0 {
			if err := dst.Flush(); err != nil {
				return done, writeErr(err)
			}
		}
		p := buf
		if rem := n - done; int64(len(p)) > rem {
			p = p[:rem]
		}
		nr, err := src.Read(p)
		if nr > 0 {
			if _, werr := dst.Write(p[:nr]); werr != nil {
				return done, writeErr(werr)
			}
			done += int64(nr)
		}
		if err != nil {
			if err == io.EOF {
				if done == n {
					break
				}
				err = io.ErrUnexpectedEOF
			}
			return done, err
		}
	}
	return done, nil
}

func copyAll(dst *bufio.Writer, src *bufio.Reader, buf []byte) (int64, error) {
	var done int64
	for {
		if src.Buffered() == 0 && dst.Buffered() > 0 {
			if err := dst.Flush(); err != nil {
				return done, writeErr(err)
			}
		}
		nr, err := src.Read(buf)
		if nr > 0 {
			if _, werr := dst.Write(buf[:nr]); werr != nil {
				return done, writeErr(werr)
			}
			done += int64(nr)
		}
		if err == io.EOF {
			return done, nil
		}
		if err != nil {
			return done, err
		}
	}
}

// readCRLFLine reads one line of chunked framing: it must end in CRLF (a bare LF is refused,
// the pattern behind CVE-2025-22871) and be at most maxChunkLine bytes. The line is returned
// without its CRLF and is valid until the next read from src.
func readCRLFLine(src *bufio.Reader, what string) ([]byte, error) {
	line, err := src.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > maxChunkLine {
		return nil, chunkErr("%s longer than %d bytes", what, maxChunkLine)
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := len(line)
	if n < 2 || line[n-2] != '\r' {
		return nil, chunkErr("%s %q does not end in CRLF", what, clip(line))
	}
	return line[:n-2], nil
}

func copyChunked(dst *bufio.Writer, src *bufio.Reader, buf []byte, reframe bool) (int64, error) {
	var total int64
	var hex [20]byte
	for {
		line, err := readCRLFLine(src, "chunk-size line")
		if err != nil {
			return total, err
		}
		size, err := parseChunkLine(line)
		if err != nil {
			return total, err
		}
		if size == 0 {
			break
		}
		if reframe {
			h := strconv.AppendInt(hex[:0], size, 16)
			h = append(h, '\r', '\n')
			if _, err := dst.Write(h); err != nil {
				return total, writeErr(err)
			}
		}
		n, err := copyN(dst, src, size, buf)
		total += n
		if err != nil {
			return total, err
		}
		// The CRLF after the chunk data, and nothing else.
		line, err = readCRLFLine(src, "end of chunk data")
		if err != nil {
			return total, err
		}
		if len(line) != 0 {
			return total, chunkErr("%d bytes after a chunk's data, where CRLF belongs", len(line))
		}
		if reframe {
			if _, err := dst.WriteString("\r\n"); err != nil {
				return total, writeErr(err)
			}
		}
	}
	if reframe {
		if _, err := dst.WriteString("0\r\n"); err != nil {
			return total, writeErr(err)
		}
	}
	// trailer-section = *( field-line CRLF ), then CRLF.
	trailer := 0
	for {
		line, err := readCRLFLine(src, "trailer line")
		if err != nil {
			return total, err
		}
		trailer += len(line) + 2
		if trailer > maxTrailerBytes {
			return total, &ParseError{Status: 400, Rule: RuleTrailer, Detail: fmt.Sprintf("trailer section over %d bytes", maxTrailerBytes)}
		}
		if len(line) == 0 {
			break
		}
		if err := checkTrailerLine(line); err != nil {
			return total, err
		}
		if reframe {
			dst.Write(line)
			if _, err := dst.WriteString("\r\n"); err != nil {
				return total, writeErr(err)
			}
		}
	}
	if reframe {
		if _, err := dst.WriteString("\r\n"); err != nil {
			return total, writeErr(err)
		}
	}
	return total, writeErr(dst.Flush())
}

// checkTrailerLine applies the field-line grammar to a trailer field and refuses the fields
// that frame or route a message, which may not be sent in trailers (RFC 9110 6.5.1).
func checkTrailerLine(line []byte) error {
	bad := func(format string, args ...any) error {
		return &ParseError{Status: 400, Rule: RuleTrailer, Detail: fmt.Sprintf(format, args...)}
	}
	if line[0] == ' ' || line[0] == '\t' {
		return bad("folded trailer line %q", clip(line))
	}
	colon := -1
	for i, c := range line {
		if c == ':' {
			colon = i
			break
		}
	}
	if colon <= 0 || !isToken(line[:colon]) {
		return bad("trailer line %q", clip(line))
	}
	name := line[:colon]
	if !validFieldValue(line[colon+1:]) {
		return bad("trailer %s has a control character", clip(name))
	}
	for _, f := range []string{"content-length", "transfer-encoding", "host", "trailer", "connection", "keep-alive", "te", "upgrade"} {
		if equalFold(name, f) {
			return bad("%s may not be sent as a trailer", clip(name))
		}
	}
	return nil
}

// parseChunkLine parses chunk-size [ chunk-ext ] (the line without its CRLF):
//
//	chunk-size = 1*HEXDIG
//	chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//	chunk-ext-name = token; chunk-ext-val = token / quoted-string
//
// Whitespace after the size or the last extension is tolerated (BWS).
func parseChunkLine(line []byte) (int64, error) {
	var n int64
	i, digits := 0, 0
	for ; i < len(line); i++ {
		c := line[i]
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			goto ext
		}
		if digits > 0 || v != 0 {
			digits++
		}
		if digits > maxChunkDigits {
			return 0, chunkErr("chunk size %q over %d hex digits", clip(line), maxChunkDigits)
		}
		n = n<<4 | int64(v)
	}
ext:
	if i == 0 {
		return 0, chunkErr("chunk-size line %q has no size", clip(line))
	}
	rest := line[i:]
	for {
		rest = trimLeftOWS(rest)
		if len(rest) == 0 {
			return n, nil
		}
		if rest[0] != ';' {
			return 0, chunkErr("chunk-size line %q", clip(line))
		}
		rest = trimLeftOWS(rest[1:])
		j := 0
		for j < len(rest) && tokenTable[rest[j]] {
			j++
		}
		if j == 0 {
			return 0, chunkErr("chunk extension without a name in %q", clip(line))
		}
		rest = trimLeftOWS(rest[j:])
		if len(rest) == 0 || rest[0] != '=' {
			continue
		}
		rest = trimLeftOWS(rest[1:])
		if len(rest) > 0 && rest[0] == '"' {
			k, ok := quotedStringEnd(rest)
			if !ok {
				return 0, chunkErr("chunk extension value in %q", clip(line))
			}
			rest = rest[k:]
			continue
		}
		j = 0
		for j < len(rest) && tokenTable[rest[j]] {
			j++
		}
		if j == 0 {
			return 0, chunkErr("chunk extension value in %q", clip(line))
		}
		rest = rest[j:]
	}
}

// quotedStringEnd returns the length of the quoted-string at the start of b (RFC 9110 5.6.4).
func quotedStringEnd(b []byte) (int, bool) {
	for i := 1; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, true
		case c == '\\':
			i++
			if i == len(b) || b[i] < ' ' && b[i] != '\t' || b[i] == 0x7f {
				return 0, false
			}
		case c < ' ' && c != '\t' || c == 0x7f:
			return 0, false
		}
	}
	return 0, false
}

func trimLeftOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
