package proxy

import (
	"bufio"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessLog writes one JSON line per HTTP request. Lines are buffered and flushed at least
// every flushEvery (and on Close), so that logging costs no write system call per request.
type accessLog struct {
	mu      sync.Mutex
	w       *bufio.Writer
	line    []byte
	stop    chan struct{}
	stopped chan struct{}
}

const flushEvery = 100 * time.Millisecond

func newAccessLog(w io.Writer) *accessLog {
	l := &accessLog{w: bufio.NewWriterSize(w, 32<<10), stop: make(chan struct{}), stopped: make(chan struct{})}
	go l.flusher()
	return l
}

func (l *accessLog) flusher() {
	defer close(l.stopped)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.mu.Lock()
			if l.w.Buffered() > 0 {
				l.w.Flush()
			}
			l.mu.Unlock()
		case <-l.stop:
			l.mu.Lock()
			l.w.Flush()
			l.mu.Unlock()
			return
		}
	}
}

// Close flushes what is buffered and stops the flusher.
func (l *accessLog) Close() {
	close(l.stop)
	<-l.stopped
}

// entry is one access-log record (the field names are the log's contract, docs/proxy.md).
type entry struct {
	start     time.Time
	direction Direction
	dst       netip.AddrPort
	method    []byte
	authority []byte
	path      []byte
	status    int
	reqBytes  int64
	respBytes int64
	duration  time.Duration
	err       string
	// HTTP/2 streams only: the protocol and, for gRPC calls, grpc-status and grpc-message.
	proto       string
	grpcStatus  string
	grpcMessage string
}

// appendLineStart starts an access-log line with its time, direction and original destination;
// the destination's JSON string is left open, so the caller goes on with `","next":...`.
func appendLineStart(b []byte, start time.Time, d Direction, dst netip.AddrPort) []byte {
	b = append(b, `{"time":"`...)
	b = start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","direction":"`...)
	b = append(b, d.String()...)
	b = append(b, `","original_dst":"`...)
	return dst.AppendTo(b)
}

func (l *accessLog) write(e *entry) {
	l.mu.Lock()
	b := appendLineStart(l.line[:0], e.start, e.direction, e.dst)
	b = append(b, `","method":`...)
	b = appendJSONString(b, e.method)
	b = append(b, `,"authority":`...)
	b = appendJSONString(b, e.authority)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, e.path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"request_bytes":`...)
	b = strconv.AppendInt(b, e.reqBytes, 10)
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendInt(b, e.respBytes, 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(e.duration.Nanoseconds())/1e6, 'f', 3, 64)
	if e.proto != "" {
		b = append(b, `,"protocol":`...)
		b = appendJSONString(b, []byte(e.proto))
	}
	if e.grpcStatus != "" {
		b = append(b, `,"grpc_status":`...)
		b = appendJSONString(b, []byte(e.grpcStatus))
		b = append(b, `,"grpc_message":`...)
		b = appendJSONString(b, []byte(e.grpcMessage))
	}
	l.endLine(b, e.err)
}

// endLine ends the line in b (with its "error" field when err is set), buffers it, keeps b
// for the next line and releases the log, which the line's writer locked.
func (l *accessLog) endLine(b []byte, err string) {
	if err != "" {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, []byte(err))
	}
	b = append(b, "}\n"...)
	l.w.Write(b)
	l.line = b
	l.mu.Unlock()
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s []byte) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, "\ufffd"...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
