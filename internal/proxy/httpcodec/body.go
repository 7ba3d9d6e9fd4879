package httpcodec

import (
	"bufio"
	"errors"
	"io"
)

// maxChunkLine bounds a chunk-size line (size plus extensions) and each trailer line.
const maxChunkLine = 4096

// ErrBadChunk is a malformed chunked body.
var ErrBadChunk = errors.New("httpcodec: malformed chunked body")

// CopyBody copies one message body framed as f (n bytes for Length) from src to dst and
// returns the number of body bytes copied (payload only for chunked bodies). dst is flushed
// whenever src has nothing buffered, so a streamed body is passed on as it arrives and
// never held whole. Chunked bodies are forwarded with their framing unchanged. buf is scratch
// space for large reads.
func CopyBody(dst *bufio.Writer, src *bufio.Reader, f Framing, n int64, buf []byte) (int64, error) {
	switch f {
	case NoBody:
		return 0, nil
	case Length:
		return copyN(dst, src, n, buf)
	case Chunked:
		return copyChunked(dst, src, buf)
	case UntilClose:
		return copyAll(dst, src, buf)
	}
	return 0, errors.New("httpcodec: unknown framing")
}

// copyN copies exactly n bytes; a short source is io.ErrUnexpectedEOF.
func copyN(dst *bufio.Writer, src *bufio.Reader, n int64, buf []byte) (int64, error) {
	var done int64
	for done < n {
		if src.Buffered() == 0 && dst.Buffered() > 0 {
			if err := dst.Flush(); err != nil {
				return done, err
			}
		}
		p := buf
		if rem := n - done; int64(len(p)) > rem {
			p = p[:rem]
		}
		nr, err := src.Read(p)
		if nr > 0 {
			if _, werr := dst.Write(p[:nr]); werr != nil {
				return done, werr
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
				return done, err
			}
		}
		nr, err := src.Read(buf)
		if nr > 0 {
			if _, werr := dst.Write(buf[:nr]); werr != nil {
				return done, werr
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

// readLine reads one line (ending in LF) of at most maxChunkLine bytes and returns it with
// its line ending. The slice is valid until the next read from src.
func readLine(src *bufio.Reader) ([]byte, error) {
	line, err := src.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > maxChunkLine {
		return nil, ErrBadChunk
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return line, err
}

func copyChunked(dst *bufio.Writer, src *bufio.Reader, buf []byte) (int64, error) {
	var total int64
	for {
		line, err := readLine(src)
		if err != nil {
			return total, err
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return total, ErrBadChunk
		}
		if _, err := dst.Write(line); err != nil {
			return total, err
		}
		if size == 0 {
			break
		}
		n, err := copyN(dst, src, size, buf)
		total += n
		if err != nil {
			return total, err
		}
		// The CRLF after the chunk data.
		line, err = readLine(src)
		if err != nil {
			return total, err
		}
		if !(len(line) == 2 && line[0] == '\r' || len(line) == 1) {
			return total, ErrBadChunk
		}
		if _, err := dst.Write(line); err != nil {
			return total, err
		}
	}
	// Trailer section, ended by a blank line.
	var trailer int
	for {
		line, err := readLine(src)
		if err != nil {
			return total, err
		}
		trailer += len(line)
		if trailer > 64*maxChunkLine {
			return total, ErrBadChunk
		}
		if _, err := dst.Write(line); err != nil {
			return total, err
		}
		if len(line) == 1 || len(line) == 2 && line[0] == '\r' {
			break
		}
	}
	return total, dst.Flush()
}

// parseChunkSize parses "1a2b[;ext...]\r\n".
func parseChunkSize(line []byte) (int64, bool) {
	var n int64
	var digits int
	i := 0
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
			goto end
		}
		digits++
		if digits > 15 {
			return 0, false
		}
		n = n<<4 | int64(v)
	}
end:
	if digits == 0 {
		return 0, false
	}
	rest := line[i:]
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	switch {
	case len(rest) > 0 && rest[0] == ';':
		// Extensions: forwarded untouched; only control characters are refused.
		for _, c := range rest[:len(rest)-1] {
			if c < ' ' && c != '\t' && c != '\r' {
				return 0, false
			}
		}
		return n, true
	case string(rest) == "\r\n" || string(rest) == "\n":
		return n, true
	}
	return 0, false
}
